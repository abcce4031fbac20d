//! Errors: invalid patterns (AWS `InvalidEventPatternException`) and malformed events.

use std::fmt;

/// A pattern was rejected. Mirrors EventBridge's `InvalidEventPatternException`: the message says
/// *where* (a path into the pattern, e.g. `detail.state[0].numeric`) and *why*, and quotes the
/// offending value when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// Path into the pattern document; empty for the whole pattern.
    pub path: String,
    /// Why the pattern is invalid.
    pub reason: String,
    /// The offending value, as compact JSON, when one is to blame.
    pub value: Option<String>,
}

impl PatternError {
    /// The AWS error code this maps to on the wire.
    pub const CODE: &'static str = "InvalidEventPatternException";

    pub(crate) fn new(path: &[String], reason: impl Into<String>) -> Self {
        PatternError {
            path: render_path(path),
            reason: reason.into(),
            value: None,
        }
    }

    pub(crate) fn with_value(
        path: &[String],
        reason: impl Into<String>,
        value: &serde_json::Value,
    ) -> Self {
        let mut text = value.to_string();
        if text.len() > 120 {
            let mut cut = 117;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str("...");
        }
        PatternError {
            path: render_path(path),
            reason: reason.into(),
            value: Some(text),
        }
    }
}

/// Renders a path as `a.b[2].c`: segments that are all digits and were pushed by array
/// traversal are stored as `[n]` already.
fn render_path(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if seg.starts_with('[') {
            out.push_str(seg);
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Event pattern is not valid. Reason: {}", self.reason)?;
        if !self.path.is_empty() {
            write!(f, " at \"{}\"", self.path)?;
        }
        if let Some(v) = &self.value {
            write!(f, " (offending value: {v})")?;
        }
        Ok(())
    }
}

impl std::error::Error for PatternError {}

/// An event could not be read as a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventError {
    /// Byte offset in the event where the problem was found.
    pub offset: usize,
    /// What is wrong.
    pub reason: &'static str,
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event is not valid JSON: {} at byte {}",
            self.reason, self.offset
        )
    }
}

impl std::error::Error for EventError {}
