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
