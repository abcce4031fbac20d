//! OAuth client credentials for connections: the token request and the token's lifetime.
//!
//! # Design constraints
//! - The token request goes to the connection's AuthorizationEndpoint with its HttpMethod
//!   through the outbound client (destination policy, no redirects, 5 s, 64 KiB response).
//!   The client id and secret travel as HTTP Basic authentication (RFC 6749 §2.3.1); the
//!   OAuthHttpParameters body parameters are form-encoded (`application/x-www-form-urlencoded`,
//!   `grant_type=client_credentials` added unless given) in the body, or in the query string
//!   for GET; their headers and query parameters are added as they are.
//! - The answer must be 2xx JSON with `access_token`; `token_type` defaults to `Bearer`;
//!   `expires_in` (seconds, number or string) sets the expiry.
//! - A token is sealed in the connection's secret with the credentials (never stored
//!   unsealed). It is refreshed when an endpoint answers 401 or 407 and before use when it
//!   expires within [`REFRESH_WINDOW_MS`]. Failures are StateReasons naming the endpoint's host
//!   and the HTTP status, never the credentials or the response body.

use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use sluice_outbound::Outbound;
use sluice_outbound::reqwest::{Method, header};

use crate::connections::{OAuthSecret, Token};

/// A token that expires within this many ms is refreshed before use.
pub const REFRESH_WINDOW_MS: i64 = 60_000;
const TIMEOUT: Duration = Duration::from_secs(5);
const MAX_RESPONSE: usize = 64 * 1024;

/// Whether `t` must be refreshed before use at `now_ms`.
pub(crate) fn needs_refresh(t: Option<&Token>, now_ms: i64) -> bool {
    match t {
        None => true,
        Some(t) => t
            .expires_ms
            .is_some_and(|e| e - now_ms <= REFRESH_WINDOW_MS),
    }
}

/// Asks the authorization endpoint for a token. `Err` is a StateReason.
pub(crate) async fn fetch_token(
    out: &Outbound,
    o: &OAuthSecret,
    now_ms: i64,
) -> Result<Token, String> {
    let mut url = out.policy().check_url(&o.endpoint).map_err(|e| {
        format!(
            "The OAuth authorization endpoint is not allowed: {}",
            e.message
        )
    })?;
    let host = url.host_str().unwrap_or_default().to_string();
    let method = match o.method.as_str() {
        "GET" => Method::GET,
        "PUT" => Method::PUT,
        _ => Method::POST,
    };
    let mut form: Vec<(&str, &str)> = o
        .params
        .body
        .iter()
        .map(|p| (p.key.as_str(), p.value.as_str()))
        .collect();
    if !form.iter().any(|(k, _)| *k == "grant_type") {
        form.push(("grant_type", "client_credentials"));
    }
    {
        let mut q = url.query_pairs_mut();
        for p in &o.params.query {
            q.append_pair(&p.key, &p.value);
        }
        if method == Method::GET {
            for (k, v) in &form {
                q.append_pair(k, v);
            }
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    let basic = zeroize::Zeroizing::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", o.client_id, o.client_secret))
    ));
    let mut rb = out
        .client()
        .request(method.clone(), url)
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, crate::apidest::USER_AGENT)
        .header(header::AUTHORIZATION, basic.as_str());
    for p in &o.params.headers {
        if crate::apidest::refused_header(&p.key) || p.key.eq_ignore_ascii_case("authorization") {
            continue;
        }
        rb = rb.header(p.key.as_str(), p.value.as_str());
    }
    if method != Method::GET {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter())
            .finish();
        rb = rb
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
    }
    let req = rb
        .build()
        .map_err(|_| format!("The OAuth token request to {host} could not be built."))?;
    let resp = out
        .send(req, TIMEOUT, MAX_RESPONSE)
        .await
        .map_err(|e| format!("The OAuth token request failed: {}", e.message))?;
    if !(200..300).contains(&resp.status) {
        return Err(format!(
            "The OAuth authorization endpoint {host} answered HTTP {} to the token request.",
            resp.status
        ));
    }
    let v: Value = serde_json::from_slice(&resp.body).map_err(|_| {
        format!("The OAuth authorization endpoint {host} did not answer with JSON.")
    })?;
    let access_token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            format!("The OAuth authorization endpoint {host} answered without an access_token.")
        })?
        .to_string();
    let token_type = v
        .get("token_type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(|t| {
            if t.eq_ignore_ascii_case("bearer") {
                "Bearer".to_string()
            } else {
                t.to_string()
            }
        })
        .unwrap_or_else(|| "Bearer".into());
    let expires_in = match v.get("expires_in") {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.parse::<f64>().ok(),
        _ => None,
    };
    Ok(Token {
        access_token,
        token_type,
        expires_ms: expires_in.map(|s| now_ms + (s * 1000.0) as i64),
    })
}
