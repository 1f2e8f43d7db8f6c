//! Opening a physical replication connection: transport (Unix socket, TCP, TLS), startup with
//! `replication=true`, authentication (password, MD5, SCRAM-SHA-256), the server's version.

use bytes::{Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{
    ChannelBinding, ScramSha256, SCRAM_SHA_256, SCRAM_SHA_256_PLUS,
};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::version::{features_for, ReplFeatures};
use super::wire::{self, AuthRequest, Backend};
use crate::error::Endpoints;
use crate::params::{pgpass_lookup, read_pgpass, ConnEnv, ConnParams, Pgpass, ResolvedConn};
use crate::tls::{client_config, server_name, tls_server_end_point, SslMode};
use crate::{Endpoint, Host, ProtoError, ServerMessage};

/// The database name `.pgpass` lines are matched against for replication connections, as
/// `pg_basebackup` and `pg_receivewal` do (they connect with `dbname=replication`).
pub const PGPASS_REPLICATION_DBNAME: &str = "replication";

/// How the server authenticated us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// No password asked (`trust`, `peer`, ...).
    None,
    /// Cleartext password.
    Password,
    /// MD5.
    Md5,
    /// SCRAM-SHA-256 without channel binding.
    ScramSha256,
    /// SCRAM-SHA-256-PLUS: bound to the TLS server certificate (`tls-server-end-point`), so a
    /// man in the middle cannot relay the exchange even when the certificate is not checked.
    ScramSha256Plus,
}

/// Anything a connection can run over.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A physical replication connection (`replication=true`) to a server 14–18.
///
/// Commands are methods (see [`ReplConnection::identify_system`] and the `START_REPLICATION`
/// and `BASE_BACKUP` streams); one runs at a time, which the borrow of a stream enforces.
pub struct ReplConnection {
    io: Box<dyn Io>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    endpoint: Endpoint,
    user: String,
    tls: bool,
    auth: AuthMethod,
    version_num: u32,
    features: &'static ReplFeatures,
    /// Set while a COPY is in progress; a stream dropped before its end leaves it set, and the
    /// connection cannot run commands any more.
    pub(crate) in_copy: bool,
}

impl std::fmt::Debug for ReplConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplConnection")
            .field("endpoint", &self.endpoint)
            .field("user", &self.user)
            .field("tls", &self.tls)
            .field("auth", &self.auth)
            .field("version_num", &self.version_num)
            .finish_non_exhaustive()
    }
}

/// Connects for physical replication with `params`, the process's `PG*` environment and the
/// password file.
pub async fn connect_replication(params: &ConnParams) -> Result<ReplConnection, ProtoError> {
    connect_replication_with_env(params, &ConnEnv::from_process()).await
}

/// Connects for physical replication with `params` resolved against `env`.
pub async fn connect_replication_with_env(
    params: &ConnParams,
    env: &ConnEnv,
) -> Result<ReplConnection, ProtoError> {
    connect_replication_resolved(&params.resolve(env)?).await
}

/// What one attempt's failure means for the next endpoint.
enum Failure {
    /// Nothing listens there: try the next endpoint.
    Unreachable(String),
    /// The server answered: stop and report.
    Fatal(ProtoError),
}

/// The password file's contents when no password was given (a file libpq would ignore is
/// ignored with a warning).
pub(crate) fn pgpass_contents(r: &ResolvedConn) -> Option<String> {
    match (&r.password, &r.passfile) {
        (None, Some(path)) => match read_pgpass(path) {
            Pgpass::Contents(s) => Some(s),
            Pgpass::Ignored(why) => {
                tracing::warn!("{why}");
                None
            }
            Pgpass::Missing => None,
        },
        _ => None,
    }
}

