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

# The one aarch64 release build that CI ships: `cross build --release --target
# aarch64-unknown-linux-gnu` (.ci/cross-build) in its own target directory, so that cross's
# container build and host cargo builds do not keep invalidating each other's artefacts.
# .ci/cross-check tests these binaries, .ci/deb packages camcast, the SD image installs that package.
cross_target_dir() {
  local t=${CARGO_TARGET_DIR:-target}
  case $t in /*) ;; *) t=$(pwd)/$t ;; esac
  echo "${CAMCAST_CROSS_TARGET_DIR:-$t/cross}"
}
cross_release_dir() { echo "$(cross_target_dir)/aarch64-unknown-linux-gnu/release"; }

# Where .ci/deb puts the arm64 packages (beside cross's build, as cargo deb does).
deb_dir() { echo "$(cross_target_dir)/debian"; }
