# Shared helpers for .ci scripts. Source it; do not run it.

# Runs "$@" as a named stage and prints its duration; stops the script on failure.
stage() {
  local name=$1
  shift
  local t0=$SECONDS
  echo
  echo "=== stage: $name"
  if "$@"; then
    echo "=== stage: $name OK in $((SECONDS - t0)) s"
  else
    local rc=$?
    echo "=== stage: $name FAILED (exit $rc) after $((SECONDS - t0)) s"
    exit "$rc"
  fi
}

# Runs a command as root: directly when we are root (CI), else through sudo.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs the Debian packages named, skipping those already installed.
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing Debian packages: ${missing[*]}"
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages' -mmin -1440 2>/dev/null | head -n1)" ]; then
    as_root apt-get -o DPkg::Lock::Timeout=600 update -qq
  fi
  # Waits for another apt (a parallel job) rather than failing on its lock.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"
}

# The words camcast's panic hook starts each panic's log line with (src/panics.rs, LOG_MARK;
# tests/panics.rs checks the two agree).
PANIC_MARK='PANIC (a bug in camcast)'

# A panic in the server is a bug even when the server goes on serving. Fails (printing the
# panic) if any of the camcast logs given holds one: the hook's mark, or Rust's default
# "panicked at" for a panic before the hook is installed. A missing log fails too: a stage
# that lost its server's output has checked nothing.
no_panics_in() {
  local f found=0
  for f in "$@"; do
    if [ ! -f "$f" ]; then
      echo "no_panics_in: no server log at $f"
      found=1
    elif grep -F -e "$PANIC_MARK" -e "panicked at" "$f" >/dev/null; then
      echo "the camcast server panicked (a bug); from $f:"
      grep -F -A8 -e "$PANIC_MARK" -e "panicked at" "$f" | head -n 40
      found=1
    fi
  done
  return "$found"
}

# Ends a script whose remaining steps cannot run here, saying why. Under CI=true that is a
# failure (exit 1): CI must not pass on what it did not check. Elsewhere, exit 0.
skip_rest() {
  echo "SKIPPED: $*"
  if [ "${CI:-}" = true ]; then
    echo "CI=true: a skipped step fails the stage"
    exit 1
  fi
  exit 0
}
