//! API destinations: the operations, and the target kind that invokes an HTTP endpoint with a
//! connection's credentials.
//!
//! # Design constraints
//! - **Stored format**: `events.apidests`, key = API destination name, value
//!   [`ApiDestinationRecord`] (JSON, `"v": 1`).
//! - **Invocation** (AWS's documented behaviour, see `docs/specs/events.md`): the body is the
//!   target input (the event or its transformation) with the connection's body parameters
//!   merged into it when it is a JSON object; no body for GET and HEAD. The endpoint's `*`
//!   wildcards are filled in order from the target's PathParameterValues; target header and
//!   query parameters are added and the connection's win on the same key; values of target
//!   parameters that start with `$.` are read from the original event. The connection's
//!   credentials become the API key header, `Authorization: Basic ...` or
//!   `Authorization: <token_type> <token>`. Headers AWS refuses ([`refused_header`]) are dropped
//!   from parameters; `User-Agent: Amazon/EventBridge/ApiDestinations` and
//!   `Range: bytes=0-1048575` are always set, `Content-Type: application/json; charset=utf-8`
//!   unless a parameter sets it. One attempt waits at most 5 s for the whole exchange, follows
//!   no redirect, and reads at most 1 MiB of the response.
//! - **Outcomes**: 2xx succeeds. 401 / 407: for OAuth the token is refreshed and the request
//!   sent once more at once; for API key and basic the connection is deauthorized. 401, 407,
//!   409, 429 and 5xx are retried (the retry waits at least `Retry-After`; a negative
//!   `Retry-After` ends the retries); other statuses (1xx, 3xx, other 4xx) go to the dead
//!   letters at once. Timeouts and broken connections are retried; a destination the outbound
//!   policy refuses is not.
//! - **Rate limit**: `InvocationRateLimitPerSecond` is enforced per API destination by a
//!   `Bucket` (a virtual-schedule token bucket with a burst of a tenth of a second): each
//!   invocation reserves the next slot and waits for it, so events above the rate are delayed,
//!   never dropped (their leases are extended while they wait, see `dispatch`).
//! - **Errors never carry credentials**: messages name the API destination, the host and the
//!   HTTP status, never a header, a query string or a body.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sluice_core::{AwsError, CallContext};
use sluice_outbound::SendErrorKind;
use sluice_outbound::reqwest::{Method, header};
use sluice_store::Batch;

use crate::connections::{self, API_KEY, AUTHORIZED, BASIC, ConnSecret, OAUTH, Runtime};
use crate::model::{ApiDestinationRecord, ConnectionRecord, NS_API_DESTINATIONS, TargetRecord};
use crate::ops::{Out, Post, not_found, page, s, secs, with_token};
use crate::targets::{Invocation, InvokeError, Target};
use crate::transform::{parse_path, select};
use crate::{Core, internal};

/// The User-Agent of invocations (cannot be overridden).
pub const USER_AGENT: &str = "Amazon/EventBridge/ApiDestinations";
const RANGE: &str = "bytes=0-1048575";
const TIMEOUT: Duration = Duration::from_secs(5);
const MAX_RESPONSE: usize = 1024 * 1024;
const DEFAULT_RATE: u32 = 300;
const MAX_API_DESTINATIONS: usize = 3000;

/// Headers EventBridge drops from connection and target parameters.
const REFUSED: &[&str] = &[
    "a-im",
    "accept-charset",
    "accept-datetime",
    "accept-encoding",
    "cache-control",
    "connection",
    "content-encoding",
    "content-length",
    "content-md5",
    "date",
    "expect",
    "forwarded",
    "from",
    "host",
    "http2-settings",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "max-forwards",
    "origin",
    "pragma",
    "proxy-authorization",
    "range",
    "referer",
    "te",
    "trailer",
    "transfer-encoding",
    "user-agent",
    "upgrade",
    "via",
    "warning",
];

/// Whether parameters may not set header `name`.
pub fn refused_header(name: &str) -> bool {
    REFUSED.iter().any(|r| r.eq_ignore_ascii_case(name))
}

