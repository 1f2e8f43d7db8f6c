//! The repository's decoders on arbitrary bytes (a repository is untrusted input): frames
//! (`frame::decode_into`, which checks the checksum as it decodes) and metadata objects
//! (`meta::decode` of a backup manifest, a cluster identity and the repository marker).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pitr_repo::{frame, meta, BackupManifest, ClusterIdentity, RepoMarker};

fuzz_target!(|data: &[u8]| {
    let _ = frame::decode_into(data, &mut std::io::sink());
    if let Ok(m) = meta::decode::<BackupManifest>("backup", data) {
        let _ = (m.start(), m.stop(), m.total_size());
    }
    let _ = meta::decode::<ClusterIdentity>("cluster", data);
    let _ = meta::decode::<RepoMarker>("repository", data);
});
