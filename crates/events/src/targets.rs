//! Target kinds. A [`Target`] says which ARNs it serves, validates a target at PutTargets, and
//! invokes one delivery. Built in: [`BusTarget`] (another bus of the same account) and
//! [`crate::apidest::ApiDestinationTarget`]; further kinds (Firehose delivery streams) plug in
//! through [`crate::Events::add_target_kind`].
//!
//! An invocation may return store operations (a [`Batch`]) that the dispatcher commits in the
//! same batch that removes the delivery from the queue: a bus target hands its event over to
//! the next bus atomically, so the hand-off is exactly once even though invocations are
//! at-least-once.

use std::sync::{Arc, OnceLock};

use serde_json::Value;
use sluice_store::Batch;

use crate::Core;
use crate::model::{DeliveryRecord, TargetRecord};

/// Why an invocation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvokeError {
    /// Whether another attempt may succeed.
    pub retryable: bool,
    /// Dead-letter error code (`NO_RESOURCE`, `ERROR_FROM_TARGET`, `INVALID_INPUT`, `LOOP`, ...).
    pub code: String,
    /// Detail.
    pub message: String,
    /// The target asked to wait at least this long before the next attempt (`Retry-After`), ms.
    pub retry_after_ms: Option<i64>,
}

impl InvokeError {
    /// A failure worth retrying.
    pub fn retryable(code: &str, message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            code: code.to_string(),
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// A failure that retrying cannot fix (goes straight to the dead letters, as AWS).
    pub fn permanent(code: &str, message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            code: code.to_string(),
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

/// One delivery being invoked.
#[derive(Debug)]
pub struct Invocation<'a> {
    /// The delivery (its `attempt` counts this invocation).
    pub delivery: &'a DeliveryRecord,
    /// The input after Input / InputPath / InputTransformer.
    pub input: String,
    /// The original event, parsed on first use (most targets never need the tree).
    event: OnceLock<Value>,
}

impl<'a> Invocation<'a> {
    /// An invocation of `delivery` with `input`; `event` is the parsed event if the caller
    /// already has it.
    pub(crate) fn new(delivery: &'a DeliveryRecord, input: String, event: Option<Value>) -> Self {
        let cell = OnceLock::new();
        if let Some(v) = event {
            let _ = cell.set(v);
        }
        Self {
            delivery,
            input,
            event: cell,
        }
    }

    /// The original event, parsed (`null` if the stored text is not JSON, which cannot happen
    /// for events sluice built).
    pub fn event(&self) -> &Value {
        self.event
            .get_or_init(|| serde_json::from_str(&self.delivery.event).unwrap_or(Value::Null))
    }
}

/// A kind of target.
#[async_trait::async_trait]
pub trait Target: Send + Sync + std::fmt::Debug {
    /// Whether this kind serves `arn`.
    fn handles(&self, core: &Core, arn: &str) -> bool;

    /// Checks a target at PutTargets; `Err` is the per-entry error message.
    fn validate(&self, core: &Core, target: &TargetRecord) -> Result<(), String>;

    /// Delivers one event. `Ok` may carry store operations to commit with the acknowledgement.
    async fn invoke(&self, core: &Arc<Core>, inv: &Invocation<'_>) -> Result<Batch, InvokeError>;

    /// A key grouping deliveries for concurrency limits and the circuit breaker (default: the
    /// ARN).
    fn breaker_key(&self, arn: &str) -> String {
        arn.to_string()
    }
}

/// Another event bus of the same account and region.
#[derive(Debug, Default)]
pub struct BusTarget;

impl BusTarget {
    /// The bus name of `arn` if it is a bus ARN of this account and region.
    fn bus_of<'a>(core: &Core, arn: &'a str) -> Option<&'a str> {
        arn.strip_prefix("arn:aws:events:")?
            .strip_prefix(core.cfg.region.as_str())?
            .strip_prefix(':')?
            .strip_prefix(core.cfg.account.as_str())?
            .strip_prefix(":event-bus/")
    }
}

#[async_trait::async_trait]
impl Target for BusTarget {
    fn handles(&self, core: &Core, arn: &str) -> bool {
        Self::bus_of(core, arn).is_some()
    }

    fn validate(&self, core: &Core, t: &TargetRecord) -> Result<(), String> {
        match Self::bus_of(core, &t.arn) {
            Some(name) if !name.is_empty() && !name.contains('/') => Ok(()),
            _ => Err(format!("Target {} is not a valid event bus ARN.", t.arn)),
        }
    }

    async fn invoke(&self, core: &Arc<Core>, inv: &Invocation<'_>) -> Result<Batch, InvokeError> {
        let d = inv.delivery;
        let Some(bus) = Self::bus_of(core, &d.target.arn) else {
            return Err(InvokeError::permanent(
                "NO_RESOURCE",
                "not an event bus ARN",
            ));
        };
        if core.buses.read().get(bus).is_none() {
            return Err(InvokeError::permanent(
                "NO_RESOURCE",
                format!("Event bus {bus} does not exist."),
            ));
        }
        if d.hops + 1 > core.cfg.max_hops {
            return Err(InvokeError::permanent(
                "LOOP",
                format!(
                    "The event crossed {} buses; it is probably looping.",
                    d.hops + 1
                ),
            ));
        }
        // The whole event passed on unchanged (the usual case) is an object with id
        // `event_id`; anything else has to be looked at.
        let event_id = if inv.input == d.event {
            d.event_id.clone()
        } else {
            let parsed: Value = serde_json::from_str(&inv.input).map_err(|_| {
                InvokeError::permanent("INVALID_INPUT", "the target input is not a JSON object")
            })?;
            if !parsed.is_object() {
                return Err(InvokeError::permanent(
                    "INVALID_INPUT",
                    "the target input is not a JSON object",
                ));
            }
            parsed
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or(&d.event_id)
                .to_string()
        };
        let deliveries = core
            .route(bus, &event_id, &inv.input, d.first_seen_ms, d.hops + 1)
            .map_err(|e| InvokeError::permanent("INVALID_INPUT", e.to_string()))?;
        core.enqueue(Batch::new(), &deliveries)
            .map_err(|e| InvokeError::retryable("INTERNAL", e.message))
    }
}
