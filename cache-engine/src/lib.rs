//! popnet's HTTP cache: HTTP/1.1 over io_uring in front of customer origins, with a RAM tier, a disk tier, coalesced origin fetches and purge.
//!
//! [`CacheServer::start`] builds the cache of this box's POP from a
//! [`popnet_config::Config`]: the host routes ([`routes`]), the tiered store
//! ([`store`]: a sharded RAM tier with S3-FIFO eviction in front of an optional
//! log-structured disk tier, [`store::disk`]), the miss lock and in-flight fetches ([`coalesce`]), the origin fetchers
//! ([`origin`], [`selector`]), one io_uring event loop per core ([`worker`], with
//! every `unsafe` in [`uring`]) and the admin listener ([`admin`]). HTTP caching
//! follows RFC 9111 ([`object`], [`http`], [`key`]); every request is counted
//! ([`stats`]) and, if configured, logged ([`access_log`]). [`demo_origin`] is a
//! small real origin for `popnet up` and the tests.

pub mod access_log;
pub mod admin;
pub mod coalesce;
pub mod demo_origin;
pub mod http;
pub mod key;
pub mod object;
pub mod origin;
pub mod purge;
pub mod reload;
pub mod routes;
pub mod selector;
pub mod server;
pub mod stats;
pub mod store;
pub mod uring;
pub mod worker;

pub use access_log::{LineSink, LogSink};
pub use admin::{ObjectInfo, ObjectReply, PurgeReply, StatsReply};
pub use purge::Purge;
pub use reload::{CacheReload, ReloadError};
pub use server::{CacheOptions, CacheServer, StartError};
