//! The EventBridge target kind for delivery streams (`arn:aws:firehose:<region>:<account>:
//! deliverystream/<name>`): the target input becomes one record of the stream.
//!
//! The record's chunk is returned as a store operation that the EventBridge dispatcher commits
//! in the same batch that removes the delivery from its queue, so the hand-off is exactly once
//! even though invocations are at-least-once. The stream's delivery task finds the chunk on its
//! next check of the store (within `poll_ms`). The target's RoleArn is stored by EventBridge but
//! not assumed (as for every sluice target; see docs/specs/events.md).

use std::sync::Arc;

use sluice_events::model::TargetRecord;
use sluice_events::{Invocation, InvokeError, Target};
use sluice_store::Batch;

use crate::Firehose;

/// Delivers EventBridge events into Firehose streams.
#[derive(Debug, Clone)]
pub struct FirehoseTarget {
    fh: Firehose,
}

impl FirehoseTarget {
    pub(crate) fn new(fh: Firehose) -> Self {
        Self { fh }
    }

    fn stream_of<'a>(&self, arn: &'a str) -> Option<&'a str> {
        let c = &self.fh.core.cfg;
        let prefix = format!(
            "arn:aws:firehose:{}:{}:deliverystream/",
            c.region, c.account
        );
        arn.strip_prefix(prefix.as_str())
    }
}

fn valid_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

#[async_trait::async_trait]
impl Target for FirehoseTarget {
    fn handles(&self, _core: &sluice_events::Core, arn: &str) -> bool {
        self.stream_of(arn).is_some()
    }

    fn validate(&self, _core: &sluice_events::Core, t: &TargetRecord) -> Result<(), String> {
        match self.stream_of(&t.arn) {
            Some(n) if valid_name(n) => Ok(()),
            _ => Err(format!(
                "Target {} is not a valid delivery stream ARN.",
                t.arn
            )),
        }
    }

    async fn invoke(
        &self,
        _core: &Arc<sluice_events::Core>,
        inv: &Invocation<'_>,
    ) -> Result<Batch, InvokeError> {
        let arn = &inv.delivery.target.arn;
        let Some(name) = self.stream_of(arn) else {
            return Err(InvokeError::permanent(
                "NO_RESOURCE",
                "not a delivery stream ARN",
            ));
        };
        let core = &self.fh.core;
        let Some(s) = core.streams.read().get(name).cloned() else {
            return Err(InvokeError::permanent(
                "NO_RESOURCE",
                format!("Delivery stream {name} does not exist."),
            ));
        };
        if s.status != "ACTIVE" {
            return Err(InvokeError::retryable(
                "SDK_CLIENT_ERROR",
                format!(
                    "Delivery stream {name} is not ACTIVE (status {}).",
                    s.status
                ),
            ));
        }
        let data = inv.input.as_bytes();
        if data.len() > 1_024_000 {
            return Err(InvokeError::permanent(
                "INVALID_INPUT",
                "the target input is larger than a Firehose record (1,024,000 bytes)",
            ));
        }
        let (_, batch, bytes) = core.chunk_batch(&s, &[data], Batch::new());
        // Counted now; the delivery task re-reads the store if the commit has not landed yet.
        core.note_appended(&s, 1, bytes);
        Ok(batch)
    }
}