// ---------------------------------------------------------------- rate limit

/// A token bucket on a virtual schedule: slot times spaced `1/rate` apart, at most a tenth of
/// a second's worth available at once after idleness.
#[derive(Debug)]
pub(crate) struct Bucket {
    next: parking_lot::Mutex<tokio::time::Instant>,
}

impl Bucket {
    fn new() -> Self {
        Self {
            next: parking_lot::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Reserves the next slot at `rate` per second and waits for it.
    pub(crate) async fn acquire(&self, rate: u32) {
        let rate = rate.max(1) as f64;
        let interval = Duration::from_secs_f64(1.0 / rate);
        let burst = interval.mul_f64((rate / 10.0).floor().max(1.0) - 1.0);
        let now = tokio::time::Instant::now();
        let slot = {
            let mut next = self.next.lock();
            let earliest = now.checked_sub(burst).unwrap_or(now);
            let slot = (*next).max(earliest);
            *next = slot + interval;
            slot
        };
        if slot > now {
            tokio::time::sleep_until(slot).await;
        }
    }
}

// ---------------------------------------------------------------- operations

fn dest_arn(core: &Core, name: &str, uuid: &str) -> String {
    format!(
        "arn:aws:events:{}:{}:api-destination/{name}/{uuid}",
        core.cfg.region, core.cfg.account
    )
}

fn dest(core: &Core, name: &str) -> Result<Arc<ApiDestinationRecord>, AwsError> {
    core.conns
        .apidests
        .read()
        .get(name)
        .cloned()
        .ok_or_else(|| not_found(format!("An api-destination '{name}' does not exist.")))
}

fn dest_put(batch: Batch, d: &ApiDestinationRecord) -> Result<Batch, AwsError> {
    Ok(batch.put(
        NS_API_DESTINATIONS,
        d.name.as_bytes().to_vec(),
        serde_json::to_vec(d).map_err(internal)?,
    ))
}

fn check_connection(core: &Core, arn: &str) -> Result<(), AwsError> {
    core.conns
        .connection_by_arn(arn)
        .map(|_| ())
        .ok_or_else(|| not_found(format!("Connection '{arn}' does not exist.")))
}

/// Checks an InvocationEndpoint against the outbound policy (`*` wildcards in the path only).
fn check_endpoint(core: &Core, endpoint: &str) -> Result<(), AwsError> {
    let policy = match core.conns.runtime.get() {
        Some(rt) => *rt.outbound.policy(),
        None => sluice_outbound::OutboundPolicy::default(),
    };
    let sample = endpoint.replace('*', "x");
    let url = policy.check_url(&sample).map_err(|e| {
        AwsError::validation(format!("InvocationEndpoint is not allowed: {}", e.message))
    })?;
    let authority_end = endpoint
        .find("://")
        .map(|i| i + 3)
        .and_then(|i| endpoint[i..].find('/').map(|j| i + j))
        .unwrap_or(endpoint.len());
    if endpoint[..authority_end].contains('*') {
        return Err(AwsError::validation(
            "InvocationEndpoint may use * wildcards only in its path.",
        ));
    }
    drop(url);
    Ok(())
}

fn short(d: &ApiDestinationRecord) -> Value {
    json!({
        "ApiDestinationArn": d.arn,
        "ApiDestinationState": d.state,
        "CreationTime": secs(d.created_ms),
        "LastModifiedTime": secs(d.modified_ms),
    })
}

fn full(d: &ApiDestinationRecord) -> Value {
    let mut v = json!({
        "ApiDestinationArn": d.arn,
        "Name": d.name,
        "ApiDestinationState": d.state,
        "ConnectionArn": d.connection_arn,
        "InvocationEndpoint": d.endpoint,
        "HttpMethod": d.method,
        "InvocationRateLimitPerSecond": d.rate,
        "CreationTime": secs(d.created_ms),
        "LastModifiedTime": secs(d.modified_ms),
    });
    if let Some(x) = &d.description {
        v["Description"] = json!(x);
    }
    v
}

fn rate_in(input: &Value) -> Result<Option<u32>, AwsError> {
    match input
        .get("InvocationRateLimitPerSecond")
        .and_then(Value::as_i64)
    {
        None => Ok(None),
        Some(r) if r >= 1 && r <= u32::MAX as i64 => Ok(Some(r as u32)),
        Some(_) => Err(AwsError::validation(
            "InvocationRateLimitPerSecond must be at least 1.",
        )),
    }
}

pub(crate) fn create(
    core: &Core,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
) -> Result<Out, AwsError> {
    let name = s(input, "Name").unwrap_or_default();
    let arn = dest_arn(core, name, &uuid::Uuid::new_v4().to_string());
    res.push(arn.clone());
    core.authorize(ctx, "events:CreateApiDestination", &arn, None)?;
    {
        let d = core.conns.apidests.read();
        if d.contains_key(name) {
            return Err(AwsError::client(
                "ResourceAlreadyExistsException",
                format!("An api-destination '{name}' already exists."),
            ));
        }
        if d.len() >= MAX_API_DESTINATIONS {
            return Err(AwsError::client(
                "LimitExceededException",
                format!(
                    "The account has reached its limit of {MAX_API_DESTINATIONS} API destinations."
                ),
            ));
        }
    }
    let connection_arn = s(input, "ConnectionArn").unwrap_or_default();
    check_connection(core, connection_arn)?;
    let endpoint = s(input, "InvocationEndpoint").unwrap_or_default();
    check_endpoint(core, endpoint)?;
    let now = core.clock.now_millis();
    let d = ApiDestinationRecord {
        v: 1,
        name: name.to_string(),
        arn,
        description: s(input, "Description").map(str::to_string),
        connection_arn: connection_arn.to_string(),
        endpoint: endpoint.to_string(),
        method: s(input, "HttpMethod").unwrap_or("POST").to_string(),
        rate: rate_in(input)?.unwrap_or(DEFAULT_RATE),
        state: "ACTIVE".into(),
        created_ms: now,
        modified_ms: now,
    };
    let batch = dest_put(
        Batch::new().expect(NS_API_DESTINATIONS, name.as_bytes().to_vec(), None),
        &d,
    )?;
    Ok(Out {
        resp: short(&d),
        batch,
        post: vec![Post::ApiDestination(name.to_string(), Some(d))],
    })
}

fn arn_for(core: &Core, name: &str, d: &Result<Arc<ApiDestinationRecord>, AwsError>) -> String {
    d.as_ref()
        .map(|d| d.arn.clone())
        .unwrap_or_else(|_| dest_arn(core, name, "*"))
}

pub(crate) fn describe(
    core: &Core,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
) -> Result<Out, AwsError> {
    let name = s(input, "Name").unwrap_or_default();
    let d = dest(core, name);
    res.push(arn_for(core, name, &d));
    core.authorize(ctx, "events:DescribeApiDestination", &res[0], None)?;
    let d = d?;
    Ok(Out::read(full(&d)))
}

pub(crate) fn update(
    core: &Core,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
) -> Result<Out, AwsError> {
    let name = s(input, "Name").unwrap_or_default();
    let cur = dest(core, name);
    res.push(arn_for(core, name, &cur));
    core.authorize(ctx, "events:UpdateApiDestination", &res[0], None)?;
    let mut d = (*cur?).clone();
    if let Some(x) = s(input, "Description") {
        d.description = Some(x.to_string());
    }
    if let Some(c) = s(input, "ConnectionArn") {
        check_connection(core, c)?;
        d.connection_arn = c.to_string();
    }
    if let Some(e) = s(input, "InvocationEndpoint") {
        check_endpoint(core, e)?;
        d.endpoint = e.to_string();
    }
    if let Some(m) = s(input, "HttpMethod") {
        d.method = m.to_string();
    }
    if let Some(r) = rate_in(input)? {
        d.rate = r;
    }
    d.modified_ms = core.clock.now_millis();
    let batch = dest_put(Batch::new(), &d)?;
    Ok(Out {
        resp: short(&d),
        batch,
        post: vec![Post::ApiDestination(name.to_string(), Some(d))],
    })
}

pub(crate) fn delete(
    core: &Core,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
) -> Result<Out, AwsError> {
    let name = s(input, "Name").unwrap_or_default();
    let cur = dest(core, name);
    res.push(arn_for(core, name, &cur));
    core.authorize(ctx, "events:DeleteApiDestination", &res[0], None)?;
    let d = cur?;
    if let Some(rt) = core.conns.runtime.get() {
        rt.buckets.lock().remove(&d.arn);
    }
    Ok(Out {
        resp: json!({}),
        batch: Batch::new().delete(NS_API_DESTINATIONS, name.as_bytes().to_vec()),
        post: vec![Post::ApiDestination(name.to_string(), None)],
    })
}

pub(crate) fn list(core: &Core, ctx: &CallContext, input: &Value) -> Result<Out, AwsError> {
    core.authorize(
        ctx,
        "events:ListApiDestinations",
        &dest_arn(core, "*", "*"),
        None,
    )?;
    let prefix = s(input, "NamePrefix").unwrap_or("");
    let conn = s(input, "ConnectionArn");
    let items: Vec<(String, Value)> = core
        .conns
        .apidests
        .read()
        .values()
        .filter(|d| d.name.starts_with(prefix) && conn.is_none_or(|c| d.connection_arn == c))
        .map(|d| (d.name.clone(), full(d)))
        .collect();
    let (list, next) = page(items, input)?;
    Ok(Out::read(with_token(
        json!({"ApiDestinations": list}),
        next,
    )))
}

// ---------------------------------------------------------------- the target

/// API destinations as targets.
#[derive(Debug, Default)]
pub struct ApiDestinationTarget;

fn dest_by_arn(core: &Core, arn: &str) -> Option<Arc<ApiDestinationRecord>> {
    let name = arn.split(":api-destination/").nth(1)?.split('/').next()?;
    core.conns
        .apidests
        .read()
        .get(name)
        .filter(|d| d.arn == arn)
        .cloned()
}

/// A target parameter value: `$.path` read from the event (strings as they are, other values
/// as JSON), anything else as written.
fn dynamic(v: &str, event: &Value) -> String {
    if v.starts_with("$.")
        && let Ok(steps) = parse_path(v)
    {
        return match select(event, &steps) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(x) => x.to_string(),
        };
    }
    v.to_string()
}

fn permanent(code: &str, msg: String) -> InvokeError {
    InvokeError::permanent(code, msg)
}

/// Retry-After in ms: `Some(Ok(ms))`, `Some(Err(()))` for a negative value (stop retrying).
fn retry_after(headers: &header::HeaderMap, now_ms: i64) -> Option<Result<i64, ()>> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(n) = v.parse::<i64>() {
        return Some(if n < 0 {
            Err(())
        } else {
            Ok(n.saturating_mul(1000))
        });
    }
    let t = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let ms = (t.unix_timestamp_nanos() / 1_000_000) as i64 - now_ms;
    Some(Ok(ms.max(0)))
}