/// Connects to the first endpoint of `r` that accepts connections. The password comes from
/// `r`, else from the password file's lines for database `replication`.
pub async fn connect_replication_resolved(r: &ResolvedConn) -> Result<ReplConnection, ProtoError> {
    let pgpass = pgpass_contents(r);
    let mut last = String::from("no address to try");
    for endpoint in &r.endpoints {
        let password = r.password.clone().or_else(|| {
            pgpass
                .as_deref()
                .and_then(|c| pgpass_lookup(c, endpoint, PGPASS_REPLICATION_DBNAME, &r.user))
        });
        tracing::debug!(%endpoint, user = %r.user, "connecting for replication");
        let first_tls = !matches!(r.tls.mode, SslMode::Disable | SslMode::Allow);
        let mut result = attempt(r, endpoint, password.as_deref(), first_tls).await;
        // sslmode=allow: a server that refuses the plain connection is tried with TLS.
        if r.tls.mode == SslMode::Allow && matches!(endpoint.host, Host::Tcp(_)) {
            if let Err(Failure::Fatal(ProtoError::AuthFailed { server, .. })) = &result {
                if server.code == "28000" {
                    result = attempt(r, endpoint, password.as_deref(), true).await;
                }
            }
        }
        match result {
            Ok(conn) => return Ok(conn),
            Err(Failure::Unreachable(detail)) => {
                tracing::debug!(%endpoint, "unreachable: {detail}");
                last = detail;
            }
            Err(Failure::Fatal(e)) => return Err(e),
        }
    }
    Err(ProtoError::Unreachable {
        targets: Endpoints(r.endpoints.clone()),
        detail: last,
    })
}

async fn attempt(
    r: &ResolvedConn,
    endpoint: &Endpoint,
    password: Option<&str>,
    tls: bool,
) -> Result<ReplConnection, Failure> {
    let fut = ReplConnection::open(r, endpoint, password, tls);
    match r.connect_timeout {
        Some(t) => match tokio::time::timeout(t, fut).await {
            Ok(res) => res,
            Err(_) => Err(Failure::Unreachable(format!(
                "timed out after {} s",
                t.as_secs()
            ))),
        },
        None => fut.await,
    }
}

/// Maps a server error during startup, as the SQL client does.
fn startup_error(server: Box<ServerMessage>, endpoint: &Endpoint, r: &ResolvedConn) -> ProtoError {
    match server.code.as_str() {
        // invalid_password, invalid_authorization_specification (no pg_hba entry, no role)
        "28P01" | "28000" => ProtoError::AuthFailed {
            endpoint: endpoint.clone(),
            user: r.user.clone(),
            server,
        },
        _ => ProtoError::Refused {
            endpoint: endpoint.clone(),
            server,
        },
    }
}

impl ReplConnection {
    async fn open(
        r: &ResolvedConn,
        endpoint: &Endpoint,
        password: Option<&str>,
        want_tls: bool,
    ) -> Result<ReplConnection, Failure> {
        let unreachable = |e: std::io::Error| Failure::Unreachable(e.to_string());
        let (io, tls, binding): (Box<dyn Io>, bool, Option<Vec<u8>>) = match &endpoint.host {
            Host::Socket(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", endpoint.port));
                (
                    Box::new(UnixStream::connect(path).await.map_err(unreachable)?),
                    false,
                    None,
                )
            }
            Host::Tcp(host) => {
                let tcp = TcpStream::connect((host.as_str(), endpoint.port))
                    .await
                    .map_err(unreachable)?;
                // Status updates are small and latency matters for synchronous replication.
                let _ = tcp.set_nodelay(true);
                if want_tls {
                    negotiate_tls(tcp, host, r, endpoint).await?
                } else {
                    (Box::new(tcp), false, None)
                }
            }
        };
        let mut conn = ReplConnection {
            io,
            rbuf: BytesMut::with_capacity(64 * 1024),
            wbuf: BytesMut::with_capacity(1024),
            endpoint: endpoint.clone(),
            user: r.user.clone(),
            tls,
            auth: AuthMethod::None,
            version_num: 0,
            features: &super::version::REPL_FEATURES[0],
            in_copy: false,
        };
        conn.startup(r, password, binding).await?;
        conn.read_version().await.map_err(Failure::Fatal)?;
        tracing::debug!(endpoint = %conn.endpoint, version = conn.version_num, tls, "replication connection open");
        Ok(conn)
    }

