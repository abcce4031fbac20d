//! Server assembly: the data directory, the store, the services, and the one HTTP port.
//!
//! Request path (every request but `GET /_sluice/health`):
//! 1. a request id (`x-amzn-RequestId` on every response, error or not);
//! 2. the body, read up to `max_body_bytes` (413 `RequestEntityTooLargeException` beyond);
//! 3. SigV4 verification (`sluice-sigv4`) against the known access keys -> a [`Principal`];
//! 4. AWS JSON 1.1 parsing and model validation (`sluice-wire`), and a check that the
//!    credential scope names the operation's service (a hot operation, Firehose
//!    PutRecordBatch, is first offered to its service's `handle_raw` with the raw body, which
//!    decodes the usual form itself and declines the rest);
//! 5. the service call with a [`CallContext`]; the service authorizes and audits.
//!
//! Data directory layout: `root.key` (the root key, 0600, unless supplied by the operator),
//! `credentials.sealed` (the generated root access key pair, sealed), `sluice.db` (+ WAL files),
//! `LOCK` (held while a server runs, so two servers never share a directory).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use sluice_audit::AuditLog;
use sluice_core::{AwsError, CallContext, Clock, CredentialLookupError, Principal, SystemClock};
use sluice_crypto::RootKey;
use sluice_kms::Kms;
use sluice_sigv4::{
    Credential, CredentialError, HttpRequestParts, Verifier, VerifyPolicy, header_pairs,
};
use sluice_store::Store;
use sluice_store::sqlite::{SqliteOptions, SqliteStore, SyncMode};
use tokio::sync::oneshot;

use crate::config::Config;
use crate::credentials::{self, AccessKeyPair};

const JSON_11: &str = "application/x-amz-json-1.1";

/// Everything a request handler needs.
pub struct AppState {
    cfg: Config,
    verifier: Verifier,
    root_pair: AccessKeyPair,
    clock: Arc<dyn Clock>,
    services: crate::services::Services,
    requests: AtomicU64,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// A running server.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    root_pair: AccessKeyPair,
    events: Option<sluice_events::Events>,
    firehose: Option<sluice_firehose::Firehose>,
}

impl RunningServer {
    /// The EventBridge service (metrics, dead letters, redrive).
    pub fn events(&self) -> Option<&sluice_events::Events> {
        self.events.as_ref()
    }

    /// The Firehose service (delivery errors, metrics).
    pub fn firehose(&self) -> Option<&sluice_firehose::Firehose> {
        self.firehose.as_ref()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The root access key pair it accepts.
    pub fn root_credentials(&self) -> &AccessKeyPair {
        &self.root_pair
    }

    /// Stops accepting connections, lets in-flight requests finish, closes the store.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await?
    }

    /// Waits until the server stops (after a signal, when started by [`serve_until_signal`]).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await?
    }
}