/// Builds the HTTP request of one invocation.
fn build_request(
    rt: &Runtime,
    d: &ApiDestinationRecord,
    target: &TargetRecord,
    inv: &Invocation<'_>,
    sec: &ConnSecret,
) -> Result<sluice_outbound::reqwest::Request, InvokeError> {
    let http = target.http.clone().unwrap_or_default();
    // The endpoint with its wildcards filled.
    let mut endpoint = String::with_capacity(d.endpoint.len() + 32);
    let mut values = http.path.iter();
    for (i, part) in d.endpoint.split('*').enumerate() {
        if i > 0 {
            let Some(v) = values.next() else {
                return Err(permanent(
                    "INVALID_INPUT",
                    format!(
                        "API destination {}: the endpoint has more * wildcards than the target's PathParameterValues.",
                        d.name
                    ),
                ));
            };
            let v = dynamic(v, inv.event());
            endpoint.push_str(
                &url::form_urlencoded::byte_serialize(v.as_bytes())
                    .collect::<String>()
                    .replace('+', "%20"),
            );
        }
        endpoint.push_str(part);
    }
    let mut url = sluice_outbound::Url::parse(&endpoint).map_err(|_| {
        permanent(
            "INVALID_INPUT",
            format!(
                "API destination {}: the endpoint is not a valid URL.",
                d.name
            ),
        )
    })?;
    // Query: the target's, then the connection's (which win).
    let mut query: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let set = |list: &mut Vec<(String, String)>, k: &str, v: String| {
        list.retain(|(x, _)| x != k);
        list.push((k.to_string(), v));
    };
    for (k, v) in &http.query {
        set(&mut query, k, dynamic(v, inv.event()));
    }
    for p in &sec.invocation.query {
        set(&mut query, &p.key, p.value.clone());
    }
    if query.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(query.iter());
    }
    // Headers: the target's, then the connection's, then the credentials.
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: String| {
        if refused_header(k) {
            return;
        }
        headers.retain(|(x, _)| !x.eq_ignore_ascii_case(k));
        headers.push((k.to_string(), v));
    };
    for (k, v) in &http.headers {
        put(k, dynamic(v, inv.event()));
    }
    for p in &sec.invocation.headers {
        put(&p.key, p.value.clone());
    }
    match sec.auth.as_str() {
        API_KEY => {
            if let Some(k) = &sec.api_key {
                put(&k.name, k.value.clone());
            }
        }
        BASIC => {
            if let Some(b) = &sec.basic {
                use base64::Engine;
                let enc = base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", b.username, b.password));
                put("Authorization", format!("Basic {enc}"));
            }
        }
        _ => {
            if let Some(t) = &sec.token {
                put(
                    "Authorization",
                    format!("{} {}", t.token_type, t.access_token),
                );
            }
        }
    }
    let method = Method::from_bytes(d.method.as_bytes()).unwrap_or(Method::POST);
    let mut map = header::HeaderMap::new();
    for (k, v) in headers {
        let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(k.as_bytes()),
            header::HeaderValue::from_str(&v),
        ) else {
            return Err(permanent(
                "INVALID_INPUT",
                format!(
                    "API destination {}: the header {k} is not a valid HTTP header.",
                    d.name
                ),
            ));
        };
        map.insert(name, value);
    }
    if !map.contains_key(header::CONTENT_TYPE) {
        map.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    map.insert(
        header::USER_AGENT,
        header::HeaderValue::from_static(USER_AGENT),
    );
    map.insert(header::RANGE, header::HeaderValue::from_static(RANGE));
    map.insert(
        header::ACCEPT_ENCODING,
        header::HeaderValue::from_static("gzip,deflate"),
    );
    let mut rb = rt
        .outbound
        .client()
        .request(method.clone(), url)
        .headers(map);
    if method != Method::GET && method != Method::HEAD {
        let body = if sec.invocation.body.is_empty() {
            inv.input.clone()
        } else {
            match serde_json::from_str::<Value>(&inv.input) {
                Ok(Value::Object(mut m)) => {
                    for p in &sec.invocation.body {
                        m.insert(p.key.clone(), Value::String(p.value.clone()));
                    }
                    Value::Object(m).to_string()
                }
                _ => inv.input.clone(),
            }
        };
        rb = rb.body(body);
    }
    rb.build().map_err(|_| {
        permanent(
            "INVALID_INPUT",
            format!(
                "API destination {}: the request could not be built.",
                d.name
            ),
        )
    })
}

