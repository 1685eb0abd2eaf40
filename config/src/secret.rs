//! Secret keys written in hex in the config; never printed.

use std::fmt;

use serde::{Deserialize, Deserializer, de};

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;

/// A shared secret (HMAC key, admin token). `Debug` and `Display` redact it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Parses a hex secret of at least [`MIN_SECRET_BYTES`] bytes.
    pub fn from_hex(text: &str) -> Result<Secret, String> {
        let bytes = hex::decode(text.trim())
            .map_err(|e| format!("not hex ({e}); generate one with `openssl rand -hex 32`"))?;
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "{} bytes is too short; use at least {MIN_SECRET_BYTES} bytes ({} hex digits), e.g. `openssl rand -hex 32`",
                bytes.len(),
                MIN_SECRET_BYTES * 2
            ));
        }
        Ok(Secret(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The secret in hex, for writing a config back out.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        let text = String::deserialize(d)?;
        Secret::from_hex(&text).map_err(de::Error::custom)
    }
}
