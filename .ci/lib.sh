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
