//! Encrypted repositories on both drivers (a local directory, and S3 on a real SeaweedFS):
//! real WAL segments (fixtures PostgreSQL wrote) stored through an encrypted repository leave
//! no 64-byte window of plaintext in any stored object; a missing, wrong or unexpected key is
//! refused; a flipped byte, swapped chunks, a cut object and an object copied under another
//! name are detected, never returned.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pitr_pg::WalFileName;
use pitr_repo::crypt::seal::{chunk_count, SEAL_HEADER, TAG};
use pitr_repo::crypt::{seal, CryptError, KEYRING_KEY};
use pitr_repo::frame::{self, FrameEncoder};
use pitr_repo::{
    BackupKind, BackupManifest, ClusterIdentity, Compression, KeyFile, Repo, RepoError, WalPut,
};
use pitr_storage::{LocalFs, PutMode, S3Config, S3Credentials, S3Storage, Storage, StorageError};
use pitr_testkit::leak::PlainIndex;
use pitr_testkit::SeaweedFs;

const KEY_A: &str = "3f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const KEY_B: &str = "0000000000000000000000000000000000000000000000000000000000000001";

fn key(text: &str) -> KeyFile {
    KeyFile::from_bytes(Path::new("/etc/pitr/test.key"), text.as_bytes().to_vec()).unwrap()
}

/// Real WAL segments written by PostgreSQL 17 (committed fixtures).
fn real_wal() -> Vec<(WalFileName, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pitr-pg/tests/fixtures/pg17");
    ["000000010000000000000005", "000000010000000000000006"]
        .iter()
        .map(|n| {
            let z = std::fs::read(dir.join(format!("{n}.zst"))).unwrap();
            (
                WalFileName::parse(n).unwrap(),
                zstd::decode_all(z.as_slice()).unwrap(),
            )
        })
        .collect()
}

fn unauthentic(r: Result<impl std::fmt::Debug, RepoError>, what: &str) {
    match r {
        Err(RepoError::Storage(e @ StorageError::Unauthentic { .. })) => {
            assert!(
                e.to_string().contains("fails authentication"),
                "{what}: {e}"
            );
        }
        other => panic!("{what}: expected an authentication failure, got {other:?}"),
    }
}

/// Every stored object, raw.
async fn stored_objects(raw: &dyn Storage) -> Vec<(String, Bytes)> {
    let mut out = Vec::new();
    for o in raw.list("").await.unwrap() {
        out.push((o.key.clone(), raw.get(&o.key).await.unwrap().unwrap()));
    }
    out
}

