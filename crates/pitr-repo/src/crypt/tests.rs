#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use pitr_storage::{LocalFs, PutMode, Storage, StorageError};

use super::seal::{self, chunk_offset, plain_len, sealed_len, DataKey, SealError, CHUNK, TAG};
use super::*;
use crate::{Compression, Repo, RepoError, WalPut};

fn dk(b: u8) -> DataKey {
    DataKey([b; 32])
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Edge sizes around chunks, and one large enough to be sealed on several threads.
const SIZES: [usize; 8] = [
    0,
    1,
    CHUNK - 1,
    CHUNK,
    CHUNK + 1,
    3 * CHUNK,
    3 * CHUNK + 17,
    9 << 20,
];

#[test]
fn sealed_objects_round_trip_and_their_sizes_map_both_ways() {
    for len in SIZES {
        let plain = data(len);
        let obj = seal::seal(&dk(1), "c/wal/00000001/x", &plain).unwrap();
        assert_eq!(obj.len() as u64, sealed_len(len as u64), "{len}");
        assert_eq!(plain_len(obj.len() as u64), Some(len as u64), "{len}");
        assert_eq!(seal::open(&dk(1), "c/wal/00000001/x", &obj).unwrap(), plain);
    }
    // Lengths cut inside a tag are no sealed object's.
    for bad in [0, 10, seal::SEAL_HEADER as u64 + 15] {
        assert_eq!(plain_len(bad), None, "{bad}");
    }
}

#[test]
fn two_seals_of_the_same_bytes_differ() {
    let a = seal::seal(&dk(1), "k", b"same").unwrap();
    let b = seal::seal(&dk(1), "k", b"same").unwrap();
    assert_ne!(a, b, "a new salt per object");
}

fn chunk_err(r: Result<Vec<u8>, SealError>) -> SealError {
    r.expect_err("must not open")
}

#[test]
fn every_flipped_byte_wrong_key_renamed_object_is_refused() {
    let plain = data(2 * CHUNK + 100);
    let obj = seal::seal(&dk(1), "a/b", &plain).unwrap();
    for pos in [0, 8, 31, 32, 40, CHUNK + 31, CHUNK + 40, obj.len() - 1] {
        let mut bad = obj.clone();
        bad[pos] ^= 0x01;
        assert!(seal::open(&dk(1), "a/b", &bad).is_err(), "flip at {pos}");
    }
    assert_eq!(
        chunk_err(seal::open(&dk(2), "a/b", &obj)),
        SealError::Chunk { index: 0 }
    );
    assert_eq!(
        chunk_err(seal::open(&dk(1), "a/c", &obj)),
        SealError::Chunk { index: 0 }
    );
}

#[test]
fn truncated_extended_swapped_and_spliced_chunks_are_refused() {
    let plain = data(3 * CHUNK + 5);
    let obj = seal::seal(&dk(1), "k", &plain).unwrap();
    let c = |i: u64| chunk_offset(i) as usize;
    // Cut at a chunk boundary: the new last chunk was not sealed as the last.
    let cut = &obj[..c(3)];
    assert_eq!(
        chunk_err(seal::open(&dk(1), "k", cut)),
        SealError::Chunk { index: 2 }
    );
    // Extended by a copy of a middle chunk.
    let mut longer = obj[..c(3)].to_vec();
    longer.extend_from_slice(&obj[c(1)..c(2)]);
    longer.extend_from_slice(&obj[c(3)..]);
    assert!(seal::open(&dk(1), "k", &longer).is_err());
    // Chunks 0 and 1 swapped.
    let mut swapped = obj[..c(0)].to_vec();
    swapped.extend_from_slice(&obj[c(1)..c(2)]);
    swapped.extend_from_slice(&obj[c(0)..c(1)]);
    swapped.extend_from_slice(&obj[c(2)..]);
    assert_eq!(swapped.len(), obj.len());
    assert_eq!(
        chunk_err(seal::open(&dk(1), "k", &swapped)),
        SealError::Chunk { index: 0 }
    );
    // A chunk from another sealing of the same key and bytes (another salt).
    let other = seal::seal(&dk(1), "k", &plain).unwrap();
    let mut spliced = obj.clone();
    spliced[c(1)..c(2)].copy_from_slice(&other[c(1)..c(2)]);
    assert_eq!(
        chunk_err(seal::open(&dk(1), "k", &spliced)),
        SealError::Chunk { index: 1 }
    );
    // A tag shorter than its size: not a sealed length.
    assert!(matches!(
        seal::open(&dk(1), "k", &obj[..obj.len() - TAG + 1]),
        Err(SealError::BadLength(_))
    ));
}

#[test]
fn the_streaming_sealer_writes_what_open_reads() {
    for len in SIZES {
        let plain = data(len);
        let mut s = seal::Sealer::new(&dk(3), "x/y").unwrap();
        let mut out = Vec::new();
        for piece in plain.chunks(1000 + len / 7) {
            s.write(piece);
            out.extend(s.take_output());
        }
        out.extend(s.finish());
        assert_eq!(seal::open(&dk(3), "x/y", &out).unwrap(), plain, "{len}");
    }
}

fn key_file(text: &str) -> KeyFile {
    KeyFile::from_bytes(Path::new("/k"), text.as_bytes().to_vec()).unwrap()
}

const HEX_A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const HEX_B: &str = "ff112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

#[test]
fn raw_keys_and_passphrases_unwrap_only_with_their_own_key_file() {
    let (ring, key) = Keyring::create(&key_file(&format!("{HEX_A}\n"))).unwrap();
    assert_eq!(ring.kek, KekSpec::Raw);
    assert_eq!(ring.unwrap_key(&key_file(HEX_A), "r").unwrap().0, key.0);
    for wrong in [HEX_B, "a passphrase"] {
        let e = ring.unwrap_key(&key_file(wrong), "r").unwrap_err();
        assert!(matches!(e, CryptError::WrongKey { .. }), "{e}");
        assert!(e.to_string().contains("raw key"), "{e}");
    }

    let (ring, key) = Keyring::create(&key_file("correct horse battery staple\n")).unwrap();
    assert!(matches!(
        ring.kek,
        KekSpec::Argon2id {
            m_kib: 65536,
            t: 3,
            p: 4,
            ..
        }
    ));
    let again = ring
        .unwrap_key(&key_file("correct horse battery staple"), "r")
        .unwrap();
    assert_eq!(again.0, key.0);
    let e = ring
        .unwrap_key(&key_file("correct horse battery stapl"), "r")
        .unwrap_err();
    assert!(e.to_string().contains("passphrase"), "{e}");

    assert!(matches!(
        KeyFile::from_bytes(Path::new("/k"), b"\n".to_vec()),
        Err(CryptError::KeyFileEmpty { .. })
    ));
}

fn local(dir: &Path) -> Arc<dyn Storage> {
    Arc::new(LocalFs::create(dir).unwrap())
}

#[tokio::test]
async fn the_wrapper_reads_ranges_sizes_and_uploads_as_plaintext_but_stores_none() {
    let dir = tempfile::tempdir().unwrap();
    let raw = local(dir.path());
    let enc = EncryptedStorage::new(raw.clone(), dk(9));
    let plain = data(4 * CHUNK + 333);
    enc.put("a/obj", Bytes::from(plain.clone()), PutMode::Create)
        .await
        .unwrap();
    let mut up = enc.upload("a/up").await.unwrap();
    for piece in plain.chunks(100_000) {
        up.write(Bytes::copy_from_slice(piece)).await.unwrap();
    }
    up.finish(PutMode::Create).await.unwrap();
    for key in ["a/obj", "a/up"] {
        assert_eq!(enc.get(key).await.unwrap().unwrap(), plain);
        assert_eq!(
            enc.head(key).await.unwrap().unwrap().size,
            plain.len() as u64
        );
        for r in [
            0..10,
            CHUNK as u64 - 3..CHUNK as u64 + 3,
            5..(4 * CHUNK + 333) as u64,
            100..10_000_000,
        ] {
            let want = &plain[r.start as usize..(r.end as usize).min(plain.len())];
            assert_eq!(
                &enc.get_range(key, r.clone()).await.unwrap().unwrap()[..],
                want,
                "{r:?}"
            );
        }
        let stored = raw.get(key).await.unwrap().unwrap();
        assert!(stored.starts_with(seal::SEAL_MAGIC));
        for at in [0, CHUNK - 10, 3 * CHUNK + 200] {
            let window = &plain[at..at + 64];
            assert!(
                !stored.windows(64).any(|w| w == window),
                "{key}: plaintext at {at}"
            );
        }
    }
    let listed = enc.list("a/").await.unwrap();
    assert!(
        listed.iter().all(|o| o.size == plain.len() as u64),
        "{listed:?}"
    );
    assert!(enc.get("a/none").await.unwrap().is_none());
    assert!(enc.get_range("a/none", 0..1).await.unwrap().is_none());
    // The key object is never written through the wrapper.
    assert!(matches!(
        enc.put(KEYRING_KEY, Bytes::new(), PutMode::Overwrite).await,
        Err(StorageError::InvalidKey(_))
    ));
    // A copy under another name does not open.
    raw.put(
        "a/copy",
        raw.get("a/obj").await.unwrap().unwrap(),
        PutMode::Create,
    )
    .await
    .unwrap();
    let e = enc.get("a/copy").await.unwrap_err();
    assert!(matches!(e, StorageError::Unauthentic { .. }), "{e}");
    assert!(e.to_string().contains("a/copy"), "{e}");
}

#[tokio::test]
async fn a_repository_keeps_its_key_refuses_others_and_seals_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(HEX_A);
    let repo = Repo::open_with_key(local(dir.path()), Some(&key))
        .await
        .unwrap();
    assert!(repo.encrypted());
    repo.ensure_marker().await.unwrap();
    let cluster = repo.cluster("main").unwrap();
    let id = crate::ClusterIdentity {
        system_id: 7,
        pg_major: 17,
        wal_seg_size: 1 << 24,
    };
    cluster.register(&id).await.unwrap();
    let name = pitr_pg::WalFileName::parse("000000010000000000000001").unwrap();
    let seg = data(1 << 20);
    let put = cluster
        .put_wal(&name, &seg, Compression::Zstd(1))
        .await
        .unwrap();
    assert!(matches!(put, WalPut::Stored { .. }));
    // An identical re-push is told from a different one through the sealed trailer.
    let again = cluster
        .put_wal(&name, &seg, Compression::Lz4)
        .await
        .unwrap();
    assert!(matches!(again, WalPut::Duplicate { .. }));
    let mut other = seg.clone();
    other[5] ^= 1;
    assert!(matches!(
        cluster.put_wal(&name, &other, Compression::Zstd(1)).await,
        Err(RepoError::WalConflict { .. })
    ));

    // Reopened: with the key, everything reads; without, or with another, nothing does.
    let reopened = Repo::open_with_key(local(dir.path()), Some(&key))
        .await
        .unwrap();
    let c2 = reopened.cluster("main").unwrap();
    assert_eq!(c2.identity().await.unwrap(), Some(id));
    assert_eq!(c2.get_wal(&name).await.unwrap().unwrap(), seg);
    let e = Repo::open(local(dir.path())).await.unwrap_err();
    assert!(
        matches!(e, RepoError::Crypt(CryptError::MissingKey { .. })),
        "{e}"
    );
    let e = Repo::open_with_key(local(dir.path()), Some(&key_file(HEX_B)))
        .await
        .unwrap_err();
    assert!(
        matches!(e, RepoError::Crypt(CryptError::WrongKey { .. })),
        "{e}"
    );

    // Only the key object is in clear.
    for entry in walk(dir.path()) {
        let bytes = std::fs::read(&entry).unwrap();
        if entry.ends_with(KEYRING_KEY) {
            assert!(!bytes
                .windows(32)
                .any(|w| w == repo_dk_bytes(&key, dir.path())));
            continue;
        }
        assert!(
            bytes.starts_with(seal::SEAL_MAGIC),
            "{entry:?} is not sealed"
        );
    }

    // An unencrypted repository refuses a key.
    let plain_dir = tempfile::tempdir().unwrap();
    Repo::open(local(plain_dir.path()))
        .await
        .unwrap()
        .ensure_marker()
        .await
        .unwrap();
    let e = Repo::open_with_key(local(plain_dir.path()), Some(&key))
        .await
        .unwrap_err();
    assert!(
        matches!(e, RepoError::Crypt(CryptError::UnexpectedKey { .. })),
        "{e}"
    );
}

fn repo_dk_bytes(key: &KeyFile, dir: &Path) -> [u8; 32] {
    let text = std::fs::read(dir.join(KEYRING_KEY)).unwrap();
    let ring: Keyring = crate::meta::decode("encryption", &text).unwrap();
    ring.unwrap_key(key, "r").unwrap().0
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
