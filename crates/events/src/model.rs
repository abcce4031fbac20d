//! Stored records (JSON, `"v": 1`) and their namespaces. See the crate docs for the key layout.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::transform::InputSpec;

/// Buses: key = bus name.
pub const NS_BUSES: &str = "events.buses";
/// Rules: key = bus name ++ `0x00` ++ rule name.
pub const NS_RULES: &str = "events.rules";
/// Delivery queue: key = due time (u64 BE ms) ++ delivery id (16 bytes).
pub const NS_DUE: &str = "events.due";
/// Dead letters: key = dead-letter time (u64 BE ms) ++ delivery id (16 bytes).
pub const NS_DLQ: &str = "events.dlq";
/// Schedule state: key = rule ARN.
pub const NS_SCHED: &str = "events.sched";
/// Connections: key = connection name.
pub const NS_CONNECTIONS: &str = "events.connections";
/// API destinations: key = API destination name.
pub const NS_API_DESTINATIONS: &str = "events.apidests";

/// An event bus.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BusRecord {
    /// Format version (1).
    pub v: u32,
    /// Name.
    pub name: String,
    /// ARN.
    pub arn: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Resource policy (JSON text).
    #[serde(default)]
    pub policy: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Creation time, Unix ms.
    pub created_ms: i64,
    /// Last modification, Unix ms.
    pub modified_ms: i64,
}

/// Retry settings of a target.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0..=185).
    pub max_attempts: u32,
    /// Age limit of an event, seconds (60..=86400).
    pub max_age_secs: u32,
}

impl RetryPolicy {
    /// Whether this is the default policy (left out of stored records).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 185,
            max_age_secs: 86_400,
        }
    }
}

/// A target of a rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetRecord {
    /// Target id (unique within the rule).
    pub id: String,
    /// Target ARN.
    pub arn: String,
    /// Role ARN (stored, not assumed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// Constant input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Input path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_path: Option<String>,
    /// Input transformer: paths map (ordered) and template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformer: Option<(Vec<(String, String)>, String)>,
    /// Retry policy.
    #[serde(default, skip_serializing_if = "RetryPolicy::is_default")]
    pub retry: RetryPolicy,
    /// Whether RetryPolicy was given explicitly (returned by ListTargetsByRule only then).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_explicit: bool,
    /// HttpParameters (API destination targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<TargetHttp>,
}

/// A target's `HttpParameters`. Values may be JSON paths into the event (`$.detail.id`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TargetHttp {
    /// PathParameterValues, filling the endpoint's `*` wildcards in order.
    #[serde(default)]
    pub path: Vec<String>,
    /// HeaderParameters.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// QueryStringParameters.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
}

impl TargetRecord {
    /// How this target builds its input.
    pub fn input_spec(&self) -> InputSpec {
        if let Some(c) = &self.input {
            InputSpec::Constant(c.clone())
        } else if let Some(p) = &self.input_path {
            InputSpec::Path(p.clone())
        } else if let Some((paths, template)) = &self.transformer {
            InputSpec::Transformer {
                paths: paths.clone(),
                template: template.clone(),
            }
        } else {
            InputSpec::Event
        }
    }
}

/// A rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RuleRecord {
    /// Format version (1).
    pub v: u32,
    /// Name.
    pub name: String,
    /// Bus name.
    pub bus: String,
    /// ARN.
    pub arn: String,
    /// Event pattern (JSON text).
    #[serde(default)]
    pub pattern: Option<String>,
    /// Schedule expression.
    #[serde(default)]
    pub schedule: Option<String>,
    /// `ENABLED`, `DISABLED` or `ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS`.
    pub state: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Role ARN.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Targets, in insertion order.
    #[serde(default)]
    pub targets: Vec<TargetRecord>,
    /// Creation time, Unix ms (the first period of a `rate(...)` schedule starts here).
    pub created_ms: i64,
}

impl RuleRecord {
    /// Whether the rule is enabled.
    pub fn enabled(&self) -> bool {
        self.state != "DISABLED"
    }
}

/// A queued delivery: one event for one target of one rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeliveryRecord {
    /// Format version (1).
    pub v: u32,
    /// Delivery id (UUID, hyphenated).
    pub id: String,
    /// Event id.
    pub event_id: String,
    /// The event (JSON text of the envelope).
    pub event: String,
    /// Bus the rule belongs to.
    pub bus: String,
    /// Rule name.
    pub rule: String,
    /// Rule ARN.
    pub rule_arn: String,
    /// The target as it was when the event matched.
    pub target: TargetRecord,
    /// Invocations started so far (a lease counts one).
    pub attempt: u32,
    /// When the event was accepted, Unix ms (age limit and ingestion time).
    pub first_seen_ms: i64,
    /// How many bus-to-bus hops the event has made.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hops: u32,
    /// The last failure, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A dead letter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DeadLetter {
    /// Format version (1).
    pub v: u32,
    /// The delivery that failed (attempt = invocations made).
    pub delivery: DeliveryRecord,
    /// Error code (`NO_RESOURCE`, `ERROR_FROM_TARGET`, `INVALID_INPUT`, `LOOP`, ...).
    pub error_code: String,
    /// Error message.
    pub error_message: String,
    /// `MaximumRetryAttempts`, `MaximumEventAgeInSeconds`, or empty for non-retryable errors.
    pub exhausted: String,
    /// When it was dead-lettered, Unix ms.
    pub at_ms: i64,
}

