//! EventBridge event pattern engine: parse and validate patterns, match events against many
//! rules at once through one shared structure, and explain verdicts.
//!
//! Pure crate: no I/O except in [`cli`] (file reading for the `sluice pattern` subcommands).
//!
//! * [`Pattern`] — parse/validate one pattern ([`Limits`]: size 2,048 chars, `$or` ≤ 1,000
//!   combinations, nesting depth, wildcard complexity). Errors are [`PatternError`]s shaped like
//!   `InvalidEventPatternException` with the path and offending value.
//! * [`Matcher`] — named rules added/removed while other threads match; readers never block
//!   (`arc-swap` of an immutable [`Compiled`] snapshot). [`Compiled::match_indices`] with a
//!   reusable [`Scratch`] is the allocation-free hot path.
//! * [`explain`] / [`matches_value`] — reference semantics on a parsed event, with reasons for a
//!   non-match (the `TestEventPattern` diagnostic).
//!
//! Semantics follow event-ruler; the choices where engines or AWS docs differ are written down
//! in `docs/specs/event-patterns.md`. Design of the matcher: see [`matcher`].
//!
//! Events given to the matcher must be JSON objects. The scanner fully lexes the parts of the
//! event that rules reference; subtrees under keys no rule references are skipped with a
//! string- and bracket-aware scan that does not check every JSON rule inside them, and once all
//! keys the rules reference in an object have been seen, the rest of that object is skipped
//! (at the top level: not read at all). Before the scan, a prefilter may conclude from a
//! vectorised search for the referenced keys that no rule can match, and then the event is not
//! scanned at all (malformed bytes right after a referenced key still go to the scan). So a
//! malformed event is reported when the malformation lies in what the scan reads, not always; callers that need strict validation parse the event
//! first, as the event bus does at `PutEvents`. A key repeated within one object counts at its
//! first occurrence (quamina does the same; JSON leaves duplicates undefined).
//!
//! Fuzzing: `crates/pattern/fuzz` (cargo-fuzz layout, outside the workspace). Run from
//! `crates/pattern`: `RUSTC_BOOTSTRAP=1 cargo fuzz run parse_pattern -- -max_total_time=300`
//! and likewise `match_event` (see `fuzz/README.md`).

pub mod cli;
pub mod cond;
pub mod error;
pub mod eval;
mod index;
mod json;
pub mod matcher;
pub mod pattern;
mod prefilter;

pub use cond::{Condition, Literal, Scalar};
pub use error::{EventError, PatternError};
pub use eval::{Verdict, explain, matches_value};
pub use matcher::{Compiled, Matcher, Scratch};
pub use pattern::{Limits, Pattern, Predicate, PredicateKind};
