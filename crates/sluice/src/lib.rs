//! The `sluice` binary's library: configuration, credentials, server assembly and the
//! command-line tools. `main.rs` is a thin CLI over it; tests start servers through
//! [`server::start_with`].

pub mod authz;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod firehose;
pub mod server;
pub mod services;
pub mod tools;