/// Schedule state of a scheduled rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SchedRecord {
    /// Format version (1).
    pub v: u32,
    /// The scheduled time of the last firing, Unix ms.
    pub last_fire_ms: i64,
}

/// The key of a rule.
pub fn rule_key(bus: &str, rule: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bus.len() + rule.len() + 1);
    k.extend_from_slice(bus.as_bytes());
    k.push(0);
    k.extend_from_slice(rule.as_bytes());
    k
}

/// A queue key: due time then delivery id.
pub fn queue_key(due_ms: i64, id: &uuid::Uuid) -> Vec<u8> {
    let mut k = Vec::with_capacity(24);
    k.extend_from_slice(&(due_ms.max(0) as u64).to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

/// The due time of a queue key.
pub fn key_due(key: &[u8]) -> i64 {
    let mut b = [0u8; 8];
    if key.len() >= 8 {
        b.copy_from_slice(&key[..8]);
    }
    u64::from_be_bytes(b) as i64
}

/// One HTTP parameter of a connection (a header, query-string or body parameter). A secret
/// parameter's value is kept only in the connection's managed secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParamMeta {
    /// The key.
    pub key: String,
    /// The value, `None` when `secret`.
    #[serde(default)]
    pub value: Option<String>,
    /// IsValueSecret.
    #[serde(default)]
    pub secret: bool,
}

/// A connection's HTTP parameters as stored in its record (secret values left out).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParamsMeta {
    /// HeaderParameters.
    #[serde(default)]
    pub headers: Vec<ParamMeta>,
    /// QueryStringParameters.
    #[serde(default)]
    pub query: Vec<ParamMeta>,
    /// BodyParameters.
    #[serde(default)]
    pub body: Vec<ParamMeta>,
}

impl ParamsMeta {
    /// Whether there is no parameter at all.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.query.is_empty() && self.body.is_empty()
    }
}

/// The non-secret part of a connection's OAuth settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OAuthMeta {
    /// ClientID.
    pub client_id: String,
    /// AuthorizationEndpoint.
    pub endpoint: String,
    /// HttpMethod of the token request (GET, POST or PUT).
    pub method: String,
    /// OAuthHttpParameters (secret values left out).
    #[serde(default)]
    pub params: ParamsMeta,
}

/// A connection. Credentials are not here: they live in the managed secret `secret_arn`
/// (format in `connections`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnectionRecord {
    /// Format version (1).
    pub v: u32,
    /// Name.
    pub name: String,
    /// ARN (`...:connection/<name>/<uuid>`).
    pub arn: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// `API_KEY`, `BASIC` or `OAUTH_CLIENT_CREDENTIALS`.
    pub auth_type: String,
    /// ConnectionState (`AUTHORIZED`, `DEAUTHORIZED`, ...).
    pub state: String,
    /// Why the connection is in its state (failures name the key, the KMS operation and the
    /// policy's reason).
    #[serde(default)]
    pub state_reason: Option<String>,
    /// The managed secret holding the credentials, if there is one.
    #[serde(default)]
    pub secret_arn: Option<String>,
    /// The KMS key the secret is sealed under, as the caller named it (`None`: the AWS managed
    /// key of Secrets Manager, sluice's stand-in for an AWS owned key).
    #[serde(default)]
    pub kms_key: Option<String>,
    /// The key the current secret was sealed under (to notice a key change).
    #[serde(default)]
    pub sealed_key: Option<String>,
    /// ApiKeyName (API_KEY).
    #[serde(default)]
    pub api_key_name: Option<String>,
    /// Username (BASIC).
    #[serde(default)]
    pub username: Option<String>,
    /// OAuth settings (OAUTH_CLIENT_CREDENTIALS).
    #[serde(default)]
    pub oauth: Option<OAuthMeta>,
    /// InvocationHttpParameters.
    #[serde(default)]
    pub invocation: ParamsMeta,
    /// Creation time, Unix ms.
    pub created_ms: i64,
    /// Last modification, Unix ms.
    pub modified_ms: i64,
    /// Last successful authorization, Unix ms.
    #[serde(default)]
    pub last_authorized_ms: Option<i64>,
}

/// An API destination.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiDestinationRecord {
    /// Format version (1).
    pub v: u32,
    /// Name.
    pub name: String,
    /// ARN (`...:api-destination/<name>/<uuid>`).
    pub arn: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// The connection's ARN.
    pub connection_arn: String,
    /// InvocationEndpoint (may contain `*` path wildcards).
    pub endpoint: String,
    /// HttpMethod.
    pub method: String,
    /// InvocationRateLimitPerSecond.
    pub rate: u32,
    /// `ACTIVE` or `INACTIVE`.
    pub state: String,
    /// Creation time, Unix ms.
    pub created_ms: i64,
    /// Last modification, Unix ms.
    pub modified_ms: i64,
}
