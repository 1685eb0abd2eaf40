//! Log shipping: the records of the DNS servers, caches and probes, sent in numbered, acknowledged batches to the log servers.
//!
//! - [`record`]: the record types, one JSON object per line, each naming its customer;
//! - [`wire`]: the batch and ack frames (zstd payload, HMAC-SHA256);
//! - [`spool`]: the sender's disk spool of unacknowledged batches;
//! - [`route`]: which log server keeps which customer, and finding it through popnet's DNS;
//! - [`shipper`]: the threads that batch, spool, send and resend;
//! - [`sink`]: the [`LineSink`] a daemon hands its record lines to.

pub mod record;
pub mod route;
pub mod shipper;
pub mod sink;
pub mod spool;
pub mod wire;

pub use record::{AccessRecord, DnsRecord, NO_CUSTOMER, ProbeRecord};
pub use route::{Destination, Routes};
pub use shipper::{ShipError, Shipper, ShipperConfig, ShipperStats};
pub use sink::{LineSink, LogSink};
pub use wire::{Ack, AckStatus, Batch, Kind, WireError};
