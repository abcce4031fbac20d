//! Service tests through the Rust API (no HTTP): API errors and limits.
