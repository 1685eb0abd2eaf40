//! The durable store of a config daemon: one state file written whole (write, fsync, rename, fsync the directory), and a lock.
//!
//! `state.json` holds the running config and the pending one (their signed texts and
//! what the box knows about them). Replacing that one file is the atomic step of every
//! change: after a crash the box runs exactly the old or exactly the new config, never
//! half of one. `running.toml` is a copy of the running config for daemons that read a
//! file (`popnet up --config DIR/running.toml`, reloaded on SIGHUP); it is written after
//! the state file and is never read back by configd.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::wire::{Pending, Running};

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is locked by another process (is another `popnet configd` using this state directory?)"
    )]
    Locked { path: PathBuf },
    #[error("{path} is damaged ({reason}); move it away and start configd with --bootstrap FILE")]
    Damaged { path: PathBuf, reason: String },
}

/// A config held by the store: its signed text and what is known of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored<M> {
    pub meta: M,
    pub text: String,
}

/// Everything the store holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub running: Stored<Running>,
    pub pending: Option<Stored<Pending>>,
}

/// The state directory of one config daemon.
pub struct Store {
    dir: PathBuf,
    _lock: File,
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Store {
    /// Opens (creating) the directory and takes its lock.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(if e.kind() == io::ErrorKind::WouldBlock {
                StoreError::Locked { path: lock_path }
            } else {
                StoreError::Io {
                    path: lock_path,
                    source: e,
                }
            });
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Path of the copy of the running config.
    pub fn running_path(&self) -> PathBuf {
        self.dir.join("running.toml")
    }

    /// The stored state, if any.
    pub fn load(&self) -> Result<Option<State>, StoreError> {
        let path = self.state_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Damaged {
                path,
                reason: e.to_string(),
            })
    }

    /// Replaces the state durably, then refreshes `running.toml`.
    pub fn save(&self, state: &State) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(state).map_err(|e| StoreError::Io {
            path: self.state_path(),
            source: io::Error::other(e),
        })?;
        write_atomic(&self.state_path(), &bytes)?;
        let copy = self.running_path();
        let same = std::fs::read(&copy).is_ok_and(|b| b == state.running.text.as_bytes());
        if !same {
            write_atomic(&copy, state.running.text.as_bytes())?;
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` so that a crash leaves the old or the new content: a
/// temporary file in the same directory, fsync, rename over, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(v: u32) -> State {
        State {
            running: Stored {
                meta: Running {
                    version: v,
                    digest: "d".into(),
                    signer: "alice".into(),
                    since_ms: 1,
                },
                text: format!("version {v}\n"),
            },
            pending: None,
        }
    }

    #[test]
    fn saves_loads_and_locks() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert!(s.load().unwrap().is_none());
        s.save(&state(3)).unwrap();
        assert_eq!(s.load().unwrap().unwrap().running.meta.version, 3);
        assert_eq!(
            std::fs::read_to_string(s.running_path()).unwrap(),
            "version 3\n"
        );
        match Store::open(dir.path()) {
            Err(StoreError::Locked { .. }) => {}
            other => panic!("a second store on the same directory: {:?}", other.err()),
        }
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.load().unwrap().unwrap().running.meta.version, 3);
    }

    #[test]
    fn a_damaged_state_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.json"), b"{\"running\":").unwrap();
        let s = Store::open(dir.path()).unwrap();
        let e = s.load().unwrap_err().to_string();
        assert!(e.contains("state.json is damaged"), "{e}");
        assert!(e.contains("--bootstrap"), "{e}");
    }
}
