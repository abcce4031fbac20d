//! Load harness for Firehose (written below).
fn main() {}
