//! Fills a repository with archived WAL quickly, for `bench/s3-scale.sh`: `COUNT` segments
//! after `AFTER` (a segment already archived by the real archiver), stored exactly as `pitr
//! archive-push` stores them (a pitr frame, zstd, through the repository API, so encrypted
//! when the repository is), `JOBS` at a time.
//!
//! Each segment's content is `TEMPLATE` (a real segment of the same cluster) with every page
//! header's address and timeline rewritten to the segment's own position: well-formed WAL
//! pages, whose records are the template's. Nothing replays them: the benchmark measures
//! what reads names, sizes and frame headers (info, restore planning, expire).
//!
//! Usage: populate_wal REPO CLUSTER TEMPLATE AFTER COUNT [JOBS]
//! (REPO a directory or s3://bucket/prefix; for S3 the endpoint and credentials come from
//! AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, and a private CA from
//! PITR_S3_CA_FILE.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use pitr_pg::{SegNo, WalFileName, WalSegSize};
use pitr_repo::{Compression, Repo};
use pitr_storage::{LocalFs, S3Config, S3Storage, Storage};

/// WAL page size (PostgreSQL's default XLOG_BLCKSZ).
const PAGE: usize = 8192;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        eprintln!("usage: populate_wal REPO CLUSTER TEMPLATE AFTER COUNT [JOBS]");
        std::process::exit(2);
    }
    let (url, cluster) = (&args[1], &args[2]);
    let template = std::fs::read(&args[3]).expect("read the template segment");
    let after = WalFileName::parse(&args[4]).expect("AFTER is a segment name");
    let count: u64 = args[5].parse().expect("COUNT is a number");
    let jobs: usize = args
        .get(6)
        .map_or(64, |j| j.parse().expect("JOBS is a number"));

    let storage: Arc<dyn Storage> = if url.starts_with("s3://") {
        let mut cfg = S3Config::from_url(url).expect("S3 URL");
        cfg.ca_file = std::env::var_os("PITR_S3_CA_FILE").map(Into::into);
        Arc::new(S3Storage::new(cfg).expect("S3 driver"))
    } else {
        Arc::new(LocalFs::open(url.as_str()).expect("local repository"))
    };
    let key = std::env::var_os("PITR_ENCRYPTION_KEY")
        .map(|p| pitr_repo::KeyFile::read(std::path::Path::new(&p)).expect("key file"));
    let repo = Repo::open_with_key(storage, key.as_ref())
        .await
        .expect("open the repository");
    let cluster = Arc::new(repo.cluster(cluster).expect("cluster"));
    let size = WalSegSize::new(template.len() as u64).expect("template is one segment");
    let tli = after.timeline();
    let first = after.segno(size).expect("AFTER is a segment").0 + 1;
    let template = Arc::new(template);

    let sem = Arc::new(tokio::sync::Semaphore::new(jobs));
    let mut tasks = tokio::task::JoinSet::new();
    let started = std::time::Instant::now();
    for segno in first..first + count {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let (cluster, template) = (cluster.clone(), template.clone());
        tasks.spawn(async move {
            let name = WalFileName::segment(tli, SegNo(segno), size);
            let data = tokio::task::spawn_blocking(move || {
                let mut seg = template.to_vec();
                for (i, page) in seg.chunks_mut(PAGE).enumerate() {
                    let addr = segno * size.bytes() + (i * PAGE) as u64;
                    page[4..8].copy_from_slice(&tli.0.to_le_bytes());
                    page[8..16].copy_from_slice(&addr.to_le_bytes());
                }
                seg
            })
            .await
            .expect("rewrite pages");
            cluster
                .put_wal(
                    &name,
                    &data,
                    Compression::Zstd(pitr_repo::frame::DEFAULT_ZSTD_LEVEL),
                )
                .await
                .unwrap_or_else(|e| panic!("storing {name}: {e}"));
            drop(permit);
        });
        while let Some(done) = tasks.try_join_next() {
            done.expect("a store task failed");
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a store task failed");
    }
    let last = WalFileName::segment(tli, SegNo(first + count - 1), size);
    println!("{last} {count} {:.1}", started.elapsed().as_secs_f64());
}
