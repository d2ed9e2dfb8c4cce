#!/usr/bin/env bash
# deploy/install.sh — install or update camcast on a Raspberry Pi over SSH (or into a directory).
#
#   deploy/install.sh [OPTIONS] USER@HOST     install over ssh/scp, then enable + (re)start
#   deploy/install.sh --deb FILE USER@HOST    install the Debian package (cargo deb) over ssh
#   deploy/install.sh --root DIR [OPTIONS]    install into DIR (a test tree); no systemctl, no udevadm
#
# Options:
#   --binary FILE   the aarch64 camcast to install [default:
#                   ${CARGO_TARGET_DIR:-target}/aarch64-unknown-linux-gnu/release/camcast]
#   --deb FILE      install this camcast_*.deb with apt instead of copying files (Raspberry Pi OS,
#                   Debian): apt keeps an edited /etc/camcast/camcast.toml, the package enables and
#                   (re)starts camcast.service. Files of an earlier install by this script
#                   (without --deb) are removed first, your config kept.
#   --dry-run, -n   print every action, change nothing (with USER@HOST: contacts nothing)
#   --root DIR      install under DIR instead of over SSH
#   --port N        ssh port
#   --ssh-option O  extra `-o O` for ssh and scp (repeatable), e.g. StrictHostKeyChecking=accept-new
#   -h, --help      this text
#
# What goes where (the same on Raspberry Pi OS, Debian, and the camcast SD image):
#   /usr/bin/camcast                             the static aarch64 binary      0755
#   /etc/systemd/system/camcast.service          the hardened unit              0644
#   /etc/sysusers.d/camcast.conf                 user camcast in video, gpio    0644
#   /etc/udev/rules.d/99-camcast.rules           camera names, GPIO/LED access  0644
#   /usr/local/share/camcast/camcast.toml.default  the shipped default config   0644
#   /etc/camcast/camcast.toml                    YOUR config: written only when absent
#   /etc/systemd/system/multi-user.target.wants/camcast.service   (enabled)
#
# Idempotent: a file already identical (content and mode) is left alone, and the service is
# restarted only when something changed. The config is never overwritten: when the shipped
# default changed since the last install and yours differs from it, the new default is
# written beside yours as /etc/camcast/camcast.toml.new.
#
# Over SSH the files are copied with scp into a temporary directory on the Pi, then this same
# script runs there as root (directly for root@, else through `sudo`, which must not ask for a
# password: Raspberry Pi OS's first user has NOPASSWD sudo) to put them in place, run
# systemd-sysusers, reload udev and systemd, enable and (re)start camcast.service, and print
# its status.
set -euo pipefail
# Directories created here (e.g. /etc/camcast in an image being built) must be world-readable.
umask 022

# Under `bash -s` (the --apply run on the Pi) there is no script file: BASH_SOURCE is empty.
self=${BASH_SOURCE[0]:-}
here=$(cd "$(dirname "${self:-.}")" && pwd)
repo=$(dirname "$here")

# name-in-stage | destination | mode | policy (replace: keep in sync; config: never overwrite)
MANIFEST=(
  "camcast|/usr/bin/camcast|755|replace"
  "camcast.service|/etc/systemd/system/camcast.service|644|replace"
  "camcast.sysusers|/etc/sysusers.d/camcast.conf|644|replace"
  "99-camcast.rules|/etc/udev/rules.d/99-camcast.rules|644|replace"
  "camcast.toml|/etc/camcast/camcast.toml|644|config"
  "camcast.toml|/usr/local/share/camcast/camcast.toml.default|644|replace"
)
UNIT=camcast.service
WANTS_LINK=/etc/systemd/system/multi-user.target.wants/$UNIT
# Where earlier versions of this script put the binary.
LEGACY_BINARY=/usr/local/bin/camcast

