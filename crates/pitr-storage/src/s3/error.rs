//! Classifying object_store's errors: absent, or which kind of trouble.
//!
//! object_store keeps the HTTP status inside a private error type, so the classification reads
//! the public parts (the error variant, the transport error's kind) and the status line and S3
//! error code that its messages always carry.

use std::error::Error as StdError;

use object_store::client::{HttpError, HttpErrorKind};

use crate::{RemoteFailure, StorageError};

/// What an object_store error means for the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Class {
    /// The object does not exist (404 on a key; never a missing bucket).
    Absent,
    /// A conditional write found an existing object (412, 409).
    Exists,
    /// A range that starts at or beyond the object's end (416).
    RangeBeyondEnd,
    /// Any other failure.
    Failure(RemoteFailure, String),
}

/// Classifies `e`.
pub(crate) fn classify(e: &object_store::Error) -> Class {
    let text = chain_text(e);
    let status = http_status(&text);
    let code = xml_field(&text, "Code");
    match e {
        object_store::Error::NotFound { .. } if code.as_deref() != Some("NoSuchBucket") => {
            return Class::Absent
        }
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            return Class::Exists
        }
        _ => {}
    }
    if status == Some(416) {
        return Class::RangeBeyondEnd;
    }
    let failure = match (status, code.as_deref()) {
        (_, Some("NoSuchBucket")) => RemoteFailure::NoBucket,
        (
            _,
            Some(
                "PermanentRedirect"
                | "AuthorizationHeaderMalformed"
                | "IllegalLocationConstraintException",
            ),
        ) => RemoteFailure::WrongRegion,
        (Some(401 | 403), _) => RemoteFailure::Auth,
        (Some(301 | 307), _) => RemoteFailure::WrongRegion,
        (Some(408), _) => RemoteFailure::Timeout,
        (Some(429), _) => RemoteFailure::Server,
        (Some(s), _) if s >= 500 => RemoteFailure::Server,
        (Some(_), _) => RemoteFailure::Other,
        (None, _) => transport_failure(e, &text),
    };
    Class::Failure(failure, detail(&text, status, code.as_deref()))
}

/// Builds the error for a failed `op` on `object`.
pub(crate) fn remote(
    op: &'static str,
    object: String,
    endpoint: &str,
    failure: RemoteFailure,
    detail: String,
) -> StorageError {
    StorageError::Remote {
        op,
        object,
        endpoint: endpoint.to_string(),
        failure,
        detail,
    }
}

/// A failure with no HTTP status: the transport (or the credential provider) failed.
fn transport_failure(e: &object_store::Error, text: &str) -> RemoteFailure {
    if matches!(
        e,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
    ) {
        return RemoteFailure::Auth;
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("without location") {
        return RemoteFailure::WrongRegion;
    }
    let tls = [
        "certificate",
        "tls",
        "handshake",
        "invalidcontenttype",
        "corruptmessage",
    ]
    .iter()
    .any(|w| lower.contains(w));
    match http_error_kind(e) {
        Some(HttpErrorKind::Connect) if tls => RemoteFailure::Tls,
        Some(HttpErrorKind::Connect | HttpErrorKind::Request | HttpErrorKind::Interrupted) => {
            RemoteFailure::Unreachable
        }
        Some(HttpErrorKind::Timeout) => RemoteFailure::Timeout,
        _ if tls => RemoteFailure::Tls,
        _ if lower.contains("credential") => RemoteFailure::Auth,
        _ => RemoteFailure::Other,
    }
}

fn http_error_kind(e: &object_store::Error) -> Option<HttpErrorKind> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<HttpError>() {
            return Some(h.kind());
        }
        cur = err.source();
    }
    None
}

/// The messages of `e` and its sources, each level once (levels often repeat their source).
fn chain_text(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let msg = err.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = err.source();
    }
    out
}

/// The status in object_store's "... status code: 404 Not Found ..." wording.
fn http_status(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

/// `<Field>value</Field>` from an S3 XML error body quoted in `text`.
pub(crate) fn xml_field(text: &str, field: &str) -> Option<String> {
    let open = format!("<{field}>");
    let start = text.find(&open)? + open.len();
    let len = text[start..].find(&format!("</{field}>"))?;
    Some(text[start..start + len].trim().to_string())
}

/// A short detail: `HTTP 403 SignatureDoesNotMatch: The request signature ...`, or the
/// transport error's words.
fn detail(text: &str, status: Option<u16>, code: Option<&str>) -> String {
    match status {
        Some(s) => {
            let mut d = format!("HTTP {s}");
            if let Some(c) = code {
                d.push(' ');
                d.push_str(c);
            }
            if let Some(m) = xml_field(text, "Message") {
                d.push_str(": ");
                d.push_str(&m);
            }
            d
        }
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_and_code_from_object_store_messages() {
        let text = "Error performing GET http://127.0.0.1:1/b/k in 2ms - Server returned \
                    non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?><Error>\
                    <Code>NoSuchBucket</Code><Message>The specified bucket does not exist\
                    </Message></Error>";
        assert_eq!(http_status(text), Some(404));
        assert_eq!(xml_field(text, "Code").as_deref(), Some("NoSuchBucket"));
        assert_eq!(
            detail(text, Some(404), Some("NoSuchBucket")),
            "HTTP 404 NoSuchBucket: The specified bucket does not exist"
        );
        assert_eq!(http_status("no status here"), None);
        assert_eq!(xml_field("<Code>unclosed", "Code"), None);
    }
}
