//! TLS for the SQL sessions: tokio-postgres' connector traits over the same rustls
//! configuration as the replication client (the approach of `tokio-postgres-rustls`), with
//! `tls-server-end-point` channel binding for SCRAM.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::Socket;

use crate::tls::{client_config, server_name, tls_server_end_point, TlsSettings};
use crate::{Endpoint, ProtoError};

/// Makes a TLS connector per host; failures to set TLS up (a missing root certificate) are
/// reported when TLS is actually attempted, since tokio-postgres asks for a connector even
/// for connections that stay plain (Unix sockets, `sslmode=disable`).
#[derive(Debug, Clone)]
pub(crate) struct MakeSqlTls {
    settings: TlsSettings,
    endpoint: Endpoint,
}

impl MakeSqlTls {
    pub(crate) fn new(settings: TlsSettings, endpoint: Endpoint) -> MakeSqlTls {
        MakeSqlTls { settings, endpoint }
    }
}

/// A connector for one host, or why there cannot be one.
#[derive(Debug)]
pub(crate) struct SqlTlsConnect(Result<(Arc<ClientConfig>, ServerName<'static>), ProtoError>);

impl MakeTlsConnect<Socket> for MakeSqlTls {
    type Stream = SqlTlsStream;
    type TlsConnect = SqlTlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<SqlTlsConnect, io::Error> {
        let ready = client_config(&self.settings, &self.endpoint)
            .and_then(|c| Ok((c, server_name(domain, &self.endpoint)?)));
        Ok(SqlTlsConnect(ready))
    }
}

impl TlsConnect<Socket> for SqlTlsConnect {
    type Stream = SqlTlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<SqlTlsStream, io::Error>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let (config, name) = self.0.map_err(io::Error::other)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await?;
            Ok(SqlTlsStream(Box::new(tls)))
        })
    }
}

/// An encrypted SQL connection.
#[derive(Debug)]
pub(crate) struct SqlTlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl AsyncRead for SqlTlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SqlTlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl TlsStream for SqlTlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        self.0
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| tls_server_end_point(cert))
            .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
    }
}