/// Opens the data directory and the services, binds the port and starts serving. The server
/// stops when `stop` resolves (or [`RunningServer::shutdown`] is called).
pub async fn start_with(
    cfg: Config,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunningServer> {
    cfg.validate()?;
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create data directory {}: {e}",
            cfg.data_dir.display()
        )
    })?;
    let lock = lock_data_dir(&cfg.data_dir)?;
    let root = Arc::new(match &cfg.root_key {
        Some(text) => {
            RootKey::from_base64(text).map_err(|e| anyhow::anyhow!("SLUICE_ROOT_KEY: {e}"))?
        }
        None => {
            let (k, created) = RootKey::load_or_create(&cfg.data_dir.join("root.key"))
                .map_err(|e| anyhow::anyhow!("root key: {e}"))?;
            if created {
                tracing::info!(path = %cfg.data_dir.join("root.key").display(), "created a new root key");
            }
            k
        }
    });
    let root_pair = match &cfg.root_credentials {
        Some((id, secret)) => AccessKeyPair {
            access_key_id: id.clone(),
            secret_access_key: secret.clone(),
        },
        None => credentials::load_or_create(&cfg.data_dir, &root)?,
    };
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(
            &cfg.data_dir.join("sluice.db"),
            SqliteOptions {
                sync: if cfg.sqlite_full_sync {
                    SyncMode::Full
                } else {
                    SyncMode::Normal
                },
                deferred_sync: cfg.audit_sync,
                ..SqliteOptions::default()
            },
        )
        .map_err(|e| anyhow::anyhow!("cannot open the store: {e}"))?,
    );
    // Parse the wire models now rather than on the first request of each service.
    for name in sluice_wire::SERVICE_NAMES {
        let _ = sluice_wire::service(name);
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let audit = AuditLog::new(store.clone(), clock.clone(), &cfg.account_id);
    let services = crate::services::Services::build(&crate::services::Deps {
        cfg: cfg.clone(),
        store: store.clone(),
        clock: clock.clone(),
        root,
        audit,
    })?;
    let kms = services
        .kms
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the KMS service is missing"))?;
    let policy = VerifyPolicy::new(cfg.region.clone(), &services.signing_names());
    let state = Arc::new(AppState {
        verifier: Verifier::new(policy),
        root_pair: root_pair.clone(),
        clock,
        services,
        cfg: cfg.clone(),
        requests: AtomicU64::new(0),
    });

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(state.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let events = state.services.events.clone();
    let events_workers = events.as_ref().map(|e| e.start_workers());
    let firehose = state.services.firehose.clone();
    let firehose_workers = firehose.as_ref().map(|f| f.start_workers());
    let maintenance = tokio::spawn(maintenance_loop(
        kms.clone(),
        state.services.secrets.clone(),
    ));
    let task = tokio::spawn(async move {
        let shutdown = async move {
            tokio::select! {
                _ = rx => {},
                _ = stop => {},
            }
            tracing::info!("shutting down: finishing in-flight requests");
        };
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        maintenance.abort();
        if let Some(w) = events_workers {
            w.stop().await;
        }
        if let Some(w) = firehose_workers {
            w.stop().await;
        }
        let closed = store.close().await;
        drop(lock);
        tracing::info!(
            requests = state.requests.load(Ordering::Relaxed),
            "sluice stopped"
        );
        served?;
        closed.map_err(|e| anyhow::anyhow!("closing the store: {e}"))?;
        Ok(())
    });
    tracing::info!(%addr, data_dir = %cfg.data_dir.display(), region = %cfg.region, account = %cfg.account_id, "sluice is serving");
    Ok(RunningServer {
        addr,
        shutdown: Some(tx),
        task,
        root_pair,
        events,
        firehose,
    })
}

/// Starts the server and stops it on SIGTERM or SIGINT.
pub async fn serve_until_signal(cfg: Config) -> anyhow::Result<RunningServer> {
    start_with(cfg, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join("LOCK");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(_) => anyhow::bail!(
            "the data directory {} is in use by another sluice server",
            dir.display()
        ),
    }
}

async fn maintenance_loop(kms: Arc<Kms>, secrets: Option<Arc<sluice_secrets::Secrets>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        if let Err(e) = kms.run_maintenance().await {
            tracing::warn!(error = %e.code, "kms maintenance failed");
        }
        if let Some(s) = &secrets
            && let Err(e) = s.run_maintenance().await
        {
            tracing::warn!(error = %e.code, "secrets manager maintenance failed");
        }
    }
}

fn error_response(
    err: &AwsError,
    service: Option<&sluice_wire::Service>,
    request_id: &str,
) -> Response {
    let body = match service {
        Some(s) => sluice_wire::error_body(s, err),
        None => {
            serde_json::to_vec(&serde_json::json!({"__type": err.code, "message": err.message}))
                .unwrap_or_default()
        }
    };
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(err.status).unwrap_or(StatusCode::BAD_REQUEST);
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(JSON_11),
    );
    if let Ok(v) = HeaderValue::from_str(&err.code) {
        h.insert("x-amzn-errortype", v);
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

fn json_response(body: Vec<u8>, request_id: &str) -> Response {
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(JSON_11),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

/// Prometheus text exposition of the server's counters. Counters only: no identifiers, no
/// secrets, which is why it is served without authentication (`--no-metrics` turns it off).
async fn metrics_text(st: &AppState) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, kind: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    };
    counter(
        "sluice_http_requests_total",
        "HTTP requests received.",
        "counter",
        st.requests.load(Ordering::Relaxed),
    );
    if let Some(e) = &st.services.events {
        let m = e.metrics().await;
        for (name, help, kind, v) in [
            (
                "sluice_events_put_entries_total",
                "PutEvents entries accepted.",
                "counter",
                m.put_events_entries,
            ),
            (
                "sluice_events_matched_events_total",
                "Events that matched at least one rule (MatchedEvents).",
                "counter",
                m.matched_events,
            ),
            (
                "sluice_events_triggered_rules_total",
                "Rule matches with targets (TriggeredRules).",
                "counter",
                m.triggered_rules,
            ),
            (
                "sluice_events_invocations_total",
                "Target invocations (Invocations).",
                "counter",
                m.invocations,
            ),
            (
                "sluice_events_failed_invocations_total",
                "Failed target invocations (FailedInvocations).",
                "counter",
                m.failed_invocations,
            ),
            (
                "sluice_events_retries_total",
                "Deliveries re-queued for another attempt.",
                "counter",
                m.retries,
            ),
            (
                "sluice_events_dead_lettered_total",
                "Deliveries moved to the dead-letter store.",
                "counter",
                m.dead_lettered,
            ),
            (
                "sluice_events_scheduled_firings_total",
                "Scheduled rule firings.",
                "counter",
                m.scheduled_firings,
            ),
            (
                "sluice_events_queue_depth",
                "Deliveries queued (due, waiting or leased).",
                "gauge",
                m.queue_depth,
            ),
        ] {
            counter(name, help, kind, v);
        }
    }
    if let Some(f) = &st.services.firehose {
        out.push_str(&f.metrics_text());
    }
    out
}

