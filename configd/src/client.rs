//! One request to one config daemon, with errors that say which box and what to check.

use std::net::SocketAddr;
use std::time::Duration;

use crate::net::{self, Tls};
use crate::wire::{self, Request, Response, WireError};

/// Why a box did not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    #[error(
        "cannot connect to box {name} at {addr}: {source} (is `popnet configd` running there, and reachable?)"
    )]
    Connect {
        name: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("box {name} at {addr}: sending failed: {source}")]
    Send {
        name: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("box {name} at {addr} did not answer within {:.1} s", .waited.as_secs_f64())]
    Timeout {
        name: String,
        addr: SocketAddr,
        waited: Duration,
    },
    #[error("box {name} at {addr}: {source}")]
    Receive {
        name: String,
        addr: SocketAddr,
        #[source]
        source: WireError,
    },
    #[error("box {name} at {addr} refused: {message}")]
    Refused {
        name: String,
        addr: SocketAddr,
        message: String,
    },
    #[error("box {name} at {addr} answered something else than {wanted}")]
    Unexpected {
        name: String,
        addr: SocketAddr,
        wanted: &'static str,
    },
}

/// Sends `req` to the configd of box `name` at `addr` and waits at most `timeout` for
/// the connection and for the answer each. An [`Response::Error`] becomes
/// [`CallError::Refused`].
pub fn call(
    addr: SocketAddr,
    name: &str,
    tls: Option<&Tls>,
    req: &Request,
    timeout: Duration,
) -> Result<Response, CallError> {
    let mut s = net::connect(addr, name, tls, timeout).map_err(|source| CallError::Connect {
        name: name.to_string(),
        addr,
        source,
    })?;
    wire::write_frame(&mut s, req).map_err(|source| CallError::Send {
        name: name.to_string(),
        addr,
        source,
    })?;
    match wire::read_frame::<Response>(&mut s) {
        Ok(Response::Error { message }) => Err(CallError::Refused {
            name: name.to_string(),
            addr,
            message,
        }),
        Ok(r) => Ok(r),
        Err(WireError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(CallError::Timeout {
                name: name.to_string(),
                addr,
                waited: timeout,
            })
        }
        Err(source) => Err(CallError::Receive {
            name: name.to_string(),
            addr,
            source,
        }),
    }
}
