# Shell functions shared by the bench/ scripts (sourced, not run).

log() { printf 'bench: %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

# ensure_pgbackrest: installs pgBackRest with apt when missing; sets PGBR_VERSION.
ensure_pgbackrest() {
  if ! command -v pgbackrest >/dev/null 2>&1; then
    log "installing pgbackrest (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq pgbackrest >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq pgbackrest >/dev/null; }
  fi
  PGBR_VERSION=$(pgbackrest version | awk '{print $2}')
}

# write_pgbackrest_conf CONF WORK STANZA PGDATA PORT SOCK [GLOBAL_OPTION...]: a pgBackRest
# configuration with its repository, logs, lock and spool under WORK (zst compression,
# synchronous archiving), owned by postgres; extra "key=value" lines go into [global].
write_pgbackrest_conf() {
  local conf=$1 work=$2 stanza=$3 pgdata=$4 port=$5 sock=$6; shift 6
  mkdir -p "$work/pgbackrest/log" "$work/pgbackrest/lock" "$work/pgbackrest/spool"
  {
    printf '[global]\nrepo1-path=%s/repo-pgbackrest\ncompress-type=zst\narchive-async=n\n' "$work"
    printf '%s\n' "$@"
    printf 'log-path=%s/pgbackrest/log\nlock-path=%s/pgbackrest/lock\nspool-path=%s/pgbackrest/spool\n' "$work" "$work" "$work"
    printf 'log-level-console=warn\nlog-level-stderr=warn\nlog-level-file=off\n\n'
    printf '[%s]\npg1-path=%s\npg1-port=%s\npg1-socket-path=%s\n' "$stanza" "$pgdata" "$port" "$sock"
  } >"$conf"
  chown -R postgres: "$conf" "$work/pgbackrest"
}
