//! Streamed uploads to S3: one PUT for small objects, a multipart upload for large ones, and
//! a conditional `CompleteMultipartUpload` (`If-None-Match: *`) for `PutMode::Create`.
//!
//! Memory stays bounded: an upload holds at most one part (`part_size` bytes plus the chunk
//! being appended). Nothing is visible under the key before `finish`: multipart parts are not
//! objects, and a single PUT is atomic. An upload dropped unfinished aborts its multipart upload
//! in the background (a crashed process leaves its parts to the bucket's lifecycle rule for
//! incomplete multipart uploads).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_TYPE, IF_NONE_MATCH};
use http::{HeaderValue, Method, StatusCode};
use object_store::client::HttpRequestBody;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::{SignedUrlOptions, Signer};
use object_store::PutPayload;

use super::S3Inner;
use crate::{PutMode, PutOutcome, RemoteFailure, StorageError, StorageResult, Upload};

/// A multipart upload in progress.
struct Multipart {
    id: String,
    parts: Vec<PartId>,
}

/// An upload to one key; see the module docs.
pub(crate) struct S3Upload {
    s3: Arc<S3Inner>,
    key: String,
    path: Path,
    buf: BytesMut,
    multipart: Option<Multipart>,
    /// A write failed: the data is incomplete, so nothing may be published.
    failed: bool,
    /// Where to run the abort of an upload dropped unfinished.
    runtime: tokio::runtime::Handle,
}