    /// Startup and authentication; `binding` is the TLS channel binding data, if any.
    async fn startup(
        &mut self,
        r: &ResolvedConn,
        password: Option<&str>,
        binding: Option<Vec<u8>>,
    ) -> Result<(), Failure> {
        let fatal = Failure::Fatal;
        let params = [
            ("user", r.user.as_str()),
            ("database", r.dbname.as_str()),
            ("application_name", r.application_name.as_str()),
            ("replication", "true"),
        ];
        frontend::startup_message(params, &mut self.wbuf)
            .map_err(|e| fatal(self.connection_error("startup", &e)))?;
        self.flush().await.map_err(fatal)?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            let request = match self.recv("authentication").await.map_err(fatal)? {
                Backend::Auth(a) => a,
                Backend::Error(server) => {
                    return Err(fatal(startup_error(server, &self.endpoint, r)))
                }
                Backend::NegotiateProtocolVersion => continue,
                other => return Err(fatal(self.unexpected("authentication", &other))),
            };
            let need_password = || {
                password.ok_or_else(|| {
                    fatal(ProtoError::PasswordRequired {
                        endpoint: self.endpoint.clone(),
                        user: r.user.clone(),
                    })
                })
            };
            let written = match request {
                AuthRequest::Ok => break,
                AuthRequest::Cleartext => {
                    self.auth = AuthMethod::Password;
                    frontend::password_message(need_password()?.as_bytes(), &mut self.wbuf)
                }
                AuthRequest::Md5(salt) => {
                    self.auth = AuthMethod::Md5;
                    let hash = md5_hash(r.user.as_bytes(), need_password()?.as_bytes(), salt);
                    frontend::password_message(hash.as_bytes(), &mut self.wbuf)
                }
                AuthRequest::Sasl(mechanisms) => {
                    let s = self
                        .scram_start(&mechanisms, need_password()?, binding.as_deref())
                        .map_err(fatal)?;
                    let mechanism = match self.auth {
                        AuthMethod::ScramSha256Plus => SCRAM_SHA_256_PLUS,
                        _ => SCRAM_SHA_256,
                    };
                    let w = frontend::sasl_initial_response(mechanism, s.message(), &mut self.wbuf);
                    scram = Some(s);
                    w
                }
                AuthRequest::SaslContinue(data) => {
                    let s = scram.as_mut().ok_or_else(|| {
                        fatal(self.protocol("authentication", "SASL continue before SASL start"))
                    })?;
                    s.update(&data).map_err(|e| {
                        fatal(self.protocol("SCRAM authentication", &e.to_string()))
                    })?;
                    frontend::sasl_response(s.message(), &mut self.wbuf)
                }
                AuthRequest::SaslFinal(data) => {
                    let s = scram.as_mut().ok_or_else(|| {
                        fatal(self.protocol("authentication", "SASL final before SASL start"))
                    })?;
                    // Checks the server's signature: it proves the server knows the password.
                    s.finish(&data).map_err(|e| {
                        fatal(self.protocol("SCRAM authentication", &e.to_string()))
                    })?;
                    continue;
                }
                AuthRequest::Unsupported(code) => {
                    let method = match code {
                        2 => "Kerberos V5".to_string(),
                        6 => "SCM credential".into(),
                        7 | 8 => "GSSAPI".into(),
                        9 => "SSPI".into(),
                        c => format!("method {c}"),
                    };
                    return Err(fatal(ProtoError::AuthMethod {
                        endpoint: self.endpoint.clone(),
                        method,
                    }));
                }
            };
            written.map_err(|e| fatal(self.connection_error("authentication", &e)))?;
            self.flush().await.map_err(fatal)?;
        }
        loop {
            match self.recv("startup").await.map_err(fatal)? {
                Backend::ReadyForQuery => return Ok(()),
                Backend::KeyData => {}
                Backend::Error(server) => {
                    return Err(fatal(startup_error(server, &self.endpoint, r)))
                }
                other => return Err(fatal(self.unexpected("startup", &other))),
            }
        }
    }

    /// Picks the SCRAM mechanism: with channel binding when the server offers it over TLS
    /// (libpq's default, channel_binding=prefer), otherwise "n" (the client does not bind).
    fn scram_start(
        &mut self,
        mechanisms: &[String],
        password: &str,
        binding: Option<&[u8]>,
    ) -> Result<ScramSha256, ProtoError> {
        if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
            return Err(ProtoError::AuthMethod {
                endpoint: self.endpoint.clone(),
                method: format!("SASL ({})", mechanisms.join(", ")),
            });
        }
        let plus = mechanisms.iter().any(|m| m == SCRAM_SHA_256_PLUS);
        let cb = match (binding, plus) {
            (Some(data), true) => {
                self.auth = AuthMethod::ScramSha256Plus;
                ChannelBinding::tls_server_end_point(data.to_vec())
            }
            _ => {
                self.auth = AuthMethod::ScramSha256;
                ChannelBinding::unsupported()
            }
        };
        Ok(ScramSha256::new(password.as_bytes(), cb))
    }

    /// `SHOW name` (walsenders accept `SHOW` since 10), e.g. `wal_segment_size` (`16MB`).
    pub async fn show(&mut self, name: &str) -> Result<String, ProtoError> {
        let what = "SHOW";
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(self.protocol(what, &format!("invalid setting name {name:?}")));
        }
        let rows = self.simple_query(what, &format!("SHOW {name}")).await?;
        self.req_text(self.one_row(&rows, what)?, 0, what)
    }

    /// `SHOW server_version_num` (walsenders accept `SHOW` since 10) and the table row.
    async fn read_version(&mut self) -> Result<(), ProtoError> {
        let rows = self
            .simple_query("SHOW server_version_num", "SHOW server_version_num")
            .await?;
        let what = "SHOW server_version_num";
        let value = self.req_text(self.one_row(&rows, what)?, 0, what)?;
        let unsupported = || ProtoError::UnsupportedServer {
            endpoint: self.endpoint.clone(),
            version: value.clone(),
        };
        let num: u32 = value.trim().parse().map_err(|_| unsupported())?;
        self.features = features_for(num).ok_or_else(unsupported)?;
        self.version_num = num;
        Ok(())
    }

    /// The server this connection talks to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The database user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether the connection is encrypted (TLS).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// How the server authenticated this connection.
    pub fn auth_method(&self) -> AuthMethod {
        self.auth
    }

    /// `server_version_num`, e.g. 170010.
    pub fn version_num(&self) -> u32 {
        self.version_num
    }

    /// The replication-protocol facts of the server's major version.
    pub fn features(&self) -> &'static ReplFeatures {
        self.features
    }

    /// Ends the session politely (`Terminate`), so the server logs no lost connection.
    pub async fn close(mut self) -> Result<(), ProtoError> {
        frontend::terminate(&mut self.wbuf);
        self.flush().await?;
        let _ = self.io.shutdown().await;
        Ok(())
    }

    /// Sends what is buffered.
    pub(crate) async fn flush(&mut self) -> Result<(), ProtoError> {
        let res = async {
            self.io.write_all(&self.wbuf).await?;
            self.io.flush().await
        }
        .await;
        self.wbuf.clear();
        res.map_err(|e| self.connection_error("send", &e))
    }

    /// The write buffer, for frontend messages to be sent with [`ReplConnection::flush`].
    pub(crate) fn wbuf(&mut self) -> &mut BytesMut {
        &mut self.wbuf
    }

    /// The next message that matters (notices are logged, parameter changes ignored).
    /// Cancel-safe: a partial message stays in the read buffer.
    pub(crate) async fn recv(&mut self, what: &'static str) -> Result<Backend, ProtoError> {
        loop {
            match wire::next_message(&mut self.rbuf) {
                Err(detail) => return Err(self.protocol(what, &detail)),
                Ok(Some(Backend::Notice(n))) => {
                    tracing::info!(endpoint = %self.endpoint, "server notice: {n}");
                }
                Ok(Some(Backend::ParameterStatus)) => {}
                Ok(Some(m)) => return Ok(m),
                Ok(None) => {
                    if self.rbuf.capacity() - self.rbuf.len() < 16 * 1024 {
                        self.rbuf.reserve(64 * 1024);
                    }
                    let n = self
                        .io
                        .read_buf(&mut self.rbuf)
                        .await
                        .map_err(|e| self.connection_error(what, &e))?;
                    if n == 0 {
                        return Err(ProtoError::Connection {
                            endpoint: self.endpoint.clone(),
                            what,
                            detail: "the server closed the connection".into(),
                        });
                    }
                }
            }
        }
    }

    /// Runs a command that answers with zero or more result sets, then `ReadyForQuery`.
    pub(crate) async fn simple_query(
        &mut self,
        what: &'static str,
        sql: &str,
    ) -> Result<ResultSets, ProtoError> {
        self.send_query(what, sql).await?;
        self.read_results(what).await
    }

    /// Sends one command (`Query` message).
    pub(crate) async fn send_query(
        &mut self,
        what: &'static str,
        sql: &str,
    ) -> Result<(), ProtoError> {
        if self.in_copy {
            return Err(ProtoError::Protocol {
                endpoint: self.endpoint.clone(),
                what,
                detail: "the connection is still inside an unfinished stream; hint: finish or stop the stream, or open a new connection".into(),
            });
        }
        tracing::debug!(endpoint = %self.endpoint, "replication command: {sql}");
        frontend::query(sql, &mut self.wbuf).map_err(|e| self.connection_error(what, &e))?;
        self.flush().await
    }

    /// Reads result sets up to `ReadyForQuery`; a server error is returned after it.
    pub(crate) async fn read_results(
        &mut self,
        what: &'static str,
    ) -> Result<ResultSets, ProtoError> {
        self.read_results_into(what, ResultSets::default()).await
    }

    /// [`ReplConnection::read_results`] after `sets` were already read.
    pub(crate) async fn read_results_into(
        &mut self,
        what: &'static str,
        mut sets: ResultSets,
    ) -> Result<ResultSets, ProtoError> {
        let mut error = None;
        loop {
            match self.recv(what).await? {
                Backend::RowDescription => sets.push_set(),
                Backend::DataRow(row) => match sets.0.last_mut() {
                    Some(set) => set.rows.push(row),
                    None => return Err(self.protocol(what, "a row without a row description")),
                },
                Backend::CommandComplete(_) | Backend::EmptyQuery => {}
                Backend::Error(server) => error = Some(server),
                Backend::ReadyForQuery => break,
                other => return Err(self.unexpected(what, &other)),
            }
        }
        match error {
            Some(server) => Err(ProtoError::Query {
                endpoint: self.endpoint.clone(),
                what,
                server,
            }),
            None => Ok(sets),
        }
    }

    pub(crate) fn protocol(&self, what: &'static str, detail: &str) -> ProtoError {
        ProtoError::Protocol {
            endpoint: self.endpoint.clone(),
            what,
            detail: detail.to_string(),
        }
    }

    pub(crate) fn unexpected(&self, what: &'static str, got: &Backend) -> ProtoError {
        self.protocol(what, &format!("unexpected message {}", describe(got)))
    }

    pub(crate) fn connection_error(
        &self,
        what: &'static str,
        e: &dyn std::fmt::Display,
    ) -> ProtoError {
        ProtoError::Connection {
            endpoint: self.endpoint.clone(),
            what,
            detail: e.to_string(),
        }
    }

    /// The only row of the only result set.
    pub(crate) fn one_row<'a>(
        &self,
        sets: &'a ResultSets,
        what: &'static str,
    ) -> Result<&'a [Option<Bytes>], ProtoError> {
        match sets.0.as_slice() {
            [set] if set.rows.len() == 1 => Ok(&set.rows[0]),
            _ => Err(self.unexpected_result(
                what,
                &format!(
                    "{} result sets of {:?} rows",
                    sets.0.len(),
                    sets.0.iter().map(|s| s.rows.len()).collect::<Vec<_>>()
                ),
            )),
        }
    }

    /// Column `idx` of `row` as text, `None` for NULL.
    pub(crate) fn text(
        &self,
        row: &[Option<Bytes>],
        idx: usize,
        what: &'static str,
    ) -> Result<Option<String>, ProtoError> {
        match row.get(idx) {
            Some(v) => Ok(v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())),
            None => Err(self.unexpected_result(what, &format!("a row of {} columns", row.len()))),
        }
    }

    /// Column `idx` of `row` as text; NULL is an error.
    pub(crate) fn req_text(
        &self,
        row: &[Option<Bytes>],
        idx: usize,
        what: &'static str,
    ) -> Result<String, ProtoError> {
        self.text(row, idx, what)?
            .ok_or_else(|| self.unexpected_result(what, "NULL"))
    }

    /// Column `idx` of `row` parsed; NULL is `None`.
    pub(crate) fn parse_opt<T: std::str::FromStr>(
        &self,
        row: &[Option<Bytes>],
        idx: usize,
        what: &'static str,
    ) -> Result<Option<T>, ProtoError> {
        match self.text(row, idx, what)? {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| self.unexpected_result(what, &v)),
        }
    }

    /// Column `idx` of `row` parsed; NULL is an error.
    pub(crate) fn parse_req<T: std::str::FromStr>(
        &self,
        row: &[Option<Bytes>],
        idx: usize,
        what: &'static str,
    ) -> Result<T, ProtoError> {
        self.parse_opt(row, idx, what)?
            .ok_or_else(|| self.unexpected_result(what, "NULL"))
    }

    pub(crate) fn unexpected_result(&self, what: &'static str, value: &str) -> ProtoError {
        ProtoError::UnexpectedResult {
            endpoint: self.endpoint.clone(),
            what,
            value: value.to_string(),
        }
    }

    /// Fails with [`ProtoError::NotSupported`] when the server is older than `needs`.
    pub(crate) fn require(
        &self,
        what: &'static str,
        needs: u32,
        ok: bool,
    ) -> Result<(), ProtoError> {
        if ok {
            return Ok(());
        }
        Err(ProtoError::NotSupported {
            endpoint: self.endpoint.clone(),
            what,
            needs,
            major: self.features.major,
        })
    }
}

