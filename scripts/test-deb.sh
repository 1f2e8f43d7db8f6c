#!/usr/bin/env bash
# Tests the Debian package on this machine (as root): builds it around the already-built debug
# binary (scripts/build-deb.sh --binary; a release build would add minutes and test nothing more
# of the packaging), installs it with dpkg, then checks what a user gets: `pitr --version` from
# /usr/bin, every man page (`man -w`), bash completion, the conffile, and `systemd-analyze verify`
# on an instance of every unit. Purges the package at the end, whatever happened.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "test-deb: run as root (it installs the package)" >&2; exit 1; }
if dpkg -s pitr >/dev/null 2>&1; then
  echo "test-deb: a pitr package is already installed; not touching it" >&2
  exit 1
fi
cargo build --locked -q -p pitr
deb=$(scripts/build-deb.sh --binary target/debug/pitr --out target/deb | tail -n 1)

failures=0
check() { # check DESCRIPTION COMMAND...
  local what=$1; shift
  if "$@" >/tmp/pitr-test-deb.out 2>&1; then
    echo "ok      $what"
  else
    echo "FAILED  $what:"; sed 's/^/        /' /tmp/pitr-test-deb.out; failures=$((failures + 1))
  fi
}

trap 'dpkg --purge pitr >/dev/null 2>&1 || true' EXIT
check "dpkg -i $deb" dpkg -i "$deb"
want_version="pitr $(target/debug/pitr --version | awk '{print $2}')"
check "/usr/bin/pitr --version says $want_version" sh -c "[ \"\$(/usr/bin/pitr --version)\" = '$want_version' ]"
check "man -w pitr" man -w pitr
for cmd in $(/usr/bin/pitr --help | awk '/^Commands:/{on=1; next} on && /^  [a-z]/{print $1} on && /^$/{exit}'); do
  [ "$cmd" = help ] && continue
  check "man -w pitr-$cmd" man -w "pitr-$cmd"
done
check "man page renders" sh -c 'man -P cat pitr-restore 2>/dev/null | grep -q -- "--target-time"'
check "bash completion completes subcommands" bash -c \
  'source /usr/share/bash-completion/completions/pitr && COMP_WORDS=(pitr res) COMP_CWORD=1 &&
   _pitr pitr res pitr && [[ " ${COMPREPLY[*]} " == *" restore "* ]]'
check "/etc/pitr/pitr.toml is a conffile" sh -c 'dpkg-query -W -f="\${Conffiles}" pitr | grep -q /etc/pitr/pitr.toml'
check "the example config is accepted" sh -c \
  'out=$(/usr/bin/pitr --config /etc/pitr/pitr.toml info 2>&1); echo "$out"; ! echo "$out" | grep -q "config file"'
# Instances of the template units, in a scratch unit directory (verify needs a concrete name).
units=$(mktemp -d)
for u in /lib/systemd/system/pitr-*@.*; do
  base=$(basename "$u"); ln -s "$u" "$units/${base/@./@pitr.}"
done
# Any line it prints (a setting it ignores, a missing executable) is a failure, not only its status.
check "systemd-analyze verify (units: $(ls "$units" | tr '\n' ' '))" \
  sh -c "cd '$units' && out=\$(systemd-analyze verify --man=no \$(ls) 2>&1) && [ -z \"\$out\" ] || { echo \"\$out\"; exit 1; }"
rm -rf "$units"
check "dpkg --purge removes the binary and the conffile" sh -c \
  'dpkg --purge pitr >/dev/null && [ ! -e /usr/bin/pitr ] && [ ! -e /etc/pitr/pitr.toml ]'

[ $failures = 0 ] || { echo "test-deb: $failures check(s) failed" >&2; exit 1; }
echo "test-deb: the package installs, documents itself, completes, and its units verify"
