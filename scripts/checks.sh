# A tally of named checks for the shell test scripts (deploy, package, image and layer
# checks). Source it; do not run it.
#
#   check "what it proves" COMMAND...   # runs COMMAND: "ok    what" or "FAIL  what"
#   ok "what" / bad "what"              # record an outcome decided elsewhere
#   not COMMAND...                      # succeeds when COMMAND fails (for check)
#   checks_summary NAME                 # "NAME: P passed, F failed"; status 0 only if F = 0
pass=0
fail=0
ok() { pass=$((pass + 1)); printf 'ok    %s\n' "$*"; }
bad() { fail=$((fail + 1)); printf 'FAIL  %s\n' "$*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
not() { ! "$@"; }
checks_summary() {
  echo
  echo "$1: $pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}