/// Why the connection's secret could not be used; deauthorizes it when AWS would.
async fn secret_failed(
    core: &Arc<Core>,
    rt: &Runtime,
    c: &ConnectionRecord,
    e: AwsError,
    ctx: &CallContext,
) -> InvokeError {
    let arn = c.secret_arn.clone().unwrap_or_default();
    let gone = e.code == "ResourceNotFoundException"
        || (e.code == "InvalidRequestException" && e.message.contains("marked for deletion"));
    let kms = e.code == "DecryptionFailure"
        || (e.code == "AccessDeniedException" && e.message.starts_with("Access to KMS"));
    if gone || kms {
        let reason = if gone {
            format!("The connection secret {arn} no longer exists (it was deleted).")
        } else {
            connections::secret_failure_reason(rt, ctx, c, &arn, "opening", &e).await
        };
        connections::auto_deauthorize(core, &c.arn, c.modified_ms, reason.clone(), gone).await;
        return InvokeError::retryable("CONNECTION_DEAUTHORIZED", reason);
    }
    InvokeError::retryable(
        "SECRET_UNAVAILABLE",
        format!(
            "The connection secret {arn} could not be read ({}).",
            e.code
        ),
    )
}

/// A fresh OAuth token for `c` (one refresh at a time per connection; a token another
/// invocation just refreshed is used as is). `stale` is the token that failed, if any.
async fn refresh_token(
    core: &Arc<Core>,
    rt: &Runtime,
    c: &ConnectionRecord,
    stale: Option<&str>,
) -> Result<Arc<ConnSecret>, InvokeError> {
    let lock = rt.refresh_lock(&c.arn);
    let _g = lock.lock().await;
    let sec = match connections::read_secret(core, rt, c).await {
        Ok(s) => s,
        Err((e, ctx)) => return Err(secret_failed(core, rt, c, e, &ctx).await),
    };
    let now = core.clock.now_millis();
    let current = sec.token.as_ref().map(|t| t.access_token.as_str());
    if current.is_some()
        && current != stale
        && !crate::oauth::needs_refresh(sec.token.as_ref(), now)
    {
        return Ok(sec);
    }
    let Some(o) = sec.oauth.clone() else {
        return Err(permanent(
            "INVALID_INPUT",
            "the connection has no OAuth parameters".into(),
        ));
    };
    let token = match crate::oauth::fetch_token(&rt.outbound, &o, now).await {
        Ok(t) => t,
        Err(reason) => {
            let reason = format!("The OAuth token could not be refreshed: {reason}");
            connections::auto_deauthorize(core, &c.arn, c.modified_ms, reason.clone(), false).await;
            return Err(InvokeError::retryable("CONNECTION_DEAUTHORIZED", reason));
        }
    };
    let mut sec = (*sec).clone();
    sec.token = Some(token);
    let ctx = rt
        .slr_ctx(core)
        .await
        .map_err(|e| InvokeError::retryable("SECRET_UNAVAILABLE", e.message))?;
    let arn = c.secret_arn.clone().unwrap_or_default();
    if let Err(e) = rt
        .secrets
        .update_managed_secret(
            &ctx,
            "events",
            &arn,
            sluice_secrets::NewValue::String(&sec.to_text()),
            None,
        )
        .await
    {
        let reason = connections::secret_failure_reason(rt, &ctx, c, &arn, "sealing", &e).await;
        connections::auto_deauthorize(core, &c.arn, c.modified_ms, reason.clone(), false).await;
        return Err(InvokeError::retryable("CONNECTION_DEAUTHORIZED", reason));
    }
    Ok(Arc::new(sec))
}