impl S3Upload {
    pub(crate) fn new(s3: Arc<S3Inner>, key: &str, path: Path) -> S3Upload {
        S3Upload {
            s3,
            key: key.to_string(),
            path,
            buf: BytesMut::new(),
            multipart: None,
            failed: false,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Uploads the first `len` buffered bytes as the next part, starting the multipart upload
    /// if needed.
    async fn send_part(&mut self, len: usize) -> StorageResult<()> {
        if self.multipart.is_none() {
            let id = self
                .s3
                .store
                .create_multipart(&self.path)
                .await
                .map_err(|e| self.s3.fail("start upload of", &self.key, &e))?;
            self.multipart = Some(Multipart {
                id,
                parts: Vec::new(),
            });
        }
        let data = self.buf.split_to(len).freeze();
        let Some(mp) = self.multipart.as_mut() else {
            return Ok(());
        };
        let part = self
            .s3
            .store
            .put_part(&self.path, &mp.id, mp.parts.len(), PutPayload::from(data))
            .await
            .map_err(|e| self.s3.fail("upload part of", &self.key, &e))?;
        mp.parts.push(part);
        Ok(())
    }

    async fn finish_multipart(&mut self, mode: PutMode) -> StorageResult<PutOutcome> {
        if !self.buf.is_empty() {
            self.send_part(self.buf.len()).await?;
        }
        let Some(mp) = self.multipart.as_ref() else {
            return Err(self.s3.internal("finish", &self.key, "no multipart upload"));
        };
        match mode {
            PutMode::Overwrite => {
                self.s3
                    .store
                    .complete_multipart(&self.path, &mp.id, mp.parts.clone())
                    .await
                    .map_err(|e| self.s3.fail("complete upload of", &self.key, &e))?;
                Ok(PutOutcome::Written)
            }
            PutMode::Create => {
                complete_if_absent(&self.s3, &self.key, &self.path, &mp.id, &mp.parts).await
            }
        }
    }

    /// Aborts the multipart upload, if any, in the background.
    fn abort_in_background(&mut self) {
        if let Some(mp) = self.multipart.take() {
            let s3 = Arc::clone(&self.s3);
            let path = self.path.clone();
            self.runtime.spawn(async move {
                if let Err(e) = s3.store.abort_multipart(&path, &mp.id).await {
                    tracing::warn!("cannot abort multipart upload of {path}: {e}");
                }
            });
        }
    }
}

#[async_trait]
impl Upload for S3Upload {
    async fn write(&mut self, data: Bytes) -> StorageResult<()> {
        if self.failed {
            return Err(self
                .s3
                .internal("write", &self.key, "an earlier write failed"));
        }
        self.buf.extend_from_slice(&data);
        // Strictly more than a part: an object of exactly `part_size` bytes is one PUT.
        while self.buf.len() > self.s3.cfg.part_size {
            let len = self.s3.cfg.part_size;
            if let Err(e) = self.send_part(len).await {
                self.failed = true;
                self.abort_in_background();
                return Err(e);
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>, mode: PutMode) -> StorageResult<PutOutcome> {
        if self.failed {
            return Err(self
                .s3
                .internal("finish", &self.key, "an earlier write failed"));
        }
        if self.multipart.is_none() {
            let data = std::mem::take(&mut self.buf).freeze();
            return self.s3.put(&self.key, &self.path, data, mode).await;
        }
        let outcome = self.finish_multipart(mode).await;
        if !matches!(outcome, Ok(PutOutcome::Written)) {
            // Refused or failed: the parts must not linger.
            self.abort_in_background();
        }
        self.multipart = None;
        outcome
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        self.abort_in_background();
    }
}

/// `CompleteMultipartUpload` with `If-None-Match: *`: the object appears only if no object
/// exists under the key, atomically (AWS S3 since 2024, SeaweedFS under its per-object write
/// lock). object_store only completes unconditionally, so this request is presigned by
/// object_store and sent through its HTTP client.
///
/// Retried like object_store's own requests (5xx, 429, 409, connection errors, timeouts) within
/// the retry budget. When a retry finds the upload already completed (`412`, or `404
/// NoSuchUpload` once the first attempt may have succeeded), the outcome is `AlreadyExists` if
/// an object is there: the caller compares contents, as for any duplicate.
async fn complete_if_absent(
    s3: &S3Inner,
    key: &str,
    path: &Path,
    upload_id: &str,
    parts: &[PartId],
) -> StorageResult<PutOutcome> {
    let body = complete_body(parts);
    let options = SignedUrlOptions::new()
        .with_query([("uploadId", upload_id)])
        .with_signed_header(IF_NONE_MATCH, HeaderValue::from_static("*"));
    let started = Instant::now();
    let mut attempt: u32 = 0;
    loop {
        let url = s3
            .store
            .signed_url_opts(Method::POST, path, Duration::from_secs(3600), &options)
            .await
            .map_err(|e| s3.fail("complete upload of", key, &e))?;
        let request = http::Request::builder()
            .method(Method::POST)
            .uri(url.as_str())
            .header(IF_NONE_MATCH, "*")
            .header(CONTENT_TYPE, "application/xml")
            .body(HttpRequestBody::from(body.clone()))
            .map_err(|e| s3.internal("complete upload of", key, &e.to_string()))?;
        let (status, text, retryable) = match s3.http.execute(request).await {
            Ok(response) => {
                let status = response.status();
                let text = match response.into_body().bytes().await {
                    Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                    Err(e) => e.to_string(),
                };
                let failed_in_body = status.is_success() && text.contains("<Error>");
                if status.is_success() && !failed_in_body {
                    return Ok(PutOutcome::Written);
                }
                let code = super::error::xml_field(&text, "Code");
                let lost_response = attempt > 0
                    && (status == StatusCode::PRECONDITION_FAILED
                        || code.as_deref() == Some("NoSuchUpload"));
                if status == StatusCode::PRECONDITION_FAILED && attempt == 0 {
                    return Ok(PutOutcome::AlreadyExists);
                }
                if lost_response && s3.exists(key, path).await? {
                    return Ok(PutOutcome::AlreadyExists);
                }
                // 409: AWS's ConditionalRequestConflict, "retry the request".
                let retryable = failed_in_body
                    || status == StatusCode::CONFLICT
                    || status.is_server_error()
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::REQUEST_TIMEOUT;
                (Some(status), text, retryable)
            }
            Err(e) => (None, e.to_string(), true),
        };
        if !retryable || started.elapsed() >= s3.cfg.retry_timeout {
            return Err(complete_error(s3, key, status, &text));
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt += 1;
    }
}

/// The error for a failed conditional complete, classified like object_store's.
fn complete_error(s3: &S3Inner, key: &str, status: Option<StatusCode>, text: &str) -> StorageError {
    let code = super::error::xml_field(text, "Code");
    let failure = match (status.map(|s| s.as_u16()), code.as_deref()) {
        (_, Some("NoSuchBucket")) => RemoteFailure::NoBucket,
        (Some(401 | 403), _) => RemoteFailure::Auth,
        (Some(s), _) if s >= 500 || s == 429 => RemoteFailure::Server,
        (Some(_), _) => RemoteFailure::Other,
        (None, _) if text.contains("timed out") => RemoteFailure::Timeout,
        (None, _) => RemoteFailure::Unreachable,
    };
    let detail = match status {
        Some(s) => format!(
            "HTTP {} {}",
            s.as_u16(),
            code.unwrap_or_else(|| text.chars().take(200).collect())
        ),
        None => text.to_string(),
    };
    super::error::remote(
        "complete upload of",
        s3.url(key),
        &s3.endpoint,
        failure,
        detail,
    )
}

/// Exponential backoff from 100 ms to 10 s, with jitter (0.5x to 1x).
fn backoff(attempt: u32) -> Duration {
    let full = Duration::from_millis(100)
        .saturating_mul(1 << attempt.min(7))
        .min(Duration::from_secs(10));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    full / 2 + full.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

/// The `CompleteMultipartUpload` XML for `parts` (numbered from 1). A part id is the part's
/// ETag, or, with checksums configured, object_store's XML holding the ETag and checksum.
fn complete_body(parts: &[PartId]) -> String {
    let mut xml = String::from("<CompleteMultipartUpload>");
    for (i, part) in parts.iter().enumerate() {
        let id = part.content_id.as_str();
        let inner = match (id.find('>'), id.rfind("</")) {
            (Some(open), Some(close)) if id.starts_with('<') && open < close => {
                id[open + 1..close].to_string()
            }
            _ => format!("<ETag>{}</ETag>", xml_escape(id)),
        };
        xml.push_str(&format!(
            "<Part>{inner}<PartNumber>{}</PartNumber></Part>",
            i + 1
        ));
    }
    xml.push_str("</CompleteMultipartUpload>");
    xml
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_body_numbers_parts_and_escapes_etags() {
        let parts = vec![
            PartId {
                content_id: "\"abc\"".into(),
            },
            PartId {
                content_id:
                    "<PartMetadata><ETag>x</ETag><ChecksumSHA256>c</ChecksumSHA256></PartMetadata>"
                        .into(),
            },
        ];
        assert_eq!(
            complete_body(&parts),
            "<CompleteMultipartUpload><Part><ETag>&quot;abc&quot;</ETag><PartNumber>1</PartNumber>\
             </Part><Part><ETag>x</ETag><ChecksumSHA256>c</ChecksumSHA256><PartNumber>2\
             </PartNumber></Part></CompleteMultipartUpload>"
        );
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        assert!(backoff(0) <= Duration::from_millis(100));
        assert!(backoff(0) >= Duration::from_millis(50));
        assert!(backoff(3) >= Duration::from_millis(400));
        assert!(backoff(40) <= Duration::from_secs(10));
    }
}
