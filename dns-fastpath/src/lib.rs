//! popnet's authoritative DNS server: catalog, selector, answer table, UDP/TCP servers.
//!
//! [`DnsServer::start`] compiles a [`popnet_config::Config`] into a [`catalog::Catalog`],
//! starts the control loop that turns metric reports into selections and answer tables
//! ([`control`]), and the query workers that answer from the current table
//! ([`udp`], [`tcp`], [`respond`]).

pub mod admin;
pub mod answer;
pub mod catalog;
pub mod control;
pub mod dnslog;
pub mod metrics;
pub mod reload;
pub mod resolvers;
pub mod respond;
pub mod selector;
pub mod server;
pub mod stats;
mod sys;
pub mod tally;
pub mod tcp;
pub mod udp;
pub mod views;
pub mod xdp;

pub use admin::{StatsReply, XdpReport};
pub use logship::{LineSink, LogSink};
pub use reload::{DnsReload, ReloadError};
pub use server::{DnsOptions, DnsServer, StartError};