async fn handle(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
) -> Response {
    st.requests.fetch_add(1, Ordering::Relaxed);
    let request_id = uuid::Uuid::new_v4().to_string();
    let (parts, body) = req.into_parts();
    if parts.uri.path() == "/_sluice/metrics" && parts.method == Method::GET && st.cfg.metrics {
        let mut r = Response::new(Body::from(metrics_text(&st).await));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        return r;
    }
    if parts.uri.path() == "/_sluice/health" && parts.method == Method::GET {
        let mut r = json_response(br#"{"status":"ok"}"#.to_vec(), &request_id);
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return r;
    }
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(normalize_target);
    let target = target.as_deref();
    let service_hint = target
        .and_then(|t| sluice_wire::by_target(t).ok())
        .map(|(s, _)| s);
    let body = match http_body_util::Limited::new(body, st.cfg.max_body_bytes)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            let err = if e.is::<http_body_util::LengthLimitError>() {
                AwsError::with_status(
                    "RequestEntityTooLargeException",
                    413,
                    format!(
                        "The request body is larger than the limit of {} bytes.",
                        st.cfg.max_body_bytes
                    ),
                )
            } else {
                AwsError::serialization("The request body could not be read.")
            };
            return error_response(&err, service_hint, &request_id);
        }
    };
    match dispatch(&st, &parts, target, &body, peer, &request_id).await {
        Ok(Reply::Json(out)) => json_response(out, &request_id),
        Ok(Reply::Query(q)) => query_response(q, &request_id),
        Err((err, _, Some(q))) => {
            tracing::debug!(code = %err.code, status = err.status, request_id, "request failed");
            query_response(q.error_response(&err, &request_id), &request_id)
        }
        Err((err, svc, None)) => {
            tracing::debug!(code = %err.code, status = err.status, request_id, "request failed");
            error_response(&err, svc.or(service_hint), &request_id)
        }
    }
}

/// The SDKs send CloudTrail's target with the short prefix `CloudTrail_20131101.`, while the
/// model names the long one; both mean the same operation.
fn normalize_target(t: &str) -> std::borrow::Cow<'_, str> {
    match t.strip_prefix("CloudTrail_20131101.") {
        Some(op) => std::borrow::Cow::Owned(format!(
            "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.{op}"
        )),
        None => std::borrow::Cow::Borrowed(t),
    }
}

type DispatchError = (
    AwsError,
    Option<&'static sluice_wire::Service>,
    Option<Arc<dyn sluice_core::QueryService>>,
);

/// The signing name in the credential scope of the request's Authorization header or
/// `X-Amz-Credential` query parameter, read without verifying anything (to choose the error
/// format of the service the client believes it is calling).
fn claimed_service(parts: &http::request::Parts) -> Option<String> {
    let from_header = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .map(str::to_string);
    let cred = from_header.or_else(|| {
        parts.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("X-Amz-Credential="))
                .map(|v| v.replace("%2F", "/").replace("%2f", "/"))
        })
    })?;
    cred.split('/').nth(3).map(str::to_string)
}

