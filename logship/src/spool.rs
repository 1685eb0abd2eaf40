//! The sender's disk spool: every sealed batch is a file until its log server acknowledges it.
//!
//! One directory per destination holds `stream` (the stream id, hex, made once),
//! `next` (the next sequence number) and one `<seq>.pnlb` file per unacknowledged
//! batch, the frame exactly as sent. Files are written to a temporary name, synced and
//! renamed, so a crash leaves whole batches or none; `.tmp` leftovers are removed at
//! open. Numbers continue across restarts, so the log server's duplicate check holds.
//! One process at a time: `lock` is held with an exclusive flock while the spool is
//! open (two senders on one stream would reuse each other's numbers and delete each
//! other's batches).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::wire::StreamId;

/// Why the spool cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("spool {path}: {why}; remove the file to start a new stream")]
    Corrupt { path: PathBuf, why: String },
    #[error(
        "spool {path} is in use by another process (a second daemon of the same POP and role?); stop that one, or give this one another [logs] spool_dir"
    )]
    InUse { path: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One destination's spool.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    stream: StreamId,
    next: u64,
    /// Pending batches: seq → file size.
    pending: BTreeMap<u64, u64>,
    bytes: u64,
    /// Holds the directory's flock while the spool is open.
    _lock: File,
}

fn write_synced(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_data()?;
    }
    fs::rename(&tmp, path)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Spool {
    /// Opens (or creates) the spool in `dir`.
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::InUse {
                    path: dir.to_path_buf(),
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        let stream_path = dir.join("stream");
        let stream = match fs::read_to_string(&stream_path) {
            Ok(text) => {
                let mut s = [0u8; 16];
                hex::decode_to_slice(text.trim(), &mut s).map_err(|e| SpoolError::Corrupt {
                    path: stream_path.clone(),
                    why: format!("not a 32-digit hex stream id ({e})"),
                })?;
                s
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut s = [0u8; 16];
                getrandom::fill(&mut s).map_err(|e| SpoolError::Io {
                    path: stream_path.clone(),
                    source: io::Error::other(e.to_string()),
                })?;
                write_synced(&stream_path, hex::encode(s).as_bytes())
                    .map_err(io_err(&stream_path))?;
                sync_dir(dir).map_err(io_err(dir))?;
                s
            }
            Err(e) => return Err(io_err(&stream_path)(e)),
        };
        let next_path = dir.join("next");
        let mut next = match fs::read_to_string(&next_path) {
            Ok(t) => t.trim().parse::<u64>().map_err(|e| SpoolError::Corrupt {
                path: next_path.clone(),
                why: format!("not a sequence number ({e})"),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 1,
            Err(e) => return Err(io_err(&next_path)(e)),
        };
        let mut pending = BTreeMap::new();
        let mut bytes = 0;
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            if let Some(seq) = name
                .strip_suffix(".pnlb")
                .and_then(|s| s.parse::<u64>().ok())
            {
                let len = entry.metadata().map_err(io_err(&path))?.len();
                pending.insert(seq, len);
                bytes += len;
                next = next.max(seq + 1);
            }
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            stream,
            next: next.max(1),
            pending,
            bytes,
            _lock: lock,
        })
    }

    pub fn stream(&self) -> StreamId {
        self.stream
    }

    fn file(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.pnlb"))
    }

    /// The number the next batch gets.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// Stores the frame of batch [`Spool::next_seq`] durably and advances the number.
    pub fn push(&mut self, seq: u64, frame: &[u8]) -> Result<(), SpoolError> {
        debug_assert_eq!(seq, self.next);
        let path = self.file(seq);
        write_synced(&path, frame).map_err(io_err(&path))?;
        let next_path = self.dir.join("next");
        write_synced(&next_path, (seq + 1).to_string().as_bytes()).map_err(io_err(&next_path))?;
        sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        self.next = seq + 1;
        self.pending.insert(seq, frame.len() as u64);
        self.bytes += frame.len() as u64;
        Ok(())
    }

    /// The frame of a pending batch.
    pub fn read(&self, seq: u64) -> Result<Vec<u8>, SpoolError> {
        let path = self.file(seq);
        fs::read(&path).map_err(io_err(&path))
    }

    /// Removes an acknowledged (or dropped) batch.
    pub fn remove(&mut self, seq: u64) -> Result<(), SpoolError> {
        if let Some(len) = self.pending.remove(&seq) {
            self.bytes -= len;
            let path = self.file(seq);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Ok(())
    }

    /// Moves a batch that cannot be sent aside (`.bad`), out of the queue.
    pub fn quarantine(&mut self, seq: u64) {
        if let Some(len) = self.pending.remove(&seq) {
            self.bytes -= len;
            let path = self.file(seq);
            let _ = fs::rename(&path, path.with_extension("bad"));
        }
    }

    /// Pending sequence numbers after `after`, in order.
    pub fn pending_after(&self, after: u64) -> impl Iterator<Item = u64> + '_ {
        self.pending
            .range(after.saturating_add(1)..)
            .map(|(s, _)| *s)
    }

    pub fn oldest(&self) -> Option<u64> {
        self.pending.keys().next().copied()
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_batches_survive_a_reopen() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d.path()).unwrap();
        let stream = s.stream();
        for i in 0..3u8 {
            let seq = s.next_seq();
            s.push(seq, &[i; 10]).unwrap();
        }
        assert_eq!(s.len(), 3);
        assert_eq!(s.bytes(), 30);
        s.remove(1).unwrap();
        drop(s);
        fs::write(d.path().join("00000000000000000009.tmp"), b"torn").unwrap();
        let mut s = Spool::open(d.path()).unwrap();
        assert_eq!(s.stream(), stream);
        assert_eq!(s.pending_after(0).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(s.read(3).unwrap(), vec![2u8; 10]);
        assert_eq!(s.next_seq(), 4);
        assert!(!d.path().join("00000000000000000009.tmp").exists());
        // Every batch acknowledged: the number still continues.
        s.remove(2).unwrap();
        s.remove(3).unwrap();
        drop(s);
        let s = Spool::open(d.path()).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.next_seq(), 4);
    }

    #[test]
    fn a_second_opener_is_refused_until_the_first_closes() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        let e = Spool::open(d.path()).unwrap_err();
        assert!(matches!(e, SpoolError::InUse { .. }), "{e}");
        assert!(e.to_string().contains("spool_dir"), "{e}");
        drop(s);
        Spool::open(d.path()).unwrap();
    }

    #[test]
    fn a_corrupt_stream_id_is_an_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("stream"), "zz").unwrap();
        let e = Spool::open(d.path()).unwrap_err().to_string();
        assert!(e.contains("stream") && e.contains("hex"), "{e}");
    }
}
