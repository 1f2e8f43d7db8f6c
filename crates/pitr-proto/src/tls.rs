//! `sslmode` as libpq understands it, and TLS for the replication connection (rustls).
//!
//! Modes: `disable` (plain), `allow` (plain, TLS if the server refuses plain), `prefer`
//! (default: TLS if the server offers it), `require` (TLS, certificate not checked — unless a
//! root certificate file exists, then as `verify-ca`, like libpq), `verify-ca` (chain checked
//! against `sslrootcert`), `verify-full` (chain and host name). TLS is only used over TCP: on
//! Unix sockets libpq never negotiates it either.
//!
//! Why rustls (with the `ring` provider): no system library to install or link (OpenSSL), a
//! maintained, audited stack, and the approach `tokio-postgres-rustls` takes; `ring` instead of
//! rustls' default `aws-lc-rs` because the latter needs cmake and a long C build.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::params::ConnEnv;
use crate::{Endpoint, ProtoError};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Plain first; TLS only if the server refuses the plain connection.
    Allow,
    /// TLS when the server offers it, else plain (libpq's default).
    #[default]
    Prefer,
    /// TLS or fail; the certificate is not checked (unless a root certificate file exists).
    Require,
    /// TLS with the certificate chain checked against the root certificate.
    VerifyCa,
    /// As `verify-ca`, and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    /// The modes as libpq spells them.
    pub const NAMES: [&'static str; 6] = [
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ];

    /// Whether a connection without TLS is refused.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = match self {
            SslMode::Disable => 0,
            SslMode::Allow => 1,
            SslMode::Prefer => 2,
            SslMode::Require => 3,
            SslMode::VerifyCa => 4,
            SslMode::VerifyFull => 5,
        };
        f.write_str(SslMode::NAMES[i])
    }
}

/// An `sslmode` value libpq does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sslmode {0:?}: expected one of disable, allow, prefer, require, verify-ca, verify-full")]
pub struct ParseSslModeError(pub String);

impl FromStr for SslMode {
    type Err = ParseSslModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim() {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return Err(ParseSslModeError(s.to_string())),
        })
    }
}

/// TLS settings after flags, environment and defaults: `sslmode` (`PGSSLMODE`, default
/// `prefer`) and the root certificate (`PGSSLROOTCERT`, default `~/.postgresql/root.crt`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSettings {
    /// The mode.
    pub mode: SslMode,
    /// The CA certificate file (PEM) that `verify-ca` / `verify-full` check against.
    pub root_cert: Option<PathBuf>,
}

impl TlsSettings {
    /// `flag` (e.g. `--sslmode`), else `PGSSLMODE`, else `prefer`; the root certificate from
    /// `PGSSLROOTCERT`, else `~/.postgresql/root.crt`.
    pub fn resolve(flag: Option<SslMode>, env: &ConnEnv) -> Result<TlsSettings, ProtoError> {
        let var = |name: &str| env.vars.get(name).filter(|v| !v.is_empty());
        let mode = match (flag, var("PGSSLMODE")) {
            (Some(m), _) => m,
            (None, Some(v)) => v.parse().map_err(|_| ProtoError::InvalidSslMode {
                value: v.clone(),
                origin: "PGSSLMODE",
            })?,
            (None, None) => SslMode::Prefer,
        };
        let root_cert = var("PGSSLROOTCERT")
            .map(PathBuf::from)
            .or_else(|| env.home.as_ref().map(|h| h.join(".postgresql/root.crt")));
        Ok(TlsSettings { mode, root_cert })
    }
}

/// What the certificate check does for a connection.
enum Verify {
    Nothing,
    Chain(PathBuf),
    ChainAndName(PathBuf),
}

