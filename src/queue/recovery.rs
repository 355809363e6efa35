//! Checks made before SQLite touches the file, and setting a bad file aside
//! (SPEC §5.1).
//!
//! SQLite replays a `-wal` beside the database whenever its header and frame
//! checksums are valid, whichever database wrote it: a stale WAL of another
//! database with the same page size is applied silently, and the queued rows
//! vanish. It cannot tell, because a WAL names no database. Ours do: every
//! write transaction of this module touches the `meta` page, which holds
//! the file id (also in the database header as `application_id`), so every
//! committed transaction in our WAL carries `metricsd-queue-id:<id>`.

use super::schema::MARKER;
use super::{unix_now, QueueError};
use std::io::Read;
use std::path::{Path, PathBuf};

/// `<path><suffix>`, e.g. `queue.db-wal`.
pub(super) fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// The main file plus its WAL, in bytes (0 for files that do not exist).
pub fn file_bytes(path: &Path) -> u64 {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    len(path) + len(&sidecar(path, "-wal"))
}

/// Refuses a file that does not start like an SQLite database before SQLite
/// opens it (SQLite would delete a stale `-wal` beside it).
pub(super) fn check_header(path: &Path) -> Result<(), QueueError> {
    const MAGIC: &[u8; 16] = b"SQLite format 3\0";
    let head = match read_prefix(path, 16) {
        Some(Ok(head)) => head,
        // Missing or unreadable: SQLite creates it or gives the error.
        None => return Ok(()),
        Some(Err(source)) => {
            return Err(QueueError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if head.is_empty() || head == MAGIC {
        Ok(())
    } else {
        Err(QueueError::NotADatabase {
            path: path.to_path_buf(),
            reason: "the file does not start with the SQLite header".to_string(),
        })
    }
}

/// The first `n` bytes (fewer if the file is shorter); None if it cannot be opened.
fn read_prefix(path: &Path, n: u64) -> Option<std::io::Result<Vec<u8>>> {
    let file = std::fs::File::open(path).ok()?;
    let mut head = Vec::new();
    Some(file.take(n).read_to_end(&mut head).map(|_| head))
}

/// The daemon must be able to write every file of the queue and create its
/// WAL: a read-only or immutable file (or directory, or mount) would
/// otherwise open read-only and fail every insert. Root passes permission
/// bits, but not the immutable flag or a read-only mount, which `access`
/// reports either way.
pub(super) fn check_writable(path: &Path) -> Result<(), QueueError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let candidates = [
        dir,
        path.to_path_buf(),
        sidecar(path, "-wal"),
        sidecar(path, "-shm"),
    ];
    for candidate in candidates {
        if !candidate.exists() {
            continue;
        }
        let c_path = match std::ffi::CString::new(candidate.as_os_str().as_encoded_bytes()) {
            Ok(c) => c,
            Err(_) => continue,
        };
        // SAFETY: a valid NUL-terminated path; access only reads it.
        if unsafe { libc::access(c_path.as_ptr(), libc::W_OK) } != 0 {
            return Err(QueueError::Unwritable {
                path: candidate,
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

/// What the WAL beside a database says about its owner.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct WalOwners {
    /// File ids named by committed transactions.
    pub ids: Vec<u32>,
    /// Committed transactions that name no file id.
    pub unmarked: usize,
}

/// Refuses a WAL that belongs to another database (see the module doc).
/// Only transactions SQLite would replay count: valid salts and checksums,
/// up to the last commit frame.
pub(super) fn check_wal(path: &Path) -> Result<(), QueueError> {
    let wal_path = sidecar(path, "-wal");
    let wal = match std::fs::read(&wal_path) {
        Ok(bytes) => bytes,
        Err(_) => return Ok(()),
    };
    let Some(db_id) = database_id(path) else {
        // A new file (its id still in the WAL) or one of schema 1.
        return Ok(());
    };
    let owners = wal_owners(&wal);
    let foreign: Vec<u32> = owners
        .ids
        .iter()
        .copied()
        .filter(|id| *id != db_id)
        .collect();
    // A WAL is one run of frames under one pair of salts: once one of its
    // transactions names this file, the unmarked ones beside it are this
    // file's too (an earlier build did not mark its migrations).
    if foreign.is_empty() && (owners.unmarked == 0 || owners.ids.contains(&db_id)) {
        return Ok(());
    }
    let reason = if let Some(other) = foreign.first() {
        format!(
            "its WAL was written by another queue (file id {other:08x}, this file is {db_id:08x})"
        )
    } else {
        format!(
            "its WAL holds {} transaction(s) not written by this queue (file id {db_id:08x})",
            owners.unmarked
        )
    };
    Err(QueueError::ForeignWal {
        path: path.to_path_buf(),
        reason,
    })
}

/// The database header's `application_id`, where schema 2 keeps the file id.
fn database_id(path: &Path) -> Option<u32> {
    let head = read_prefix(path, 100)?.ok()?;
    if head.len() < 100 || !head.starts_with(b"SQLite format 3\0") {
        return None;
    }
    let id = u32::from_be_bytes(head[68..72].try_into().ok()?);
    (id != 0).then_some(id)
}

/// Walks a WAL as SQLite recovers it (file format §4: header, then frames
/// whose salts match and whose checksums chain) and collects the file ids
/// of the committed transactions.
pub(super) fn wal_owners(wal: &[u8]) -> WalOwners {
    const HEADER: usize = 32;
    const FRAME_HEADER: usize = 24;
    let mut owners = WalOwners::default();
    if wal.len() < HEADER {
        return owners;
    }
    let be = |at: usize| u32::from_be_bytes(wal[at..at + 4].try_into().expect("4 bytes"));
    let magic = be(0);
    if magic & !1 != 0x377f_0682 {
        return owners;
    }
    let big_endian = magic & 1 == 1;
    let page_size = match be(8) {
        1 => 65536,
        n => n as usize,
    };
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return owners;
    }
    let (salt1, salt2) = (be(16), be(20));
    let mut sum = checksum(&wal[..24], (0, 0), big_endian);
    if sum != (be(24), be(28)) {
        return owners;
    }
    let mut ids_in_transaction = Vec::new();
    let mut marked = false;
    let mut at = HEADER;
    while at + FRAME_HEADER + page_size <= wal.len() {
        let page = &wal[at + FRAME_HEADER..at + FRAME_HEADER + page_size];
        if be(at) == 0 || be(at + 8) != salt1 || be(at + 12) != salt2 {
            break;
        }
        sum = checksum(&wal[at..at + 8], sum, big_endian);
        sum = checksum(page, sum, big_endian);
        if sum != (be(at + 16), be(at + 20)) {
            break;
        }
        for id in marker_ids(page) {
            marked = true;
            ids_in_transaction.push(id);
        }
        if be(at + 4) != 0 {
            // A commit frame: the transaction counts.
            owners.ids.append(&mut ids_in_transaction);
            if !marked {
                owners.unmarked += 1;
            }
            marked = false;
        }
        at += FRAME_HEADER + page_size;
    }
    owners.ids.sort_unstable();
    owners.ids.dedup();
    owners
}

/// The WAL checksum (SQLite file format §4.3), continued from `sum`.
fn checksum(data: &[u8], sum: (u32, u32), big_endian: bool) -> (u32, u32) {
    let (mut s0, mut s1) = sum;
    for pair in data.chunks_exact(8) {
        let word = |b: &[u8]| {
            let b: [u8; 4] = b.try_into().expect("4 bytes");
            if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        s0 = s0.wrapping_add(word(&pair[..4]).wrapping_add(s1));
        s1 = s1.wrapping_add(word(&pair[4..]).wrapping_add(s0));
    }
    (s0, s1)
}

/// The file ids named in one page.
fn marker_ids(page: &[u8]) -> impl Iterator<Item = u32> + '_ {
    page.windows(MARKER.len())
        .enumerate()
        // The first byte alone rules out almost every position cheaply.
        .filter(|(_, w)| w[0] == MARKER[0] && *w == MARKER)
        .filter_map(|(i, _)| {
            let hex = page.get(i + MARKER.len()..i + MARKER.len() + 8)?;
            u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
        })
}

/// Renames a bad queue file to `<name>.corrupt-<unix time>` (its WAL
/// alongside, as `...-wal`, so the pair can still be examined) and removes
/// its shared-memory index. Returns the new name.
pub(super) fn set_aside(path: &Path) -> Result<PathBuf, QueueError> {
    let io_err = |p: &Path, source| QueueError::Io {
        path: p.to_path_buf(),
        source,
    };
    let base = format!("{}.corrupt-{}", path.display(), unix_now());
    let mut aside = PathBuf::from(&base);
    let mut n = 1;
    while aside.exists() {
        aside = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    if path.exists() {
        std::fs::rename(path, &aside).map_err(|e| io_err(path, e))?;
    }
    let wal = sidecar(path, "-wal");
    if wal.exists() {
        let to = sidecar(&aside, "-wal");
        std::fs::rename(&wal, &to).map_err(|e| io_err(&wal, e))?;
    }
    let shm = sidecar(path, "-shm");
    match std::fs::remove_file(&shm) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&shm, e)),
        _ => {}
    }
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_with_their_ids() {
        let mut page = vec![0u8; 64];
        page[10..10 + MARKER.len()].copy_from_slice(MARKER);
        page[10 + MARKER.len()..10 + MARKER.len() + 8].copy_from_slice(b"00c0ffee");
        assert_eq!(marker_ids(&page).collect::<Vec<_>>(), vec![0x00c0_ffee]);
        assert_eq!(marker_ids(&[0u8; 64]).count(), 0);
    }

    #[test]
    fn garbage_is_no_wal() {
        assert_eq!(wal_owners(&[0xAB; 5000]), WalOwners::default());
        assert_eq!(wal_owners(b"short"), WalOwners::default());
    }
}