DRY_RUN=0
ROOT=
TARGET=
BINARY=
DEB=
APPLY_STAGE=
APPLY_DEB=
SSH_OPTS=()
CHANGED=0
STAGE=

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$self"; }

# Runs a command, or only prints it under --dry-run.
act() {
  if [ "$DRY_RUN" = 1 ]; then
    say "[dry-run] would run: $*"
  else
    say "run: $*"
    "$@"
  fi
}

# Puts STAGE/NAME at ROOT/DEST with MODE, unless it is already there, identical.
install_file() {
  local src=$1 dest=$2 mode=$3 dst=$ROOT$2
  if [ -f "$dst" ] && [ ! -L "$dst" ] && cmp -s "$src" "$dst" && [ "$(stat -c %a "$dst")" = "$mode" ]; then
    say "unchanged $dest"
    return 0
  fi
  CHANGED=1
  if [ "$DRY_RUN" = 1 ]; then
    say "[dry-run] would install $dest (mode $mode$([ -e "$dst" ] && echo ', replacing the existing file'))"
    return 0
  fi
  mkdir -p "$(dirname "$dst")"
  # Copy beside the target, then rename: a running binary or a reader never sees half a file.
  cp "$src" "$dst.camcast-tmp"
  chmod "$mode" "$dst.camcast-tmp"
  mv -f "$dst.camcast-tmp" "$dst"
  say "installed $dest (mode $mode)"
}

# The config: written when absent; otherwise the user's file is kept, and a changed shipped
# default is put beside it as .new. "Changed" means: differs from the default installed last
# time (kept as camcast.toml.default), so editing your config alone never produces a .new.
install_config() {
  local src=$1 dest=$2 mode=$3 dst=$ROOT$2
  local previous=$ROOT/usr/local/share/camcast/camcast.toml.default
  if [ ! -e "$dst" ]; then
    install_file "$src" "$dest" "$mode"
    return 0
  fi
  if cmp -s "$src" "$dst"; then
    say "unchanged $dest (the shipped default)"
    [ -e "$dst.new" ] && act rm -f "$dst.new"
    return 0
  fi
  if [ -f "$previous" ] && cmp -s "$src" "$previous"; then
    say "kept $dest (edited by you; the shipped default did not change)"
    return 0
  fi
  if [ -f "$previous" ] && cmp -s "$dst" "$previous"; then
    say "updating $dest to the new default (you had not edited it)"
    install_file "$src" "$dest" "$mode"
    [ -e "$dst.new" ] && act rm -f "$dst.new"
    return 0
  fi
  if [ -f "$dst.new" ] && cmp -s "$src" "$dst.new"; then
    say "kept $dest (edited by you); the new default is already in $dest.new"
    return 0
  fi
  say "kept $dest (edited by you); the shipped default changed: see $dest.new"
  install_file "$src" "$dest.new" "$mode"
}

# Enables the unit the way `systemctl enable` does for WantedBy=multi-user.target.
enable_link() {
  local link=$ROOT$WANTS_LINK target=/etc/systemd/system/$UNIT
  if [ -L "$link" ] && [ "$(readlink "$link")" = "$target" ]; then
    say "unchanged $WANTS_LINK (enabled)"
    return 0
  fi
  CHANGED=1
  if [ "$DRY_RUN" = 1 ]; then
    say "[dry-run] would enable $UNIT: symlink $WANTS_LINK -> $target"
    return 0
  fi
  mkdir -p "$(dirname "$link")"
  ln -sfn "$target" "$link"
  say "enabled $UNIT ($WANTS_LINK -> $target)"
}

# Puts every staged file in place under $ROOT. Sets CHANGED.
apply_files() {
  local stage=$1 entry name dest mode policy
  for entry in "${MANIFEST[@]}"; do
    IFS='|' read -r name dest mode policy <<<"$entry"
    [ -f "$stage/$name" ] || die "missing staged file $stage/$name"
    case $policy in
      replace) install_file "$stage/$name" "$dest" "$mode" ;;
      config) install_config "$stage/$name" "$dest" "$mode" ;;
    esac
  done
  remove_file "$LEGACY_BINARY" "an earlier install's binary (now /usr/bin/camcast)"
}