/// The whole scenario on one driver: `raw` is an empty location for the encrypted
/// repository, `plain_raw` another for an unencrypted one.
async fn scenario(raw: Arc<dyn Storage>, plain_raw: Arc<dyn Storage>) {
    let wal = real_wal();
    let repo = Repo::open_with_key(raw.clone(), Some(&key(KEY_A)))
        .await
        .unwrap();
    assert!(repo.encrypted());
    repo.ensure_marker().await.unwrap();
    let cluster = repo.cluster("main").unwrap();
    let id = ClusterIdentity {
        system_id: 7_000_000_000_000_000_001,
        pg_major: 17,
        wal_seg_size: wal[0].1.len() as u64,
    };
    cluster.register(&id).await.unwrap();
    // Uncompressed: nothing but the encryption hides the bytes.
    for (name, data) in &wal {
        let put = cluster
            .put_wal(name, data, Compression::None)
            .await
            .unwrap();
        assert!(matches!(put, WalPut::Stored { .. }), "{put:?}");
    }
    // A backup file streamed as `pitr backup` does, and its manifest.
    let file_key = cluster.backup_file_key("20261203T060000F", "base/5/16384");
    let mut enc = FrameEncoder::new(Compression::None).unwrap();
    let mut up = repo.storage().upload(&file_key).await.unwrap();
    for piece in wal[0].1.chunks(1 << 20) {
        enc.write(piece).unwrap();
        up.write(Bytes::from(enc.take_output())).await.unwrap();
    }
    let (tail, summary) = enc.finish().unwrap();
    up.write(Bytes::from(tail)).await.unwrap();
    up.finish(PutMode::Create).await.unwrap();
    cluster.put_manifest(&manifest(&id)).await.unwrap();

    // No 64-byte window of the plain WAL in any stored object; the detector finds them in an
    // unencrypted frame of the same bytes.
    let plain: Vec<&[u8]> = wal.iter().map(|(_, d)| d.as_slice()).collect();
    let index = PlainIndex::new(&plain);
    let (plain_frame, _) = frame::encode(&wal[1].1, Compression::None).unwrap();
    assert!(index.find_in(&plain_frame).is_some(), "the detector works");
    let objects = stored_objects(raw.as_ref()).await;
    assert!(
        objects.len() >= 6,
        "{:?}",
        objects.iter().map(|o| &o.0).collect::<Vec<_>>()
    );
    for (k, bytes) in &objects {
        assert_eq!(index.find_in(bytes), None, "plain WAL bytes in {k}");
        if k != KEYRING_KEY {
            assert!(bytes.starts_with(seal::SEAL_MAGIC), "{k} is not sealed");
        }
    }

    // Reopened with the key, everything reads back (whole and ranged); the identical re-push
    // is a duplicate and a different one is refused.
    let repo = Repo::open_with_key(raw.clone(), Some(&key(&format!("{KEY_A}\n"))))
        .await
        .unwrap();
    let cluster = repo.cluster("main").unwrap();
    assert_eq!(cluster.identity().await.unwrap(), Some(id.clone()));
    for (name, data) in &wal {
        assert_eq!(&cluster.get_wal(name).await.unwrap().unwrap(), data);
        let again = cluster.put_wal(name, data, Compression::Zstd(3)).await;
        assert!(matches!(again, Ok(WalPut::Duplicate { .. })), "{again:?}");
    }
    let mut changed = wal[0].1.clone();
    changed[1000] ^= 0x40;
    assert!(matches!(
        cluster
            .put_wal(&wal[0].0, &changed, Compression::None)
            .await,
        Err(RepoError::WalConflict { .. })
    ));
    let ranged = repo
        .storage()
        .get_range(&file_key, 100_000..300_000)
        .await
        .unwrap()
        .unwrap();
    let whole = repo.storage().get(&file_key).await.unwrap().unwrap();
    assert_eq!(ranged, whole.slice(100_000..300_000));
    assert_eq!(frame::decode(&whole).unwrap(), wal[0].1);
    assert_eq!(frame::summary(&whole).unwrap(), summary);
    assert_eq!(cluster.backup_labels().await.unwrap(), ["20261203T060000F"]);
    assert_eq!(
        cluster.manifest("20261203T060000F").await.unwrap(),
        Some(manifest(&id))
    );

    // Without the key, with another, with a passphrase: refused before anything is read.
    let e = Repo::open(raw.clone()).await.unwrap_err();
    assert!(
        matches!(e, RepoError::Crypt(CryptError::MissingKey { .. })),
        "{e}"
    );
    for wrong in [KEY_B, "a passphrase is not this key"] {
        let e = Repo::open_with_key(raw.clone(), Some(&key(wrong)))
            .await
            .unwrap_err();
        assert!(
            matches!(e, RepoError::Crypt(CryptError::WrongKey { .. })),
            "{e}"
        );
        assert!(e.to_string().contains("wrong key"), "{e}");
    }

    tamper(raw.as_ref(), &cluster, &wal).await;

    // An unencrypted repository refuses a key.
    let plain_repo = Repo::open(plain_raw.clone()).await.unwrap();
    plain_repo.ensure_marker().await.unwrap();
    let e = Repo::open_with_key(plain_raw, Some(&key(KEY_A)))
        .await
        .unwrap_err();
    assert!(
        matches!(e, RepoError::Crypt(CryptError::UnexpectedKey { .. })),
        "{e}"
    );
}

