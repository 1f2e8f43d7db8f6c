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
# synchronous archiving), owned by postgres; extra "key=value" lines go into [global] (one
# that sets repo1-path replaces WORK/repo-pgbackrest).
write_pgbackrest_conf() {
  local conf=$1 work=$2 stanza=$3 pgdata=$4 port=$5 sock=$6; shift 6
  mkdir -p "$work/pgbackrest/log" "$work/pgbackrest/lock" "$work/pgbackrest/spool"
  {
    printf '[global]\ncompress-type=zst\narchive-async=n\n'
    case " $* " in *' repo1-path='*) ;; *) printf 'repo1-path=%s/repo-pgbackrest\n' "$work" ;; esac
    printf '%s\n' "$@"
    printf 'log-path=%s/pgbackrest/log\nlock-path=%s/pgbackrest/lock\nspool-path=%s/pgbackrest/spool\n' "$work" "$work" "$work"
    printf 'log-level-console=warn\nlog-level-stderr=warn\nlog-level-file=off\n\n'
    printf '[%s]\npg1-path=%s\npg1-port=%s\npg1-socket-path=%s\n' "$stanza" "$pgdata" "$port" "$sock"
  } >"$conf"
  chown -R postgres: "$conf" "$work/pgbackrest"
}

# start_seaweedfs DIR [PORT_BASE]: a SeaweedFS server (`weed mini`, as pitr_testkit::seaweed
# starts it) with its data under DIR, one bucket and one access key, its S3 API on plain http and
# on https with a certificate signed by a private CA made here with openssl (pgBackRest 2.45
# reaches S3 only over TLS). Ports PORT_BASE..PORT_BASE+10 (default $BENCH_S3_PORT or 28300).
# Sets SW_BUCKET SW_KEY SW_SECRET SW_HTTP (http://127.0.0.1:P) SW_HTTPS_PORT SW_HTTPS SW_CA
# (the CA's PEM) SW_MASTER (host:port, for weed shell) and SW_PID; stop it with stop_seaweedfs.
start_seaweedfs() {
  local dir=$1 base=${2:-${BENCH_S3_PORT:-28300}}
  local weed=${PITR_SEAWEEDFS_BIN:-${PITR_SEAWEEDFS_ROOT:-/opt/pitr-seaweedfs}/bin/weed}
  [ -x "$weed" ] || die "no SeaweedFS at $weed (run scripts/install-test-deps.sh seaweedfs)"
  mkdir -p "$dir/tls" "$dir/data"
  (
    cd "$dir/tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=pitr bench CA' -keyout ca.key -out ca.pem
    openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout key.pem -out server.csr
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out cert.pem
  ) >/dev/null 2>&1 || die "openssl could not make the test certificate in $dir/tls"
  chmod 644 "$dir/tls/ca.pem"
  SW_BUCKET=pitr-bench
  SW_KEY=PITRBENCH$RANDOM$RANDOM
  SW_SECRET=secret-$RANDOM$RANDOM$RANDOM
  SW_HTTP=http://127.0.0.1:$base
  SW_HTTPS_PORT=$((base + 1))
  SW_HTTPS=https://127.0.0.1:$SW_HTTPS_PORT
  SW_CA=$dir/tls/ca.pem
  SW_MASTER=127.0.0.1:$((base + 2))
  AWS_ACCESS_KEY_ID=$SW_KEY AWS_SECRET_ACCESS_KEY=$SW_SECRET S3_BUCKET=$SW_BUCKET \
    "$weed" mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -s3.port=$base -s3.port.https=$SW_HTTPS_PORT -master.port=$((base + 2)) \
    -volume.port=$((base + 3)) -filer.port=$((base + 4)) -admin.port=$((base + 5)) \
    -master.port.grpc=$((base + 2 + 10000)) -volume.port.grpc=$((base + 3 + 10000)) \
    -filer.port.grpc=$((base + 4 + 10000)) -s3.port.grpc=$((base + 6)) -admin.port.grpc=$((base + 7)) \
    -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false \
    -master.telemetry.url=http://127.0.0.1:9/ -master.volumeSizeLimitMB=256 -s3.autoCreateBucket=false \
    -s3.cert.file="$dir/tls/cert.pem" -s3.key.file="$dir/tls/key.pem" \
    </dev/null >"$dir/weed.log" 2>&1 &
  SW_PID=$!
  local i
  for i in $(seq 600); do
    grep -q 'All enabled components are running' "$dir/weed.log" 2>/dev/null && break
    kill -0 "$SW_PID" 2>/dev/null || { tail -20 "$dir/weed.log" >&2; die "SeaweedFS did not start"; }
    sleep 0.1
  done
  # Running is not writable yet: the bucket's first volume grows on the first write.
  for i in $(seq 300); do
    curl -sf -X PUT --data-binary probe "http://127.0.0.1:$((base + 4))/buckets/$SW_BUCKET/.probe" >/dev/null 2>&1 &&
      curl -sf -X DELETE "http://127.0.0.1:$((base + 4))/buckets/$SW_BUCKET/.probe" >/dev/null 2>&1 && break
    sleep 0.2
  done
  [ "$i" -lt 300 ] || { tail -20 "$dir/weed.log" >&2; die "SeaweedFS bucket not writable"; }
  log "SeaweedFS: $SW_HTTP and $SW_HTTPS, bucket $SW_BUCKET"
}

stop_seaweedfs() {
  [ -n "${SW_PID:-}" ] || return 0
  kill -TERM "$SW_PID" 2>/dev/null && wait "$SW_PID" 2>/dev/null
  SW_PID=
}

# s3_prefix_bytes PREFIX: total bytes of the objects under s3://$SW_BUCKET/PREFIX (filer's view).
s3_prefix_bytes() {
  local weed=${PITR_SEAWEEDFS_BIN:-${PITR_SEAWEEDFS_ROOT:-/opt/pitr-seaweedfs}/bin/weed}
  echo "fs.du /buckets/$SW_BUCKET/$1" | "$weed" shell -master="$SW_MASTER" 2>/dev/null |
    sed -n 's/.*logical size: *\([0-9]*\).*/\1/p' | tail -1
}

# ensure_pitr_bin REPO_ROOT: sets PITR_BIN to the release binary, building it unless PITR_BIN is
# already given.
ensure_pitr_bin() {
  [ -n "${PITR_BIN:-}" ] && return 0
  local target=${CARGO_TARGET_DIR:-$1/target}
  log "cargo build --release -p pitr (target directory $target)"
  (cd "$1" && CARGO_TARGET_DIR=$target cargo build --release -q -p pitr) || die "cargo build failed"
  PITR_BIN=$target/release/pitr
}
