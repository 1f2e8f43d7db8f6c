//! How fast the S3 driver deletes many objects (`delete_many`, as `expire` does) on a SeaweedFS
//! started for the purpose (the test harness): stores COUNT small objects, JOBS at a time,
//! then times their deletion and prints objects per second and the requests sent.
//!
//! Usage: cargo run --release -p pitr-storage --example delete_rate [COUNT] [JOBS] [SIZE]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use pitr_storage::{PutMode, S3Config, S3Credentials, S3Storage, Storage};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count: usize = args.get(1).map_or(20_000, |a| a.parse().expect("COUNT"));
    let jobs: usize = args.get(2).map_or(64, |a| a.parse().expect("JOBS"));
    let size: usize = args.get(3).map_or(1024, |a| a.parse().expect("SIZE"));
    let body = Bytes::from(vec![7u8; size]);
    let server = pitr_testkit::SeaweedFs::start();
    let mut cfg = S3Config::from_url(&format!("s3://{}/rate", server.bucket())).unwrap();
    cfg.endpoint = Some(server.endpoint());
    cfg.credentials = Some(S3Credentials {
        access_key_id: server.access_key_id().into(),
        secret_access_key: server.secret_access_key().into(),
        session_token: None,
    });
    let s3 = S3Storage::open(cfg).await.unwrap();
    let keys: Vec<String> = (0..count)
        .map(|i| format!("main/wal/00000001/{i:024X}"))
        .collect();
    let t = Instant::now();
    stream::iter(keys.iter())
        .map(|k| {
            let (s3, body) = (&s3, body.clone());
            async move { s3.put(k, body, PutMode::Create).await.unwrap() }
        })
        .buffer_unordered(jobs)
        .collect::<Vec<_>>()
        .await;
    println!(
        "stored {count} objects in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let before = s3.requests_sent();
    let t = Instant::now();
    s3.delete_many(&keys).await.unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "deleted {count} objects in {secs:.2} s ({:.0}/s), {} requests",
        count as f64 / secs,
        s3.requests_sent() - before
    );
    assert!(s3.list("main/").await.unwrap().is_empty());
}