# Removes ROOT/PATH if it exists. Sets CHANGED.
remove_file() {
  local path=$1 why=$2
  [ -e "$ROOT$path" ] || [ -L "$ROOT$path" ] || return 0
  CHANGED=1
  act rm -f "$ROOT$path"
  say "removed $path: $why"
}

# On the target host, as root: files, then users, udev, systemd.
apply_on_host() {
  local stage=$1
  [ "$(id -u)" = 0 ] || die "--apply must run as root"
  ROOT=
  apply_files "$stage"
  act systemd-sysusers /etc/sysusers.d/camcast.conf
  act udevadm control --reload
  act udevadm trigger --action=change --subsystem-match=video4linux --subsystem-match=leds --subsystem-match=gpio
  act systemctl daemon-reload
  act systemctl enable "$UNIT"
  if [ "$CHANGED" = 1 ]; then
    act systemctl restart "$UNIT"
  else
    say "nothing changed: starting $UNIT only if it is not running"
    act systemctl start "$UNIT"
  fi
  if [ "$DRY_RUN" = 0 ]; then
    sleep 2
    systemctl --no-pager --lines=10 status "$UNIT" || true
    systemctl is-active --quiet "$UNIT" || die "$UNIT is not running (journalctl -u camcast -b)"
    say "$UNIT is running"
  fi
}

# On the target host, as root: the Debian package. A file-by-file install by this script would
# shadow it (its unit in /etc/systemd/system overrides the packaged one in /usr/lib): those files
# go first; the config stays where it is and dpkg keeps it (--force-confold).
apply_deb_on_host() {
  local deb=$1 entry name dest mode policy before after
  [ "$(id -u)" = 0 ] || die "--apply-deb must run as root"
  [ -f "$deb" ] || [ "$DRY_RUN" = 1 ] || die "no package at $deb"
  ROOT=
  for entry in "${MANIFEST[@]}"; do
    IFS='|' read -r name dest mode policy <<<"$entry"
    [ "$policy" = replace ] || continue
    # The package's own files are dpkg's business.
    if [ -e "$dest" ] && ! dpkg -S "$dest" >/dev/null 2>&1; then remove_file "$dest" "left by a file-by-file install; the package replaces it"; fi
  done
  if [ -L "$WANTS_LINK" ] && [ "$(readlink "$WANTS_LINK")" = "/etc/systemd/system/$UNIT" ]; then
    remove_file "$WANTS_LINK" "pointed at the file-by-file unit; the package enables its own"
  fi
  remove_file "$LEGACY_BINARY" "an earlier install's binary"
  [ "$DRY_RUN" = 1 ] || rmdir /usr/local/share/camcast 2>/dev/null || true
  before=$(dpkg-query -W -f '${Version}' camcast 2>/dev/null || echo none)
  act env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$deb"
  [ "$DRY_RUN" = 1 ] && return 0
  after=$(dpkg-query -W -f '${Version}' camcast)
  say "package camcast: $before -> $after"
  if [ "$CHANGED" = 1 ]; then act systemctl daemon-reload; act systemctl restart "$UNIT"; fi
  sleep 2
  systemctl --no-pager --lines=10 status "$UNIT" || true
  systemctl is-active --quiet "$UNIT" || die "$UNIT is not running (journalctl -u camcast -b)"
  say "$UNIT is running"
}

# A local directory holding every file under its manifest name.
make_stage() {
  local stage=$1
  [ -n "$BINARY" ] || BINARY=${CARGO_TARGET_DIR:-$repo/target}/aarch64-unknown-linux-gnu/release/camcast
  [ -f "$BINARY" ] || die "no camcast binary at $BINARY (build it: cargo build --release --target aarch64-unknown-linux-gnu; or pass --binary FILE)"
  cp "$BINARY" "$stage/camcast"
  cp "$here/camcast.service" "$here/camcast.sysusers" "$here/99-camcast.rules" "$here/camcast.toml" "$stage/"
}