/// A message's name for error messages (payloads left out).
fn describe(m: &Backend) -> String {
    match m {
        Backend::Error(s) => format!("error: {s}"),
        Backend::CommandComplete(tag) => format!("CommandComplete {tag:?}"),
        other => {
            let dbg = format!("{other:?}");
            dbg.split(['(', ' ', '{']).next().unwrap_or("?").to_string()
        }
    }
}

/// The SSL request and, when the server agrees, the TLS handshake: the stream, whether it is
/// TLS, and the channel binding data of the server's certificate.
async fn negotiate_tls(
    mut tcp: TcpStream,
    host: &str,
    r: &ResolvedConn,
    endpoint: &Endpoint,
) -> Result<(Box<dyn Io>, bool, Option<Vec<u8>>), Failure> {
    let io_err = |e: std::io::Error| {
        Failure::Fatal(ProtoError::Connection {
            endpoint: endpoint.clone(),
            what: "SSL request",
            detail: e.to_string(),
        })
    };
    let mut buf = BytesMut::new();
    frontend::ssl_request(&mut buf);
    tcp.write_all(&buf).await.map_err(io_err)?;
    let answer = tcp.read_u8().await.map_err(io_err)?;
    match answer {
        b'S' => {
            let config = client_config(&r.tls, endpoint).map_err(Failure::Fatal)?;
            let name = server_name(host, endpoint).map_err(Failure::Fatal)?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    Failure::Fatal(ProtoError::Tls {
                        endpoint: endpoint.clone(),
                        detail: format!("{e}; hint: check that PGSSLROOTCERT names the CA that signed the server's certificate and, for sslmode=verify-full, that the certificate names the host"),
                    })
                })?;
            let binding = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| tls_server_end_point(cert));
            Ok((Box::new(stream), true, binding))
        }
        b'N' if r.tls.mode.requires_tls() => Err(Failure::Fatal(ProtoError::TlsUnavailable {
            endpoint: endpoint.clone(),
            mode: r.tls.mode,
        })),
        b'N' => Ok((Box::new(tcp), false, None)),
        other => Err(Failure::Fatal(ProtoError::Protocol {
            endpoint: endpoint.clone(),
            what: "SSL request",
            detail: format!("unexpected answer byte {other:#04x}"),
        })),
    }
}

/// The result sets of one command.
#[derive(Debug, Default)]
pub(crate) struct ResultSets(pub(crate) Vec<ResultSet>);

/// One result set: rows of text (or NULL) values.
#[derive(Debug)]
pub(crate) struct ResultSet {
    pub(crate) rows: Vec<Vec<Option<Bytes>>>,
}

impl ResultSets {
    /// Starts a result set (after a row description).
    pub(crate) fn push_set(&mut self) {
        self.0.push(ResultSet { rows: Vec::new() });
    }
}
