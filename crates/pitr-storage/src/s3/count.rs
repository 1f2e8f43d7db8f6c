//! The HTTP client of [`super::S3Storage`], counting the requests it sends (each attempt of a
//! retried request included): [`super::S3Storage::requests_sent`], for the tests that pin how
//! many round trips an operation costs, and a debug log line per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use object_store::ClientOptions;

/// Makes reqwest clients whose requests add to one counter.
#[derive(Debug)]
pub(super) struct CountingConnector {
    pub(super) sent: Arc<AtomicU64>,
}

impl HttpConnector for CountingConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(Counting {
            inner: ReqwestConnector::default().connect(options)?,
            sent: self.sent.clone(),
        }))
    }
}

#[derive(Debug)]
struct Counting {
    inner: HttpClient,
    sent: Arc<AtomicU64>,
}

#[async_trait]
impl HttpService for Counting {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        self.sent.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("S3 request: {} {}", req.method(), req.uri().path());
        self.inner.execute(req).await
    }
}
