//! DNS wire format (RFC 1035, 2181, 6891, 7871): decode from borrowed slices, encode with compression.

#![forbid(unsafe_code)]

pub mod decode;
pub mod edns;
pub mod encode;
pub mod message;
pub mod name;
pub mod query;
pub mod rdata;
pub mod record;
pub mod types;

pub use decode::{DecodeError, Decoder};
pub use edns::{ClientSubnet, Edns, EdnsOption, OPT_CODE_COOKIE, OPT_CODE_ECS};
pub use encode::{EncodeError, Encoder};
pub use message::{Header, Message, Question};
pub use name::{Name, NameError};
pub use query::{DropReason, QueryError, QueryView, QuestionSpan};
pub use rdata::{RData, Soa};
pub use record::Record;
pub use types::{MnemonicError, Opcode, RClass, RType, Rcode};
