//! The config daemons' protocol: length-prefixed JSON frames, one request and one response per connection.
//!
//! A frame is a 4-byte big-endian length and that many bytes of JSON. The first byte of a
//! plain connection is therefore 0x00 or 0x01 (frames are at most [`MAX_FRAME`] bytes),
//! never 0x16, the first byte of a TLS handshake: a daemon tells the two apart by it.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::sign::SignedCommand;

/// Largest frame read or written (a config is far smaller).
pub const MAX_FRAME: usize = 16 << 20;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the peer closed the connection before answering")]
    Closed,
    #[error("a frame of {0} bytes is larger than {MAX_FRAME}; is the peer a popnet config daemon?")]
    TooLarge(usize),
    #[error("not a valid message ({0}); is the peer a popnet config daemon of the same version?")]
    Json(#[from] serde_json::Error),
}

/// Writes `msg` as one frame.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME {
        return Err(io::Error::other(format!(
            "message of {} bytes is larger than {MAX_FRAME}",
            body.len()
        )));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame)?;
    w.flush()
}

/// Reads one frame.
pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read) -> Result<T, WireError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(e.into()),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(WireError::TooLarge(n));
    }
    let mut body = vec![0u8; n];
    r.read_exact(&mut body).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => WireError::Closed,
        _ => e.into(),
    })?;
    Ok(serde_json::from_slice(&body)?)
}

/// What a client asks a config daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request {
    /// This box's state.
    Status,
    /// The state of this box and every box below it.
    Tree { budget_ms: u64 },
    /// Phase one: hold `text` as pending, then pass it down; answers for the subtree.
    Prepare {
        cmd: SignedCommand,
        text: String,
        budget_ms: u64,
    },
    /// Phase two: switch, then pass it down.
    Commit { cmd: SignedCommand, budget_ms: u64 },
    /// Drop the pending config, then pass it down.
    Abort { cmd: SignedCommand, budget_ms: u64 },
    /// Purge the POP caches of the subtree.
    Purge { cmd: SignedCommand, budget_ms: u64 },
    /// The config this box runs (recovery of a box that missed a commit).
    Fetch,
}

/// A config daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Response {
    Status {
        status: Box<BoxStatus>,
    },
    /// One report per box of the subtree that was asked (this box first).
    Boxes {
        boxes: Vec<BoxReport>,
    },
    Config {
        text: String,
    },
    Error {
        message: String,
    },
}

/// The config a box runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    pub version: u32,
    /// SHA-256 of the signed file.
    pub digest: String,
    /// The admin who signed it.
    pub signer: String,
    /// When this box switched to it (unix ms).
    pub since_ms: u64,
}

/// The config a box holds for a push that is not decided yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub version: u32,
    pub digest: String,
    pub push: String,
    pub signer: String,
    pub since_ms: u64,
}

/// A local daemon told about configs by this box's configd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalDaemon {
    pub role: String,
    pub pid: u32,
    /// The version it last reported on.
    pub version: Option<u32>,
    /// Whether that reload worked.
    pub ok: Option<bool>,
    pub message: Option<String>,
}

/// One box's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoxStatus {
    pub name: String,
    pub pop: Option<String>,
    pub running: Running,
    pub pending: Option<Pending>,
    /// The last thing that went wrong (a refused config, a failed recovery).
    pub last_error: Option<String>,
    pub local: Vec<LocalDaemon>,
}

/// How one box fared in an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done.
    Ok,
    /// The box answered that it could not.
    Failed,
    /// No answer from the box (down, cut off, too slow), or never asked because the
    /// box above it failed.
    Unreached,
}

/// One box's part of an operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoxReport {
    pub name: String,
    pub outcome: Outcome,
    pub message: String,
    /// The box's state after the operation, when it answered.
    pub status: Option<BoxStatus>,
    /// When the box did it (unix ms, its clock).
    pub at_ms: u64,
    /// Purge: the POP whose cache it purged, and how many objects.
    pub pop: Option<String>,
    pub purged: Option<u64>,
}

impl BoxReport {
    pub fn unreached(name: &str, message: impl Into<String>) -> BoxReport {
        BoxReport {
            name: name.to_string(),
            outcome: Outcome::Unreached,
            message: message.into(),
            status: None,
            at_ms: 0,
            pop: None,
            purged: None,
        }
    }
}

/// Messages between configd and a local daemon on the local socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Local {
    /// Daemon → configd, first: who it is.
    Subscribe { role: String, pid: u32 },
    /// configd → daemon: the config to run (at once, then on every switch).
    Config { version: u32, text: String },
    /// Daemon → configd: how the reload of `version` went.
    Reloaded {
        version: u32,
        ok: bool,
        message: String,
    },
}
