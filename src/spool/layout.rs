//! Names and places on disk: shard directories, segment files, quarantine
//! files, the lock file, and listing them. It never opens or changes a file.

use std::io;
use std::path::{Path, PathBuf};

use super::id::SegmentId;

/// `<spool_dir>/shard-<N>`.
pub(crate) fn shard_dir(spool_dir: &Path, shard: u8) -> PathBuf {
    spool_dir.join(format!("shard-{shard}"))
}

/// `<spool_dir>/shard-<N>/<seq, 8 digits>.seg`.
pub(crate) fn segment_path(spool_dir: &Path, seg: SegmentId) -> PathBuf {
    shard_dir(spool_dir, seg.shard).join(format!("{:08}.seg", seg.seq))
}

/// `<spool_dir>/spool.lock`: held by the one server of the spool.
pub(crate) fn lock_path(spool_dir: &Path) -> PathBuf {
    spool_dir.join("spool.lock")
}

/// `<spool_dir>/quarantine`.
pub(crate) fn quarantine_dir(spool_dir: &Path) -> PathBuf {
    spool_dir.join("quarantine")
}

/// `<spool_dir>/quarantine/shard-<N>-<seq>-<offset>.rec`: unique per
/// damaged record, so quarantining the same record again after another
/// restart overwrites instead of piling up.
pub(crate) fn quarantine_path(spool_dir: &Path, seg: SegmentId, offset: u64) -> PathBuf {
    quarantine_dir(spool_dir).join(format!(
        "shard-{}-{:08}-{offset:010}.rec",
        seg.shard, seg.seq
    ))
}

/// Shard numbers that have a directory, ascending. A missing spool
/// directory has no shards.
pub(crate) fn list_shards(spool_dir: &Path) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(spool_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix("shard-"))
            .and_then(|n| n.parse::<u8>().ok())
        else {
            continue;
        };
        if entry.file_type()?.is_dir() {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Segments of one shard directory, in sequence order. Other files are
/// ignored; a missing directory has none.
pub(crate) fn list_segments(spool_dir: &Path, shard: u8) -> io::Result<Vec<SegmentId>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(shard_dir(spool_dir, shard)) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
            continue;
        };
        if stem.len() != 8 || !stem.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(seq) = stem.parse::<u32>() {
            if seq <= SegmentId::MAX_SEQ {
                out.push(SegmentId { shard, seq });
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Bytes of every segment file under the spool directory, as the disk
/// holds them (allocated blocks: preallocated space counts). Files that
/// vanish while being looked at (reclaimed) are skipped.
pub fn disk_usage(spool_dir: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    for shard in list_shards(spool_dir)? {
        for seg in list_segments(spool_dir, shard)? {
            match std::fs::metadata(segment_path(spool_dir, seg)) {
                Ok(m) => total += m.blocks() * 512,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_usage_counts_segment_files_only() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(disk_usage(&dir.path().join("missing")).unwrap(), 0);
        let seg = segment_path(dir.path(), SegmentId { shard: 1, seq: 7 });
        std::fs::create_dir_all(seg.parent().unwrap()).unwrap();
        std::fs::write(&seg, vec![1u8; 64 * 1024]).unwrap();
        let one = disk_usage(dir.path()).unwrap();
        assert!(one >= 64 * 1024, "{one}");
        std::fs::write(seg.with_file_name("notes.txt"), vec![1u8; 64 * 1024]).unwrap();
        std::fs::write(dir.path().join("control.sock"), b"x").unwrap();
        assert_eq!(disk_usage(dir.path()).unwrap(), one, "other files ignored");
    }
}