/// Decodes an `application/x-www-form-urlencoded` body.
pub fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, AwsError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| AwsError::client("MalformedQueryString", "The request body is not UTF-8."))?;
    let decode = |s: &str| -> Result<String, AwsError> {
        let plus = s.replace('+', " ");
        percent_encoding::percent_decode_str(&plus)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| AwsError::client("MalformedQueryString", "The form is not valid UTF-8."))
    };
    let mut out = Vec::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.push((decode(k)?, decode(v)?));
    }
    Ok(out)
}

fn query_response(resp: sluice_core::QueryResponse, request_id: &str) -> Response {
    let mut r = Response::new(Body::from(resp.body));
    *r.status_mut() = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::BAD_REQUEST);
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    r
}

enum Reply {
    Json(Vec<u8>),
    Query(sluice_core::QueryResponse),
}

async fn dispatch(
    st: &AppState,
    parts: &http::request::Parts,
    target: Option<&str>,
    body: &[u8],
    peer: SocketAddr,
    request_id: &str,
) -> Result<Reply, DispatchError> {
    let headers = header_pairs(&parts.headers);
    let req = HttpRequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &headers,
    };
    let now_ms = st.clock.now_millis();
    let lookup =
        |akid: &str, token: Option<&str>| -> Result<Credential<Principal>, CredentialError> {
            if akid == st.root_pair.access_key_id {
                if token.is_some() {
                    return Err(CredentialError::InvalidSessionToken);
                }
                return Ok(Credential::new(
                    st.root_pair.secret_access_key.clone(),
                    Principal::root(&st.cfg.account_id, Some(akid.to_string())),
                ));
            }
            for src in &st.services.credentials {
                match src.lookup(akid, token, now_ms) {
                    Ok((secret, principal)) => {
                        return Ok(Credential {
                            secret_access_key: secret,
                            principal,
                        });
                    }
                    Err(CredentialLookupError::Unknown) => continue,
                    Err(CredentialLookupError::InvalidToken) => {
                        return Err(CredentialError::InvalidSessionToken);
                    }
                    Err(CredentialLookupError::Expired) => {
                        return Err(CredentialError::ExpiredSessionToken);
                    }
                }
            }
            Err(CredentialError::UnknownAccessKey)
        };
    let verified = st
        .verifier
        .verify(&req, body, st.clock.now(), &lookup)
        .map_err(|e| {
            let query =
                claimed_service(parts).and_then(|svc| st.services.query.get(svc.as_str()).cloned());
            let err = match &query {
                Some(_) => AwsError::with_status(e.query_code(), e.query_status(), e.message()),
                None => AwsError::with_status(e.code(), e.status(), e.message().to_string()),
            };
            (err, None, query)
        })?;
    let mut ctx = CallContext::direct(verified.principal, &st.cfg.region, request_id);
    ctx.source_ip = Some(peer.ip().to_string());
    ctx.user_agent = parts
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect());

    // awsQuery services (IAM, STS): form-encoded body, XML answers.
    if let Some(q) = st.services.query.get(verified.service.as_str()) {
        let params = parse_form(body).map_err(|e| (e, None, Some(q.clone())))?;
        return Ok(Reply::Query(q.handle_query(&ctx, params).await));
    }

    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    // A hot operation may be decoded by its service straight from the body (same answers and
    // errors; see `JsonService::handle_raw`); anything it declines takes the generic path.
    if let Ok((svc, op)) = sluice_wire::route(content_type, target)
        && verified.service == svc.signing_name()
        && let Some(service) = st.services.json.get(svc.signing_name())
        && let Some(result) = service.handle_raw(op.name(), &ctx, body).await
    {
        return result.map(Reply::Json).map_err(|e| (e, Some(svc), None));
    }
    let (svc, op, input) =
        sluice_wire::parse_request(content_type, target, body).map_err(|e| (e, None, None))?;
    if verified.service != svc.signing_name() {
        let e = sluice_sigv4::SigV4Error::wrong_service(svc.signing_name());
        return Err((
            AwsError::with_status(e.code(), e.status(), e.message().to_string()),
            Some(svc),
            None,
        ));
    }
    let result = match st.services.json.get(svc.signing_name()) {
        Some(service) => service.handle(op.name(), &ctx, input).await,
        None => Err(AwsError::client(
            "UnknownOperationException",
            format!(
                "The {} service is not served by sluice yet.",
                svc.signing_name()
            ),
        )),
    };
    let out = result.map_err(|e| (e, Some(svc), None))?;
    Ok(Reply::Json(
        serde_json::to_vec(&out).unwrap_or_else(|_| b"{}".to_vec()),
    ))
}