/// Damage done to stored objects is detected, and undone after each case.
async fn tamper(
    raw: &dyn Storage,
    cluster: &pitr_repo::ClusterRepo,
    wal: &[(WalFileName, Vec<u8>)],
) {
    let (a, b) = (&wal[0].0, &wal[1].0);
    let (key_a, key_b) = (cluster.wal_key(a), cluster.wal_key(b));
    let orig_a = raw.get(&key_a).await.unwrap().unwrap();
    let orig_b = raw.get(&key_b).await.unwrap().unwrap();
    let n = chunk_count(seal::plain_len(orig_a.len() as u64).unwrap());
    assert!(n >= 3, "the segment spans several chunks");
    let chunk = |i: u64| {
        let start = SEAL_HEADER + i as usize * (seal::CHUNK + TAG);
        start..start + seal::CHUNK + TAG
    };
    let put = |k: String, v: Vec<u8>| async move {
        raw.put(&k, Bytes::from(v), PutMode::Overwrite)
            .await
            .unwrap();
    };

    // One flipped byte, in the header, a chunk, a tag.
    for pos in [9, orig_a.len() / 2, orig_a.len() - 1] {
        let mut bad = orig_a.to_vec();
        bad[pos] ^= 0x01;
        put(key_a.clone(), bad).await;
        unauthentic(cluster.get_wal(a).await, &format!("flipped byte at {pos}"));
    }
    // Two chunks swapped.
    let mut swapped = orig_a.to_vec();
    swapped[chunk(0)].copy_from_slice(&orig_a[chunk(1)]);
    swapped[chunk(1)].copy_from_slice(&orig_a[chunk(0)]);
    put(key_a.clone(), swapped).await;
    unauthentic(cluster.get_wal(a).await, "two chunks swapped");
    // Cut at a chunk boundary (the whole chunks before it are intact).
    put(key_a.clone(), orig_a[..chunk(2).start].to_vec()).await;
    unauthentic(cluster.get_wal(a).await, "truncated at a chunk boundary");
    put(key_a.clone(), orig_a.to_vec()).await;
    assert_eq!(cluster.get_wal(a).await.unwrap().unwrap(), wal[0].1);
    // Object A copied under B's name.
    put(key_b.clone(), orig_a.to_vec()).await;
    unauthentic(cluster.get_wal(b).await, "object copied under another name");
    put(key_b.clone(), orig_b.to_vec()).await;
    assert_eq!(cluster.get_wal(b).await.unwrap().unwrap(), wal[1].1);
}

fn manifest(id: &ClusterIdentity) -> BackupManifest {
    let t: jiff::Timestamp = "2026-12-03T06:00:00Z".parse().unwrap();
    BackupManifest {
        label: "20261203T060000F".into(),
        kind: BackupKind::Full,
        parent: None,
        pg_major: id.pg_major,
        system_id: id.system_id,
        wal_seg_size: id.wal_seg_size,
        timeline: 1,
        start_lsn: "0/5000028".into(),
        stop_lsn: "0/5000100".into(),
        start_time: t,
        stop_time: t,
        backup_label: "START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\n".into(),
        tablespace_map: None,
        tablespaces: Vec::new(),
        data_checksums: true,
        dirs: Vec::new(),
        files: Vec::new(),
        pitr_version: "test".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_repository_on_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let open = |p: &Path| -> Arc<dyn Storage> { Arc::new(LocalFs::create(p).unwrap()) };
    scenario(
        open(&dir.path().join("enc")),
        open(&dir.path().join("plain")),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_repository_on_s3() {
    let server = SeaweedFs::shared();
    let enc = S3Storage::open(s3_config(server, "enc")).await.unwrap();
    let plain = S3Storage::open(s3_config(server, "plain")).await.unwrap();
    scenario(Arc::new(enc), Arc::new(plain)).await;
}

/// A fresh prefix of the test server's bucket.
fn s3_config(server: &SeaweedFs, test: &str) -> S3Config {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let prefix = format!(
        "crypt-{test}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let mut cfg = S3Config::from_url(&format!("s3://{}/{prefix}", server.bucket())).unwrap();
    cfg.endpoint = Some(server.endpoint());
    cfg.region = Some("us-east-1".into());
    cfg.credentials = Some(S3Credentials {
        access_key_id: server.access_key_id().into(),
        secret_access_key: server.secret_access_key().into(),
        session_token: None,
    });
    cfg.retry_timeout = Duration::from_secs(10);
    cfg
}
