//! Config distribution for popnet: signed configs, `popnet configd`, the two-phase hierarchical push, recovery, local reload notices and purge through the tree.
//!
//! - [`sign`]: admin keys (ed25519, PKCS#8 PEM), the signature line of a config, signed
//!   commands.
//! - [`daemon`]: the config daemon every box runs ([`Daemon`]).
//! - [`push`]: what `popctl config push|status` and `popctl cache purge --all-pops` do,
//!   as a library ([`push::push`], [`push::sign_and_push`], [`push::status`],
//!   [`push::purge`]).
//! - [`local`]: how a local daemon (`popnet up --configd SOCKET`) gets its config and
//!   every new one, and reports how its reload went.
//! - [`wire`], [`net`], [`client`]: the frames, the TCP/TLS connections and one call.
//! - [`store`]: the durable store (write, fsync, rename).

pub mod client;
pub mod daemon;
mod http;
pub mod local;
pub mod net;
pub mod push;
pub mod sign;
pub mod store;
pub mod wire;

pub use daemon::{Daemon, DaemonError, DaemonOptions};
pub use sign::{AdminKey, Refused, SignedConfig, sign_config};