remote() {
  local stage=$1 ssh_args=("${SSH_OPTS[@]}") scp_args=("${SSH_OPTS[@]}")
  [ -n "${PORT:-}" ] && ssh_args+=(-p "$PORT") && scp_args+=(-P "$PORT")
  local sudo="sudo -n"
  [ "${TARGET%%@*}" = root ] && sudo=
  if [ -n "$DEB" ]; then
    remote_deb "$sudo"
    return
  fi
  if [ "$DRY_RUN" = 1 ]; then
    say "[dry-run] would run: ssh ${ssh_args[*]} $TARGET mktemp -d"
    say "[dry-run] would copy to $TARGET:<tmpdir>/: $(cd "$stage" && echo *)"
    say "[dry-run] would run on $TARGET as root: ${sudo:+$sudo }bash -s -- --apply <tmpdir> (this script), which:"
    local entry name dest mode policy
    for entry in "${MANIFEST[@]}"; do
      IFS='|' read -r name dest mode policy <<<"$entry"
      case $policy in
        replace) say "[dry-run]   would install $dest (mode $mode) unless identical" ;;
        config) say "[dry-run]   would install $dest only if absent (else $dest.new when the default changed)" ;;
      esac
    done
    say "[dry-run]   would run: systemd-sysusers; udevadm control --reload; udevadm trigger; systemctl daemon-reload; systemctl enable $UNIT; systemctl restart $UNIT (start only, when nothing changed)"
    say "[dry-run] would remove <tmpdir> on $TARGET"
    return 0
  fi
  local rtmp
  rtmp=$(ssh "${ssh_args[@]}" "$TARGET" 'mktemp -d /tmp/camcast-install.XXXXXX')
  [ -n "$rtmp" ] || die "could not create a temporary directory on $TARGET"
  say "copying $(cd "$stage" && echo *) to $TARGET:$rtmp/"
  scp -q "${scp_args[@]}" "$stage"/* "$TARGET:$rtmp/"
  local rc=0
  # shellcheck disable=SC2029 # $rtmp and $sudo are meant to expand here, on this side.
  ssh "${ssh_args[@]}" "$TARGET" "$sudo bash -s -- --apply '$rtmp'; rc=\$?; rm -rf '$rtmp'; exit \$rc" <"$self" || rc=$?
  [ "$rc" = 0 ] || die "installation on $TARGET failed (exit $rc)"
  say "done: camcast runs on $TARGET; watch it with: camcast-view ${TARGET#*@}:1234 --stats"
}

# Over SSH: copies the package and runs this script there with --apply-deb.
remote_deb() {
  local sudo=$1 ssh_args=("${SSH_OPTS[@]}") scp_args=("${SSH_OPTS[@]}") base
  [ -n "${PORT:-}" ] && ssh_args+=(-p "$PORT") && scp_args+=(-P "$PORT")
  base=$(basename "$DEB")
  if [ "$DRY_RUN" = 1 ]; then
    say "[dry-run] would run: ssh ${ssh_args[*]} $TARGET mktemp -d"
    say "[dry-run] would copy to $TARGET:<tmpdir>/: $base"
    say "[dry-run] would run on $TARGET as root: ${sudo:+$sudo }bash -s -- --apply-deb <tmpdir>/$base (this script), which:"
    say "[dry-run]   would remove the files of a file-by-file install (not your config)"
    say "[dry-run]   would run: apt-get install -y -o Dpkg::Options::=--force-confold <tmpdir>/$base (the package enables and (re)starts $UNIT)"
    say "[dry-run] would remove <tmpdir> on $TARGET"
    return 0
  fi
  local rtmp rc=0
  rtmp=$(ssh "${ssh_args[@]}" "$TARGET" 'mktemp -d /tmp/camcast-install.XXXXXX')
  [ -n "$rtmp" ] || die "could not create a temporary directory on $TARGET"
  say "copying $base to $TARGET:$rtmp/"
  scp -q "${scp_args[@]}" "$DEB" "$TARGET:$rtmp/$base"
  # shellcheck disable=SC2029 # $rtmp and $sudo are meant to expand here, on this side.
  ssh "${ssh_args[@]}" "$TARGET" "chmod 755 '$rtmp'; $sudo bash -s -- --apply-deb '$rtmp/$base'; rc=\$?; rm -rf '$rtmp'; exit \$rc" <"$self" || rc=$?
  [ "$rc" = 0 ] || die "installing $base on $TARGET failed (exit $rc)"
  say "done: camcast runs on $TARGET; watch it with: camcast-view ${TARGET#*@}:1234 --stats"
}

main() {
  while [ $# -gt 0 ]; do
    case $1 in
      -n | --dry-run) DRY_RUN=1 ;;
      --root) ROOT=${2:?--root needs a directory}; shift ;;
      --binary) BINARY=${2:?--binary needs a file}; shift ;;
      --deb) DEB=${2:?--deb needs a .deb file}; shift ;;
      --port) PORT=${2:?--port needs a number}; shift ;;
      --ssh-option) SSH_OPTS+=(-o "${2:?--ssh-option needs a value}"); shift ;;
      --apply) APPLY_STAGE=${2:?}; shift ;;
      --apply-deb) APPLY_DEB=${2:?}; shift ;;
      -h | --help) usage; exit 0 ;;
      -*) die "unknown option $1 (see --help)" ;;
      *) [ -z "$TARGET" ] || die "only one USER@HOST"; TARGET=$1 ;;
    esac
    shift
  done

  if [ -n "$APPLY_STAGE" ]; then
    apply_on_host "$APPLY_STAGE"
    return
  fi
  if [ -n "$APPLY_DEB" ]; then
    apply_deb_on_host "$APPLY_DEB"
    return
  fi
  if [ -n "$ROOT" ] && [ -n "$TARGET" ]; then die "give either --root DIR or USER@HOST, not both"; fi
  if [ -z "$ROOT" ] && [ -z "$TARGET" ]; then usage >&2; die "no USER@HOST and no --root DIR"; fi
  if [ -n "$DEB" ]; then
    [ -z "$ROOT" ] || die "--deb installs over SSH only (an image build installs the package itself: image/build.sh)"
    [ -z "$BINARY" ] || die "give either --deb or --binary: the package holds its binary"
    [ -f "$DEB" ] || die "no package at $DEB (build it: cargo deb --target aarch64-unknown-linux-gnu)"
    case $DEB in *.deb) ;; *) die "--deb $DEB: not a .deb file" ;; esac
    remote ""
    return
  fi

  STAGE=$(mktemp -d "${TMPDIR:-/tmp}/camcast-stage.XXXXXX")
  trap 'rm -rf "$STAGE"' EXIT
  make_stage "$STAGE"

  if [ -n "$ROOT" ]; then
    [ -d "$ROOT" ] || die "--root $ROOT is not a directory"
    ROOT=$(cd "$ROOT" && pwd)
    [ "$ROOT" != / ] || die "--root / is not allowed: install over SSH, or run with --apply on the host"
    say "installing into $ROOT$([ "$DRY_RUN" = 1 ] && echo ' (dry run)')"
    apply_files "$STAGE"
    enable_link
    say "not run under --root: systemd-sysusers, udevadm, systemctl (they take effect at the next boot of that root)"
    if [ "$CHANGED" = 1 ]; then say "result: changed"; else say "result: nothing to do"; fi
  else
    remote "$STAGE"
  fi
}

main "$@"
