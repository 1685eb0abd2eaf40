//! The local daemon's side of configd's Unix socket: get the running config, wait for the next one, say how the reload went.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::wire::{self, Local, WireError};

/// Why the local socket failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalError {
    #[error(
        "cannot connect to configd at {path}: {source} (is `popnet configd` running on this box? its socket is <state dir>/configd.sock)"
    )]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("configd at {path}: {source}")]
    Wire {
        path: PathBuf,
        #[source]
        source: WireError,
    },
    #[error("configd at {path} sent something else than a config")]
    Unexpected { path: PathBuf },
}

/// A config sent by configd.
#[derive(Debug, Clone)]
pub struct Update {
    pub version: u32,
    /// The signed file (a valid config: the signature is a comment).
    pub text: String,
}

/// A subscription to this box's configd.
pub struct Subscription {
    stream: UnixStream,
    path: PathBuf,
}

impl Subscription {
    /// Subscribes as `role` (shown in `popctl config status`); returns the running
    /// config.
    pub fn connect(path: &Path, role: &str) -> Result<(Subscription, Update), LocalError> {
        let mut stream = UnixStream::connect(path).map_err(|source| LocalError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let wire_err = |source| LocalError::Wire {
            path: path.to_path_buf(),
            source,
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| wire_err(e.into()))?;
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| wire_err(e.into()))?;
        wire::write_frame(
            &mut stream,
            &Local::Subscribe {
                role: role.to_string(),
                pid: std::process::id(),
            },
        )
        .map_err(|e| wire_err(e.into()))?;
        let mut sub = Subscription {
            stream,
            path: path.to_path_buf(),
        };
        let first = sub.recv()?;
        sub.stream
            .set_read_timeout(None)
            .map_err(|e| wire_err(e.into()))?;
        Ok((sub, first))
    }

    /// Waits for the next config.
    pub fn recv(&mut self) -> Result<Update, LocalError> {
        match wire::read_frame::<Local>(&mut self.stream) {
            Ok(Local::Config { version, text }) => Ok(Update { version, text }),
            Ok(_) => Err(LocalError::Unexpected {
                path: self.path.clone(),
            }),
            Err(source) => Err(LocalError::Wire {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Tells configd how the reload of `version` went (`Err` = kept the old config,
    /// and why).
    pub fn report(
        &mut self,
        version: u32,
        result: Result<String, String>,
    ) -> Result<(), LocalError> {
        let (ok, message) = match result {
            Ok(m) => (true, m),
            Err(m) => (false, m),
        };
        wire::write_frame(
            &mut self.stream,
            &Local::Reloaded {
                version,
                ok,
                message,
            },
        )
        .map_err(|e| LocalError::Wire {
            path: self.path.clone(),
            source: e.into(),
        })
    }
}