/// The rustls configuration for `settings`, or why it cannot be built.
pub(crate) fn client_config(
    settings: &TlsSettings,
    endpoint: &Endpoint,
) -> Result<Arc<ClientConfig>, ProtoError> {
    let root = settings.root_cert.clone();
    let verify = match (settings.mode, root) {
        (SslMode::VerifyFull, Some(r)) => Verify::ChainAndName(r),
        (SslMode::VerifyCa, Some(r)) => Verify::Chain(r),
        (SslMode::VerifyFull | SslMode::VerifyCa, None) => {
            return Err(tls_error(
                endpoint,
                format!(
                    "sslmode {} needs a root certificate and none was given; hint: set PGSSLROOTCERT to the CA's certificate file (PEM)",
                    settings.mode
                ),
            ))
        }
        // libpq: with a root certificate file present, `require` checks the chain.
        (SslMode::Require, Some(r)) if r.is_file() => Verify::Chain(r),
        _ => Verify::Nothing,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(endpoint, e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = match verify {
        Verify::Nothing => Arc::new(NoVerify(provider)),
        Verify::Chain(path) => Arc::new(ChainOnly(webpki(&path, provider, endpoint)?)),
        Verify::ChainAndName(path) => webpki(&path, provider, endpoint)?,
    };
    Ok(Arc::new(
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    ))
}

/// The name the certificate must carry (an IP address or a DNS name).
pub(crate) fn server_name(
    host: &str,
    endpoint: &Endpoint,
) -> Result<ServerName<'static>, ProtoError> {
    ServerName::try_from(host.to_string()).map_err(|e| {
        tls_error(
            endpoint,
            format!("host {host:?} is not a valid TLS server name: {e}"),
        )
    })
}

fn tls_error(endpoint: &Endpoint, detail: String) -> ProtoError {
    ProtoError::Tls {
        endpoint: endpoint.clone(),
        detail,
    }
}

fn webpki(
    path: &std::path::Path,
    provider: Arc<CryptoProvider>,
    endpoint: &Endpoint,
) -> Result<Arc<WebPkiServerVerifier>, ProtoError> {
    if path.as_os_str() == "system" {
        return Err(tls_error(
            endpoint,
            "sslrootcert=system (the operating system's trust store) is not supported; hint: set PGSSLROOTCERT to a CA certificate file (PEM)".into(),
        ));
    }
    let cannot = |e: &dyn fmt::Display| {
        tls_error(
            endpoint,
            format!(
                "cannot read the root certificate file \"{}\": {e}; hint: set PGSSLROOTCERT to the CA's certificate file (PEM)",
                path.display()
            ),
        )
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| cannot(&e))? {
        let cert = cert.map_err(|e| cannot(&e))?;
        roots.add(cert).map_err(|e| cannot(&e))?;
    }
    if roots.is_empty() {
        return Err(cannot(&"no certificate in it"));
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| cannot(&e))
}

/// The `tls-server-end-point` channel binding data of a server certificate (RFC 5929): its
/// hash with the certificate signature's hash function, SHA-256 for MD5 and SHA-1. `None`
/// when the signature algorithm names no hash (Ed25519, RSASSA-PSS): SCRAM then goes on
/// without channel binding, as libpq does when it cannot bind.
pub(crate) fn tls_server_end_point(cert_der: &[u8]) -> Option<Vec<u8>> {
    use ring::digest::{digest, SHA256, SHA384, SHA512};
    let oid = signature_algorithm_oid(cert_der)?;
    // Dotted forms in comments; bytes are the DER contents of the OID.
    let algorithm = match oid {
        // 1.2.840.113549.1.1.{4,5,11,12,13}: md5/sha1/sha256/sha384/sha512 WithRSAEncryption
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, n] => match n {
            4 | 5 | 11 => &SHA256,
            12 => &SHA384,
            13 => &SHA512,
            _ => return None,
        },
        // 1.2.840.10045.4.1: ecdsa-with-SHA1
        [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01] => &SHA256,
        // 1.2.840.10045.4.3.{2,3,4}: ecdsa-with-SHA256/384/512
        [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, n] => match n {
            2 => &SHA256,
            3 => &SHA384,
            4 => &SHA512,
            _ => return None,
        },
        _ => return None,
    };
    Some(digest(algorithm, cert_der).as_ref().to_vec())
}

/// One DER element at the start of `input`: (tag, contents, rest).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The OID of `Certificate.signatureAlgorithm` (after `tbsCertificate`).
fn signature_algorithm_oid(cert_der: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (SEQUENCE, cert, _) = der_element(cert_der)? else {
        return None;
    };
    let (SEQUENCE, _tbs, rest) = der_element(cert)? else {
        return None;
    };
    let (SEQUENCE, algorithm, _) = der_element(rest)? else {
        return None;
    };
    match der_element(algorithm)? {
        (OID, oid, _) => Some(oid),
        _ => None,
    }
}

/// `sslmode=require`/`prefer`: encryption without authentication of the server, as libpq.
/// Handshake signatures are still verified (against the certificate presented).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must lead to the root certificate; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> ConnEnv {
        ConnEnv {
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            os_user: Some("alice".into()),
            home: Some("/home/alice".into()),
        }
    }

    #[test]
    fn channel_binding_hashes_with_the_signature_hash() {
        // A DER skeleton: SEQUENCE { SEQUENCE {} (tbs), SEQUENCE { OID ecdsa-with-SHA384 } }.
        let cert = [
            0x30, 0x0e, 0x30, 0x00, 0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04,
            0x03, 0x03,
        ];
        let hash = tls_server_end_point(&cert).unwrap();
        assert_eq!(
            hash,
            ring::digest::digest(&ring::digest::SHA384, &cert).as_ref()
        );
        let mut ed25519 = cert;
        ed25519[4..].copy_from_slice(&[0x30, 0x0a, 0x06, 0x03, 0x2b, 0x65, 0x70, 0, 0, 0, 0, 0]);
        assert_eq!(tls_server_end_point(&ed25519), None);
        for junk in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x05, 0x30],
        ] {
            assert_eq!(tls_server_end_point(junk), None);
        }
    }

    #[test]
    fn modes_parse_what_they_print() {
        for name in SslMode::NAMES {
            assert_eq!(name.parse::<SslMode>().unwrap().to_string(), name);
        }
        assert!("required".parse::<SslMode>().is_err());
        assert!(SslMode::VerifyCa.requires_tls() && !SslMode::Prefer.requires_tls());
    }

    #[test]
    fn settings_follow_flag_then_environment_then_libpq_defaults() {
        let t = TlsSettings::resolve(None, &env(&[])).unwrap();
        assert_eq!(t.mode, SslMode::Prefer);
        assert_eq!(
            t.root_cert,
            Some(PathBuf::from("/home/alice/.postgresql/root.crt"))
        );
        let e = env(&[("PGSSLMODE", "require"), ("PGSSLROOTCERT", "/etc/ca.pem")]);
        let t = TlsSettings::resolve(None, &e).unwrap();
        assert_eq!(t.mode, SslMode::Require);
        assert_eq!(t.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        let t = TlsSettings::resolve(Some(SslMode::Disable), &e).unwrap();
        assert_eq!(t.mode, SslMode::Disable);
        let err = TlsSettings::resolve(None, &env(&[("PGSSLMODE", "on")])).unwrap_err();
        assert!(err.to_string().contains("\"on\""), "{err}");
    }
}
