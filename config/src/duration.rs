//! Durations written as humantime strings (`"500ms"`, `"2s"`, `"5m"`) in the config.

use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// Deserializes `"1s"`-style strings; used with `#[serde(with = "duration")]`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(de::Error::custom)
}

/// Parses one duration, with an error message that shows the accepted forms.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("{text:?} is not a duration ({e}); write it like \"500ms\", \"2s\" or \"5m\"")
    })
}

/// Formats a duration the way the config accepts it back.
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