#[async_trait::async_trait]
impl Target for ApiDestinationTarget {
    fn handles(&self, core: &Core, arn: &str) -> bool {
        arn.starts_with(&format!(
            "arn:aws:events:{}:{}:api-destination/",
            core.cfg.region, core.cfg.account
        ))
    }

    fn validate(&self, core: &Core, t: &TargetRecord) -> Result<(), String> {
        if dest_by_arn(core, &t.arn).is_none() {
            return Err(format!("API destination {} does not exist.", t.arn));
        }
        if let Some(h) = &t.http {
            for k in h.headers.keys() {
                if header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                    return Err(format!(
                        "HeaderParameters key {k} is not a valid header name."
                    ));
                }
            }
        }
        Ok(())
    }

    async fn invoke(&self, core: &Arc<Core>, inv: &Invocation<'_>) -> Result<Batch, InvokeError> {
        let arn = &inv.delivery.target.arn;
        let Some(rt) = core.conns.runtime.get() else {
            return Err(permanent(
                "NO_RESOURCE",
                "API destinations are not enabled on this server.".into(),
            ));
        };
        let Some(d) = dest_by_arn(core, arn) else {
            return Err(permanent(
                "NO_RESOURCE",
                format!("API destination {arn} does not exist."),
            ));
        };
        let Some(c) = core.conns.connection_by_arn(&d.connection_arn) else {
            return Err(permanent(
                "NO_RESOURCE",
                format!(
                    "The connection {} of API destination {} does not exist.",
                    d.connection_arn, d.name
                ),
            ));
        };
        if c.state != AUTHORIZED {
            return Err(InvokeError::retryable(
                "CONNECTION_DEAUTHORIZED",
                format!(
                    "The connection {} is {}: {}",
                    c.name,
                    c.state,
                    c.state_reason.as_deref().unwrap_or("not authorized")
                ),
            ));
        }
        let bucket = rt
            .buckets
            .lock()
            .entry(d.arn.clone())
            .or_insert_with(|| Arc::new(Bucket::new()))
            .clone();
        bucket.acquire(d.rate).await;

        let mut sec = match connections::read_secret(core, rt, &c).await {
            Ok(s) => s,
            Err((e, ctx)) => return Err(secret_failed(core, rt, &c, e, &ctx).await),
        };
        if c.auth_type == OAUTH
            && crate::oauth::needs_refresh(sec.token.as_ref(), core.clock.now_millis())
        {
            sec = refresh_token(core, rt, &c, None).await?;
        }
        let mut refreshed = false;
        loop {
            let req = build_request(rt, &d, &inv.delivery.target, inv, &sec)?;
            let resp = match rt.outbound.send(req, TIMEOUT, MAX_RESPONSE).await {
                Ok(r) => r,
                Err(e) => {
                    let code = match e.kind {
                        SendErrorKind::Timeout => "TIMEOUT",
                        SendErrorKind::Refused => "NO_PERMISSIONS",
                        _ => "ERROR_FROM_TARGET",
                    };
                    let msg = format!("API destination {}: {}", d.name, e.message);
                    return Err(match e.kind {
                        SendErrorKind::Refused | SendErrorKind::InvalidUrl => permanent(code, msg),
                        _ => InvokeError::retryable(code, msg),
                    });
                }
            };
            let st = resp.status;
            if (200..300).contains(&st) {
                return Ok(Batch::new());
            }
            // The host, for messages only (parsed here, off the success path).
            let host = sluice_outbound::Url::parse(&d.endpoint.replace('*', "x"))
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default();
            let msg = format!("API destination {}: {host} answered HTTP {st}", d.name);
            if st == 401 || st == 407 {
                if c.auth_type == OAUTH {
                    if !refreshed {
                        let stale = sec.token.as_ref().map(|t| t.access_token.clone());
                        sec = refresh_token(core, rt, &c, stale.as_deref()).await?;
                        refreshed = true;
                        continue;
                    }
                } else {
                    connections::auto_deauthorize(
                        core,
                        &c.arn,
                        c.modified_ms,
                        format!("The endpoint {host} of API destination {} rejected the connection's credentials (HTTP {st}).", d.name),
                        false,
                    )
                    .await;
                }
                return Err(InvokeError::retryable("ERROR_FROM_TARGET", msg));
            }
            if st == 409 || st == 429 || st >= 500 {
                let mut e = InvokeError::retryable("ERROR_FROM_TARGET", msg);
                match retry_after(&resp.headers, core.clock.now_millis()) {
                    Some(Err(())) => {
                        e.retryable = false;
                        e.message
                            .push_str(" with a negative Retry-After (no more retries)");
                    }
                    Some(Ok(ms)) => e.retry_after_ms = Some(ms),
                    None => {}
                }
                return Err(e);
            }
            let why = if (300..400).contains(&st) {
                " (redirects are not followed)"
            } else {
                ""
            };
            return Err(permanent("ERROR_FROM_TARGET", format!("{msg}{why}")));
        }
    }
}
