# Shared helpers for .ci scripts. Source it; do not run it.
# as_root and apt_install live in scripts/lib.sh, shared with the developer scripts.
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"

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

# Builds benches/vm_compare and the camcast binary with one `cargo bench --no-run` (a bench
# target gets the package's binaries built with its profile, which inherits release) and sets
# $bench and $camcast_bin to them. The caller's environment picks the target directory and
# profile settings. Used by .ci/vm-bench and benches/vm_profile.sh.
build_vm_compare() {
  local artifacts
  artifacts=$(cargo bench --no-run --bench vm_compare --message-format=json |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("vm_compare", "camcast"):
        print(m["target"]["name"], m["executable"])')
  bench=$(awk '$1 == "vm_compare" {print $2}' <<<"$artifacts")
  camcast_bin=$(awk '$1 == "camcast" {print $2}' <<<"$artifacts")
  [ -x "$bench" ] || { echo "could not build the vm_compare bench"; return 1; }
  [ -x "$camcast_bin" ] || { echo "could not build the camcast binary"; return 1; }
}
