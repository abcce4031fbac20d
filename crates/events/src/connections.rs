//! EventBridge connections: the credentials API destinations send, sealed in a Secrets Manager
//! secret under the caller's KMS key, and a connection state that tells the truth.
//!
//! # Design constraints
//! - **Credentials live only in a managed secret.** The connection record ([`ConnectionRecord`],
//!   namespace `events.connections`) holds what DescribeConnection may show: names, endpoints,
//!   non-secret parameters. Every credential (ApiKeyValue, Password, ClientSecret, parameters
//!   with `IsValueSecret`, the current OAuth token) is in the Secrets Manager secret
//!   `events!connection/<name>/<uuid>` (OwningService `events`), sealed by Secrets Manager's
//!   envelope under the connection's KMS key. Nothing here logs a credential or puts one in an
//!   error text, a StateReason, an audit record or a dead letter.
//! - **EventBridge acts as its service-linked role.** The secret is created, written, read and
//!   deleted as a session of `AWSServiceRoleForAmazonEventBridgeApiDestinations` (trusted by
//!   `apidestinations.events.amazonaws.com`, created on first use with the permissions of AWS's
//!   `AmazonEventBridgeApiDestinationsServiceRolePolicy`, [`slr_policy`]) through the Secrets
//!   Manager Rust API, so Secrets Manager authorizes the role with its identity policy and KMS
//!   sees the role as principal, `kms:ViaService = secretsmanager.<region>.amazonaws.com` and the
//!   encryption context `{SecretARN, SecretVersionId}`; the audit trail shows each KMS call with
//!   that context. A customer managed key therefore needs a key policy that allows the role
//!   (story A's policy does, through its account statement) **and** the tag
//!   `EventBridgeApiDestinations=true` that the role's policy requires; a refusal names both.
//!   Without KmsKeyIdentifier the secret uses Secrets Manager's AWS managed key (sluice's
//!   stand-in for AWS's owned key).
//! - **States are true.** sluice authorizes synchronously: CreateConnection and an
//!   UpdateConnection that changes credentials or the key seal the secret (and for OAuth get a
//!   token) before answering, and answer `AUTHORIZED` only if that worked; otherwise the
//!   connection is `DEAUTHORIZED`, its secret is deleted, and `StateReason` names the key, the
//!   KMS operation and why the policy refused it (the policy engine's explanation, from
//!   [`sluice_kms::Kms::explain_access`]). The transitional states (`AUTHORIZING`, ...) are
//!   therefore never observed. At invocation, a connection is deauthorized automatically (its
//!   secret kept) when its secret was deleted, cannot be opened (KMS error), its OAuth token
//!   cannot be refreshed, or its API-key / basic endpoint answers 401 or 407
//!   (`auto_deauthorize`). DeauthorizeConnection deletes the secret; UpdateConnection with
//!   AuthParameters authorizes again.
//! - **Reads are cached.** Invocations read the secret through a [`SecretCache`] whose entries
//!   live `EventsConfig::connection_secret_ttl_ms` (default 60 s) and die at once when the
//!   secret changes; so a key policy broken after the last read is noticed within that time.
//!
//! # Stored formats
//! - `events.connections`, key = connection name: [`ConnectionRecord`] (JSON, `"v": 1`).
//! - The managed secret's SecretString: `ConnSecret` as JSON, `"v": 1`:
//!   `{"v":1,"auth":"API_KEY"|"BASIC"|"OAUTH_CLIENT_CREDENTIALS",
//!     "api_key":{"name","value"}?, "basic":{"username","password"}?,
//!     "oauth":{"client_id","client_secret","endpoint","method","params":P}?,
//!     "invocation":P, "token":{"access_token","token_type","expires_ms"}?}` where
//!   `P = {"headers":[{"key","value","secret"}],"query":[...],"body":[...]}` holds every
//!   parameter with its value (secret or not).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_core::{AwsError, CallContext, Principal};
use sluice_iam::Iam;
use sluice_kms::{IdentityPolicies, Kms};
use sluice_outbound::Outbound;
use sluice_secrets::{NewValue, SecretCache, Secrets};
use sluice_store::{Batch, Store};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::model::{
    ApiDestinationRecord, ConnectionRecord, NS_API_DESTINATIONS, NS_CONNECTIONS, OAuthMeta,
    ParamMeta, ParamsMeta,
};
use crate::ops::{Out, Post, not_found, page, s, secs, with_token};
use crate::{Core, internal, scan_all};

/// The service principal of EventBridge API destinations (its service-linked role's trust).
pub const SLR_SERVICE: &str = "apidestinations.events.amazonaws.com";
/// The name of the service-linked role's policy.
pub const SLR_POLICY_NAME: &str = "AmazonEventBridgeApiDestinationsServiceRolePolicy";
/// The tag a customer managed key needs for the service-linked role to use it.
pub const KEY_TAG: &str = "EventBridgeApiDestinations";
/// Role session name of EventBridge's calls.
const SESSION: &str = "EventBridgeApiDestinations";
const OWNER: &str = "events";
const MAX_CONNECTIONS: usize = 3000;
const HIDDEN: &str = "HIDDEN_DUE_TO_SECURITY_REASONS";
const MANAGED_KEY: &str = "alias/aws/secretsmanager (the AWS managed key of Secrets Manager)";

pub(crate) const AUTHORIZED: &str = "AUTHORIZED";
pub(crate) const DEAUTHORIZED: &str = "DEAUTHORIZED";
pub(crate) const API_KEY: &str = "API_KEY";
pub(crate) const BASIC: &str = "BASIC";
pub(crate) const OAUTH: &str = "OAUTH_CLIENT_CREDENTIALS";

/// AWS's `AmazonEventBridgeApiDestinationsServiceRolePolicy` (v3), the permissions of the
/// service-linked role.
pub fn slr_policy() -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "SecretsManagerAccess",
                "Effect": "Allow",
                "Action": ["secretsmanager:CreateSecret", "secretsmanager:UpdateSecret",
                           "secretsmanager:DescribeSecret", "secretsmanager:DeleteSecret",
                           "secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"],
                "Resource": "arn:aws:secretsmanager:*:*:secret:events!connection/*",
                "Condition": {"StringEquals": {"aws:ResourceAccount": "${aws:PrincipalAccount}"}}
            },
            {
                "Sid": "KMSAccess",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"],
                "Resource": "arn:aws:kms:*:*:key/*",
                "Condition": {
                    "StringLike": {
                        "kms:ViaService": "secretsmanager.*.amazonaws.com",
                        "kms:EncryptionContext:SecretARN": ["arn:aws:secretsmanager:*:*:secret:events!connection/*"]
                    },
                    "StringEquals": {"aws:ResourceTag/EventBridgeApiDestinations": "true"}
                }
            }
        ]
    })
    .to_string()
}

fn slr_policy_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(slr_policy)
}

/// What API destinations need besides the EventBridge store: Secrets Manager (the connection
/// secrets), KMS (explaining refusals), IAM (the service-linked role) and the outbound client.
#[derive(Debug, Clone)]
pub struct ApiDestinationDeps {
    /// Secrets Manager.
    pub secrets: Arc<Secrets>,
    /// KMS.
    pub kms: Arc<Kms>,
    /// IAM and STS.
    pub iam: Arc<Iam>,
    /// The outbound client (it enforces the operator's destination policy).
    pub outbound: Outbound,
}

/// The running machinery of connections and API destinations.
pub(crate) struct Runtime {
    pub(crate) secrets: Arc<Secrets>,
    pub(crate) kms: Arc<Kms>,
    pub(crate) iam: Arc<Iam>,
    pub(crate) outbound: Outbound,
    pub(crate) cache: SecretCache,
    slr: Mutex<Option<Principal>>,
    /// One lock per connection ARN serializing OAuth token refreshes.
    pub(crate) refresh: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Rate limiters by API destination ARN.
    pub(crate) buckets: Mutex<HashMap<String, Arc<crate::apidest::Bucket>>>,
    /// Connection secrets as parsed from the secret cache's value, by secret ARN: reused
    /// while the cache hands out that same value (so a secret is parsed once per cache fill,
    /// not once per invocation, and is dropped with the value it was parsed from).
    parsed: Mutex<HashMap<String, ParsedSecret>>,
}

/// A connection secret and the cached secret value it was parsed from.
struct ParsedSecret {
    from: std::sync::Weak<sluice_secrets::SecretValue>,
    secret: Arc<ConnSecret>,
}

impl Runtime {
    pub(crate) fn new(deps: ApiDestinationDeps, ttl: Duration) -> Self {
        Self {
            cache: SecretCache::with_ttl(deps.secrets.clone(), ttl),
            secrets: deps.secrets,
            kms: deps.kms,
            iam: deps.iam,
            outbound: deps.outbound,
            slr: Mutex::new(None),
            refresh: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            parsed: Mutex::new(HashMap::new()),
        }
    }

    /// A call context of EventBridge's service-linked role (created on first use).
    pub(crate) async fn slr_ctx(&self, core: &Core) -> Result<CallContext, AwsError> {
        let arn = self
            .iam
            .ensure_service_linked_role(SLR_SERVICE, SLR_POLICY_NAME, slr_policy_text())
            .await?;
        let cached = self.slr.lock().clone();
        let principal = match cached {
            // A session of a role deleted and created again has no policies: assume again.
            Some(p)
                if p.role_arn.as_deref() == Some(arn.as_str())
                    && !self.iam.policies_for(&p).is_empty() =>
            {
                p
            }
            _ => {
                let p = self
                    .iam
                    .assume_role_for_service(SLR_SERVICE, &arn, SESSION)
                    .await?;
                *self.slr.lock() = Some(p.clone());
                p
            }
        };
        Ok(CallContext::direct(
            principal,
            &core.cfg.region,
            &uuid::Uuid::new_v4().to_string(),
        ))
    }

    pub(crate) fn refresh_lock(&self, conn_arn: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.refresh
            .lock()
            .entry(conn_arn.to_string())
            .or_default()
            .clone()
    }
}

/// Connections and API destinations held in memory (mirrors of the store, as buses and rules).
#[derive(Default)]
pub(crate) struct ConnState {
    pub(crate) connections: RwLock<HashMap<String, Arc<ConnectionRecord>>>,
    pub(crate) apidests: RwLock<HashMap<String, Arc<ApiDestinationRecord>>>,
    pub(crate) runtime: OnceLock<Runtime>,
}

impl std::fmt::Debug for ConnState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnState")
            .field("connections", &self.connections.read().len())
            .field("apidests", &self.apidests.read().len())
            .finish_non_exhaustive()
    }
}

impl ConnState {
    pub(crate) async fn load(&self, store: &dyn Store) -> Result<(), AwsError> {
        let mut c = HashMap::new();
        for (_, v) in scan_all(store, NS_CONNECTIONS).await? {
            let r: ConnectionRecord = serde_json::from_slice(&v.value).map_err(internal)?;
            c.insert(r.name.clone(), Arc::new(r));
        }
        let mut d = HashMap::new();
        for (_, v) in scan_all(store, NS_API_DESTINATIONS).await? {
            let r: ApiDestinationRecord = serde_json::from_slice(&v.value).map_err(internal)?;
            d.insert(r.name.clone(), Arc::new(r));
        }
        *self.connections.write() = c;
        *self.apidests.write() = d;
        Ok(())
    }

    pub(crate) fn install_connection(&self, name: String, rec: Option<ConnectionRecord>) {
        match rec {
            Some(r) => {
                self.connections.write().insert(name, Arc::new(r));
            }
            None => {
                self.connections.write().remove(&name);
            }
        }
    }

    pub(crate) fn install_api_destination(&self, name: String, rec: Option<ApiDestinationRecord>) {
        match rec {
            Some(r) => {
                self.apidests.write().insert(name, Arc::new(r));
            }
            None => {
                self.apidests.write().remove(&name);
            }
        }
    }

    /// The connection `arn` names, if it exists (same name and uuid).
    pub(crate) fn connection_by_arn(&self, arn: &str) -> Option<Arc<ConnectionRecord>> {
        let name = arn.split(":connection/").nth(1)?.split('/').next()?;
        self.connections
            .read()
            .get(name)
            .filter(|c| c.arn == arn)
            .cloned()
    }
}

pub(crate) fn runtime(core: &Core) -> Result<&Runtime, AwsError> {
    core.conns.runtime.get().ok_or_else(|| {
        AwsError::validation(
            "Connections and API destinations are not enabled on this server (no Secrets Manager attached).",
        )
    })
}

// ---------------------------------------------------------------- the secret

/// One parameter with its value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, Zeroize, PartialEq, Eq)]
pub(crate) struct SecretParam {
    pub key: String,
    pub value: String,
    #[serde(default)]
    pub secret: bool,
}

/// A connection's HTTP parameters with every value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, Zeroize, PartialEq, Eq)]
pub(crate) struct SecretParams {
    #[serde(default)]
    pub headers: Vec<SecretParam>,
    #[serde(default)]
    pub query: Vec<SecretParam>,
    #[serde(default)]
    pub body: Vec<SecretParam>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, Zeroize, PartialEq, Eq)]
pub(crate) struct ApiKey {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, Zeroize, PartialEq, Eq)]
pub(crate) struct Basic {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, Zeroize, PartialEq, Eq)]
pub(crate) struct OAuthSecret {
    pub client_id: String,
    pub client_secret: String,
    pub endpoint: String,
    pub method: String,
    #[serde(default)]
    pub params: SecretParams,
}

/// An OAuth access token.
#[derive(Debug, Clone, Default, Serialize, Deserialize, Zeroize, PartialEq, Eq)]
pub(crate) struct Token {
    pub access_token: String,
    pub token_type: String,
    /// When it expires, Unix ms (`None`: the endpoint gave no `expires_in`).
    #[serde(default)]
    pub expires_ms: Option<i64>,
}

/// The value of a connection's managed secret (see the module docs). Wiped on drop.
#[derive(Clone, Default, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub(crate) struct ConnSecret {
    pub v: u32,
    pub auth: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ApiKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<Basic>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthSecret>,
    #[serde(default)]
    pub invocation: SecretParams,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Token>,
}

impl std::fmt::Debug for ConnSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnSecret")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl ConnSecret {
    pub(crate) fn to_text(&self) -> Zeroizing<String> {
        Zeroizing::new(serde_json::to_string(self).unwrap_or_default())
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// Replaces credentials in a request's AuthParameters (for the audit record).
pub(crate) fn redact_auth_parameters(a: &mut Value) {
    fn hide(v: &mut Value, key: &str) {
        if let Some(x) = v.get_mut(key) {
            *x = json!(HIDDEN);
        }
    }
    fn hide_params(p: Option<&mut Value>) {
        let Some(p) = p else { return };
        for list in [
            "HeaderParameters",
            "QueryStringParameters",
            "BodyParameters",
        ] {
            if let Some(Value::Array(items)) = p.get_mut(list) {
                for it in items {
                    let secret = it.get("IsValueSecret").and_then(Value::as_bool) == Some(true);
                    if secret || list == "BodyParameters" {
                        hide(it, "Value");
                    }
                }
            }
        }
    }
    if let Some(b) = a.get_mut("BasicAuthParameters") {
        hide(b, "Password");
    }
    if let Some(k) = a.get_mut("ApiKeyAuthParameters") {
        hide(k, "ApiKeyValue");
    }
    if let Some(o) = a.get_mut("OAuthParameters") {
        if let Some(c) = o.get_mut("ClientParameters") {
            hide(c, "ClientSecret");
        }
        hide_params(o.get_mut("OAuthHttpParameters"));
    }
    hide_params(a.get_mut("InvocationHttpParameters"));
}

/// Parses a ConnectionHttpParameters input; parameters without a value take the value of the
/// same key in `base`.
fn params_in(v: Option<&Value>, base: Option<&SecretParams>) -> Result<SecretParams, AwsError> {
    let mut out = SecretParams::default();
    let Some(v) = v else { return Ok(out) };
    for (list, field) in [
        ("HeaderParameters", 0),
        ("QueryStringParameters", 1),
        ("BodyParameters", 2),
    ] {
        let Some(items) = v.get(list).and_then(Value::as_array) else {
            continue;
        };
        for it in items {
            let key = s(it, "Key").unwrap_or_default().to_string();
            if key.is_empty() {
                return Err(AwsError::validation(format!("Each of {list} needs a Key.")));
            }
            let base_list = base.map(|b| match field {
                0 => &b.headers,
                1 => &b.query,
                _ => &b.body,
            });
            let value = match s(it, "Value") {
                Some(x) => x.to_string(),
                None => base_list
                    .and_then(|l| l.iter().find(|p| p.key == key))
                    .map(|p| p.value.clone())
                    .ok_or_else(|| {
                        AwsError::validation(format!(
                            "The parameter {key} of {list} needs a Value."
                        ))
                    })?,
            };
            let p = SecretParam {
                key,
                value,
                secret: it.get("IsValueSecret").and_then(Value::as_bool) == Some(true),
            };
            match field {
                0 => out.headers.push(p),
                1 => out.query.push(p),
                _ => out.body.push(p),
            }
        }
    }
    Ok(out)
}

fn params_meta(p: &SecretParams) -> ParamsMeta {
    let m = |l: &[SecretParam]| -> Vec<ParamMeta> {
        l.iter()
            .map(|p| ParamMeta {
                key: p.key.clone(),
                value: (!p.secret).then(|| p.value.clone()),
                secret: p.secret,
            })
            .collect()
    };
    ParamsMeta {
        headers: m(&p.headers),
        query: m(&p.query),
        body: m(&p.body),
    }
}

fn params_json(p: &ParamsMeta) -> Value {
    let l = |l: &[ParamMeta]| -> Value {
        Value::Array(
            l.iter()
                .map(|p| {
                    let mut v = json!({"Key": p.key, "IsValueSecret": p.secret});
                    if let Some(x) = &p.value {
                        v["Value"] = json!(x);
                    }
                    v
                })
                .collect(),
        )
    };
    let mut v = json!({});
    if !p.headers.is_empty() {
        v["HeaderParameters"] = l(&p.headers);
    }
    if !p.query.is_empty() {
        v["QueryStringParameters"] = l(&p.query);
    }
    if !p.body.is_empty() {
        v["BodyParameters"] = l(&p.body);
    }
    v
}

fn missing(what: &str, auth_type: &str) -> AwsError {
    AwsError::validation(format!(
        "{what} is required for AuthorizationType {auth_type} (the connection has no stored credentials to keep it from)."
    ))
}

/// Builds the secret of a connection of type `auth_type` from the request's AuthParameters,
/// taking what the request leaves out from `base` (the current secret) and `rec` (the current
/// record, for non-secret names).
fn build_secret(
    core: &Core,
    auth_type: &str,
    auth: &Value,
    base: Option<&ConnSecret>,
    rec: Option<&ConnectionRecord>,
) -> Result<ConnSecret, AwsError> {
    if auth.get("ConnectivityParameters").is_some() {
        return Err(private_refused());
    }
    let base = base.filter(|b| b.auth == auth_type);
    let block = |name: &str| auth.get(name).filter(|v| v.is_object());
    for (t, b) in [
        (API_KEY, "ApiKeyAuthParameters"),
        (BASIC, "BasicAuthParameters"),
        (OAUTH, "OAuthParameters"),
    ] {
        if t != auth_type && block(b).is_some() {
            return Err(AwsError::validation(format!(
                "AuthParameters may only hold the parameters of AuthorizationType {auth_type}; {b} is for {t}."
            )));
        }
    }
    let mut sec = ConnSecret::default();
    sec.v = 1;
    sec.auth = auth_type.to_string();
    match auth_type {
        API_KEY => {
            let b = block("ApiKeyAuthParameters");
            let name = b
                .and_then(|b| s(b, "ApiKeyName"))
                .map(str::to_string)
                .or_else(|| {
                    base.and_then(|x| x.api_key.as_ref())
                        .map(|k| k.name.clone())
                })
                .or_else(|| rec.and_then(|r| r.api_key_name.clone()))
                .ok_or_else(|| missing("ApiKeyAuthParameters.ApiKeyName", auth_type))?;
            let value = b
                .and_then(|b| s(b, "ApiKeyValue"))
                .map(str::to_string)
                .or_else(|| {
                    base.and_then(|x| x.api_key.as_ref())
                        .map(|k| k.value.clone())
                })
                .ok_or_else(|| missing("ApiKeyAuthParameters.ApiKeyValue", auth_type))?;
            sec.api_key = Some(ApiKey { name, value });
        }
        BASIC => {
            let b = block("BasicAuthParameters");
            let username = b
                .and_then(|b| s(b, "Username"))
                .map(str::to_string)
                .or_else(|| {
                    base.and_then(|x| x.basic.as_ref())
                        .map(|k| k.username.clone())
                })
                .or_else(|| rec.and_then(|r| r.username.clone()))
                .ok_or_else(|| missing("BasicAuthParameters.Username", auth_type))?;
            let password = b
                .and_then(|b| s(b, "Password"))
                .map(str::to_string)
                .or_else(|| {
                    base.and_then(|x| x.basic.as_ref())
                        .map(|k| k.password.clone())
                })
                .ok_or_else(|| missing("BasicAuthParameters.Password", auth_type))?;
            sec.basic = Some(Basic { username, password });
        }
        OAUTH => {
            let b = block("OAuthParameters");
            let bo = base.and_then(|x| x.oauth.as_ref());
            let ro = rec.and_then(|r| r.oauth.as_ref());
            let client = b.and_then(|b| b.get("ClientParameters"));
            let client_id = client
                .and_then(|c| s(c, "ClientID"))
                .map(str::to_string)
                .or_else(|| bo.map(|o| o.client_id.clone()))
                .or_else(|| ro.map(|o| o.client_id.clone()))
                .ok_or_else(|| missing("OAuthParameters.ClientParameters.ClientID", auth_type))?;
            let client_secret = client
                .and_then(|c| s(c, "ClientSecret"))
                .map(str::to_string)
                .or_else(|| bo.map(|o| o.client_secret.clone()))
                .ok_or_else(|| {
                    missing("OAuthParameters.ClientParameters.ClientSecret", auth_type)
                })?;
            let endpoint = b
                .and_then(|b| s(b, "AuthorizationEndpoint"))
                .map(str::to_string)
                .or_else(|| bo.map(|o| o.endpoint.clone()))
                .or_else(|| ro.map(|o| o.endpoint.clone()))
                .ok_or_else(|| missing("OAuthParameters.AuthorizationEndpoint", auth_type))?;
            let method = b
                .and_then(|b| s(b, "HttpMethod"))
                .map(str::to_string)
                .or_else(|| bo.map(|o| o.method.clone()))
                .or_else(|| ro.map(|o| o.method.clone()))
                .ok_or_else(|| missing("OAuthParameters.HttpMethod", auth_type))?;
            if let Some(rt) = core.conns.runtime.get() {
                rt.outbound.policy().check_url(&endpoint).map_err(|e| {
                    AwsError::validation(format!(
                        "AuthorizationEndpoint is not allowed: {}",
                        e.message
                    ))
                })?;
            }
            let params = match b.and_then(|b| b.get("OAuthHttpParameters")) {
                Some(p) => params_in(Some(p), bo.map(|o| &o.params))?,
                None => bo.map(|o| o.params.clone()).unwrap_or_default(),
            };
            sec.oauth = Some(OAuthSecret {
                client_id,
                client_secret,
                endpoint,
                method,
                params,
            });
        }
        other => {
            return Err(AwsError::validation(format!(
                "AuthorizationType {other} is not valid."
            )));
        }
    }
    sec.invocation = match auth.get("InvocationHttpParameters") {
        Some(p) => params_in(Some(p), base.map(|b| &b.invocation))?,
        None => base.map(|b| b.invocation.clone()).unwrap_or_default(),
    };
    Ok(sec)
}

/// Copies the non-secret parts of `sec` into `rec`.
fn apply_meta(rec: &mut ConnectionRecord, sec: &ConnSecret) {
    rec.auth_type = sec.auth.clone();
    rec.api_key_name = sec.api_key.as_ref().map(|k| k.name.clone());
    rec.username = sec.basic.as_ref().map(|b| b.username.clone());
    rec.oauth = sec.oauth.as_ref().map(|o| OAuthMeta {
        client_id: o.client_id.clone(),
        endpoint: o.endpoint.clone(),
        method: o.method.clone(),
        params: params_meta(&o.params),
    });
    rec.invocation = params_meta(&sec.invocation);
}

fn private_refused() -> AwsError {
    AwsError::validation(
        "Private APIs (ConnectivityParameters / InvocationConnectivityParameters, VPC Lattice resource configurations) are not supported by sluice.",
    )
}

// ---------------------------------------------------------------- sealing and reasons

fn key_desc(rec: &ConnectionRecord) -> &str {
    rec.kms_key.as_deref().unwrap_or(MANAGED_KEY)
}

/// The `kms:<Action>` and key ARN of KMS's AccessDenied message.
fn denied_call(msg: &str) -> Option<(String, String)> {
    let rest = msg.split("to perform: ").nth(1)?;
    let action = rest.split_whitespace().next()?.to_string();
    let resource = rest
        .split("on resource: ")
        .nth(1)?
        .split_whitespace()
        .next()?
        .to_string();
    Some((action, resource))
}

/// A StateReason for a Secrets Manager / KMS failure on the connection secret `secret_arn`
/// while `doing` ("sealing", "opening").
pub(crate) async fn secret_failure_reason(
    rt: &Runtime,
    ctx: &CallContext,
    rec: &ConnectionRecord,
    secret_arn: &str,
    doing: &str,
    e: &AwsError,
) -> String {
    let msg = e.message.as_str();
    if e.code == "AccessDeniedException"
        && let Some(kms_msg) = msg.strip_prefix("Access to KMS is not allowed. ")
    {
        let (action, key) = denied_call(kms_msg)
            .unwrap_or_else(|| ("kms:GenerateDataKey".into(), key_desc(rec).to_string()));
        let enc = BTreeMap::from([
            ("SecretARN".to_string(), secret_arn.to_string()),
            (
                "SecretVersionId".to_string(),
                "RequestToValidateKeyAccess".to_string(),
            ),
        ]);
        let why = rt
            .kms
            .explain_access(&ctx.via("secretsmanager"), &key, &action, &enc)
            .await
            .map(|w| w.replace(" (see the failed elements below)", ""))
            .unwrap_or_else(|| kms_msg.to_string());
        let mut r = format!(
            "KMS refused {action} on key {key} while Secrets Manager was {doing} the connection secret {secret_arn} for EventBridge's service-linked role ({}): {why}",
            ctx.principal.arn
        );
        if why.contains(&format!("aws:ResourceTag/{KEY_TAG}")) {
            r.push_str(&format!(
                " The role's policy {SLR_POLICY_NAME} lets it use a customer managed key only if the key has the tag {KEY_TAG}=true."
            ));
        }
        return r;
    }
    match e.code.as_ref() {
        "EncryptionFailure" | "DecryptionFailure" => format!(
            "KMS {} with key {} failed while Secrets Manager was {doing} the connection secret {secret_arn} ({}): {msg}",
            if doing == "opening" {
                "Decrypt"
            } else {
                "GenerateDataKey"
            },
            key_desc(rec),
            e.code
        ),
        "ResourceNotFoundException" => {
            format!("The connection secret {secret_arn} no longer exists (it was deleted).")
        }
        _ => format!(
            "Secrets Manager refused {doing} the connection secret {secret_arn} ({}): {msg}",
            e.code
        ),
    }
}

async fn drop_secret(rt: &Runtime, ctx: &CallContext, rec: &mut ConnectionRecord) {
    if let Some(arn) = rec.secret_arn.take() {
        rt.cache.invalidate(&arn);
        if let Err(e) = rt.secrets.delete_managed_secret(ctx, OWNER, &arn).await
            && e.code != "ResourceNotFoundException"
        {
            tracing::warn!(connection = %rec.name, secret = %arn, code = %e.code, "could not delete a connection secret");
        }
    }
    rec.sealed_key = None;
}

fn conn_uuid(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or_default()
}

/// Writes `sec` into the connection's managed secret under its key: a new version of the
/// current secret, or a new secret when there is none or the key changed. On failure the
/// secret is deleted and the reason returned.
async fn seal(
    rt: &Runtime,
    ctx: &CallContext,
    rec: &mut ConnectionRecord,
    sec: &ConnSecret,
) -> Result<(), String> {
    let text = sec.to_text();
    let want = rec.kms_key.clone();
    if let Some(arn) = rec.secret_arn.clone() {
        if rec.sealed_key == want {
            match rt
                .secrets
                .update_managed_secret(ctx, OWNER, &arn, NewValue::String(&text), None)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.code == "ResourceNotFoundException" => {
                    rec.secret_arn = None;
                }
                Err(e) => {
                    let reason = secret_failure_reason(rt, ctx, rec, &arn, "sealing", &e).await;
                    drop_secret(rt, ctx, rec).await;
                    return Err(reason);
                }
            }
        } else {
            drop_secret(rt, ctx, rec).await;
        }
    }
    let name = format!("events!connection/{}/{}", rec.name, conn_uuid(&rec.arn));
    let mut reserved = rt.secrets.reserve_managed_secret(ctx, OWNER, &name).await;
    if matches!(&reserved, Err(e) if e.code == "ResourceExistsException") {
        // A leftover of an interrupted attempt: it holds nothing this connection uses.
        let _ = rt.secrets.delete_managed_secret(ctx, OWNER, &name).await;
        reserved = rt.secrets.reserve_managed_secret(ctx, OWNER, &name).await;
    }
    let r = reserved.map_err(|e| {
        format!(
            "Secrets Manager could not create the connection secret {name} for EventBridge's service-linked role ({}): {}",
            e.code, e.message
        )
    })?;
    rec.secret_arn = Some(r.arn.clone());
    rec.sealed_key = want.clone();
    match rt
        .secrets
        .update_managed_secret(ctx, OWNER, &r.arn, NewValue::String(&text), want.as_deref())
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => {
            let reason = secret_failure_reason(rt, ctx, rec, &r.arn, "sealing", &e).await;
            drop_secret(rt, ctx, rec).await;
            Err(reason)
        }
    }
}

/// Authorizes `rec` with the credentials `sec`: seals them, and for OAuth gets a token and
/// seals it too. Sets the state, reason and times.
async fn authorize_connection(
    core: &Core,
    rt: &Runtime,
    rec: &mut ConnectionRecord,
    mut sec: ConnSecret,
) {
    apply_meta(rec, &sec);
    sec.token = None;
    let result: Result<(), String> = async {
        let ctx = rt.slr_ctx(core).await.map_err(|e| {
            format!(
                "EventBridge could not act as its service-linked role ({}): {}",
                e.code, e.message
            )
        })?;
        seal(rt, &ctx, rec, &sec).await?;
        if let Some(o) = &sec.oauth {
            let now = core.clock.now_millis();
            sec.token = Some(crate::oauth::fetch_token(&rt.outbound, o, now).await?);
            seal(rt, &ctx, rec, &sec).await?;
        }
        Ok(())
    }
    .await;
    let now = core.clock.now_millis();
    match result {
        Ok(()) => {
            rec.state = AUTHORIZED.into();
            rec.state_reason = None;
            rec.last_authorized_ms = Some(now);
        }
        Err(reason) => {
            tracing::info!(connection = %rec.name, reason = %reason, "connection not authorized");
            rec.state = DEAUTHORIZED.into();
            rec.state_reason = Some(reason);
        }
    }
    rec.modified_ms = now;
}

/// Reads and parses the connection's secret as EventBridge's role (cached).
pub(crate) async fn read_secret(
    core: &Core,
    rt: &Runtime,
    rec: &ConnectionRecord,
) -> Result<Arc<ConnSecret>, (AwsError, CallContext)> {
    let ctx = rt.slr_ctx(core).await.map_err(|e| {
        (
            e,
            CallContext::direct(Principal::service(&core.cfg.account, SLR_SERVICE), "", ""),
        )
    })?;
    let Some(arn) = &rec.secret_arn else {
        return Err((
            AwsError::client("ResourceNotFoundException", "no secret"),
            ctx,
        ));
    };
    let v = match rt.cache.get(&ctx, arn).await {
        Ok(v) => v,
        Err(e) => return Err((e, ctx)),
    };
    if let Some(p) = rt.parsed.lock().get(arn)
        && std::ptr::eq(p.from.as_ptr(), Arc::as_ptr(&v))
    {
        return Ok(p.secret.clone());
    }
    match v.as_str().and_then(ConnSecret::parse) {
        Some(s) => {
            let secret = Arc::new(s);
            let mut parsed = rt.parsed.lock();
            // Forget secrets whose values the cache has let go.
            parsed.retain(|_, p| p.from.strong_count() > 0);
            parsed.insert(
                arn.clone(),
                ParsedSecret {
                    from: Arc::downgrade(&v),
                    secret: secret.clone(),
                },
            );
            Ok(secret)
        }
        None => Err((internal("a connection secret does not parse"), ctx)),
    }
}

/// Deauthorizes the connection `arn` after an invocation-time failure, unless it changed since
/// `seen_modified_ms` (a concurrent UpdateConnection wins). The secret is kept unless `gone`.
pub(crate) async fn auto_deauthorize(
    core: &Arc<Core>,
    arn: &str,
    seen_modified_ms: i64,
    reason: String,
    gone: bool,
) {
    let _guard = core.write_lock.lock().await;
    let Some(cur) = core.conns.connection_by_arn(arn) else {
        return;
    };
    if cur.state == DEAUTHORIZED || cur.modified_ms != seen_modified_ms {
        return;
    }
    let mut rec = (*cur).clone();
    rec.state = DEAUTHORIZED.into();
    rec.state_reason = Some(reason);
    rec.modified_ms = core.clock.now_millis().max(cur.modified_ms + 1);
    if gone {
        rec.secret_arn = None;
        rec.sealed_key = None;
    }
    let Ok(value) = serde_json::to_vec(&rec) else {
        return;
    };
    match core
        .store
        .apply(Batch::new().put(NS_CONNECTIONS, rec.name.as_bytes().to_vec(), value))
        .await
    {
        Ok(_) => {
            tracing::warn!(connection = %rec.name, reason = rec.state_reason.as_deref().unwrap_or(""), "connection deauthorized");
            core.conns.install_connection(rec.name.clone(), Some(rec));
        }
        Err(e) => {
            tracing::error!(connection = %rec.name, error = %e, "could not record a deauthorization")
        }
    }
}

// ---------------------------------------------------------------- operations

fn conn_json_times(v: &mut Value, r: &ConnectionRecord) {
    v["CreationTime"] = secs(r.created_ms);
    v["LastModifiedTime"] = secs(r.modified_ms);
    if let Some(t) = r.last_authorized_ms {
        v["LastAuthorizedTime"] = secs(t);
    }
}

fn short(r: &ConnectionRecord) -> Value {
    let mut v = json!({
        "ConnectionArn": r.arn,
        "ConnectionState": r.state,
    });
    conn_json_times(&mut v, r);
    v
}

fn conn_put(batch: Batch, r: &ConnectionRecord) -> Result<Batch, AwsError> {
    Ok(batch.put(
        NS_CONNECTIONS,
        r.name.as_bytes().to_vec(),
        serde_json::to_vec(r).map_err(internal)?,
    ))
}

fn kms_key_in(input: &Value) -> Option<String> {
    s(input, "KmsKeyIdentifier")
        .filter(|k| !k.is_empty())
        .map(str::to_string)
}

pub(crate) fn conn_arn(core: &Core, name: &str, uuid: &str) -> String {
    format!(
        "arn:aws:events:{}:{}:connection/{name}/{uuid}",
        core.cfg.region, core.cfg.account
    )
}

fn connection(core: &Core, name: &str) -> Result<Arc<ConnectionRecord>, AwsError> {
    core.conns
        .connections
        .read()
        .get(name)
        .cloned()
        .ok_or_else(|| not_found(format!("Connection '{name}' does not exist.")))
}

/// The ARN a not-found connection is authorized against.
fn any_arn(core: &Core, name: &str) -> String {
    conn_arn(core, name, "*")
}

pub(crate) async fn create(
    core: &Arc<Core>,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
) -> Result<Out, AwsError> {
    let name = s(input, "Name").unwrap_or_default();
    let arn = conn_arn(core, name, &uuid::Uuid::new_v4().to_string());
    res.push(arn.clone());
    core.authorize(ctx, "events:CreateConnection", &arn, None)?;
    let rt = runtime(core)?;
    if input.get("InvocationConnectivityParameters").is_some() {
        return Err(private_refused());
    }
    {
        let c = core.conns.connections.read();
        if c.contains_key(name) {
            return Err(AwsError::client(
                "ResourceAlreadyExistsException",
                format!("Connection {name} already exists."),
            ));
        }
        if c.len() >= MAX_CONNECTIONS {
            return Err(AwsError::client(
                "LimitExceededException",
                format!("The account has reached its limit of {MAX_CONNECTIONS} connections."),
            ));
        }
    }
    let auth_type = s(input, "AuthorizationType").unwrap_or_default();
    let empty = json!({});
    let auth = input.get("AuthParameters").unwrap_or(&empty);
    let sec = build_secret(core, auth_type, auth, None, None)?;
    let now = core.clock.now_millis();
    let mut rec = ConnectionRecord {
        v: 1,
        name: name.to_string(),
        arn: arn.clone(),
        description: s(input, "Description").map(str::to_string),
        auth_type: auth_type.to_string(),
        state: "AUTHORIZING".into(),
        state_reason: None,
        secret_arn: None,
        kms_key: kms_key_in(input),
        sealed_key: None,
        api_key_name: None,
        username: None,
        oauth: None,
        invocation: ParamsMeta::default(),
        created_ms: now,
        modified_ms: now,
        last_authorized_ms: None,
    };
    authorize_connection(core, rt, &mut rec, sec).await;
    let batch = conn_put(
        Batch::new().expect(NS_CONNECTIONS, name.as_bytes().to_vec(), None),
        &rec,
    )?;
    Ok(Out {
        resp: short(&rec),
        batch,
        post: vec![Post::Connection(name.to_string(), Some(Box::new(rec)))],
    })
}

fn describe_json(r: &ConnectionRecord) -> Value {
    let mut auth = json!({});
    match r.auth_type.as_str() {
        API_KEY => {
            if let Some(n) = &r.api_key_name {
                auth["ApiKeyAuthParameters"] = json!({"ApiKeyName": n});
            }
        }
        BASIC => {
            if let Some(u) = &r.username {
                auth["BasicAuthParameters"] = json!({"Username": u});
            }
        }
        _ => {
            if let Some(o) = &r.oauth {
                let mut v = json!({
                    "ClientParameters": {"ClientID": o.client_id},
                    "AuthorizationEndpoint": o.endpoint,
                    "HttpMethod": o.method,
                });
                if !o.params.is_empty() {
                    v["OAuthHttpParameters"] = params_json(&o.params);
                }
                auth["OAuthParameters"] = v;
            }
        }
    }
    if !r.invocation.is_empty() {
        auth["InvocationHttpParameters"] = params_json(&r.invocation);
    }
    let mut v = json!({
        "Name": r.name,
        "ConnectionArn": r.arn,
        "ConnectionState": r.state,
        "AuthorizationType": r.auth_type,
        "AuthParameters": auth,
    });
    if let Some(d) = &r.description {
        v["Description"] = json!(d);
    }
    if let Some(x) = &r.state_reason {
        v["StateReason"] = json!(x);
    }
    if let Some(x) = &r.secret_arn {
        v["SecretArn"] = json!(x);
    }
    if let Some(x) = &r.kms_key {
        v["KmsKeyIdentifier"] = json!(x);
    }
    conn_json_times(&mut v, r);
    v
}

pub(crate) fn describe(
    core: &Core,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
) -> Result<Out, AwsError> {
    let name = s(input, "Name").unwrap_or_default();
    let rec = connection(core, name);
    let arn = rec
        .as_ref()
        .map(|r| r.arn.clone())
        .unwrap_or_else(|_| any_arn(core, name));
    res.push(arn.clone());
    core.authorize(ctx, "events:DescribeConnection", &arn, None)?;
    let rec = rec?;
    Ok(Out::read(describe_json(&rec)))
}

pub(crate) async fn update(
    core: &Arc<Core>,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
) -> Result<Out, AwsError> {
    let name = s(input, "Name").unwrap_or_default();
    let cur = connection(core, name);
    let arn = cur
        .as_ref()
        .map(|r| r.arn.clone())
        .unwrap_or_else(|_| any_arn(core, name));
    res.push(arn);
    core.authorize(ctx, "events:UpdateConnection", &res[0], None)?;
    let cur = cur?;
    let rt = runtime(core)?;
    if input.get("InvocationConnectivityParameters").is_some() {
        return Err(private_refused());
    }
    let mut rec = (*cur).clone();
    if let Some(d) = s(input, "Description") {
        rec.description = Some(d.to_string());
    }
    let auth_type = s(input, "AuthorizationType").unwrap_or(&cur.auth_type);
    let new_key = match input.get("KmsKeyIdentifier") {
        Some(_) => kms_key_in(input),
        None => rec.kms_key.clone(),
    };
    let auth = input.get("AuthParameters");
    if auth.is_some() || auth_type != cur.auth_type || new_key != rec.kms_key {
        let base = if rec.secret_arn.is_some() {
            read_secret(core, rt, &rec).await.ok()
        } else {
            None
        };
        let empty = json!({});
        let sec = build_secret(
            core,
            auth_type,
            auth.unwrap_or(&empty),
            base.as_deref(),
            Some(&rec),
        )?;
        rec.kms_key = new_key;
        rec.state = "AUTHORIZING".into();
        authorize_connection(core, rt, &mut rec, sec).await;
    }
    rec.modified_ms = core.clock.now_millis().max(cur.modified_ms + 1);
    let batch = conn_put(Batch::new(), &rec)?;
    Ok(Out {
        resp: short(&rec),
        batch,
        post: vec![Post::Connection(name.to_string(), Some(Box::new(rec)))],
    })
}

pub(crate) async fn deauthorize(
    core: &Arc<Core>,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
) -> Result<Out, AwsError> {
    let name = s(input, "Name").unwrap_or_default();
    let cur = connection(core, name);
    let arn = cur
        .as_ref()
        .map(|r| r.arn.clone())
        .unwrap_or_else(|_| any_arn(core, name));
    res.push(arn);
    core.authorize(ctx, "events:DeauthorizeConnection", &res[0], None)?;
    let cur = cur?;
    let rt = runtime(core)?;
    let mut rec = (*cur).clone();
    if rec.secret_arn.is_some() {
        let slr = rt.slr_ctx(core).await?;
        drop_secret(rt, &slr, &mut rec).await;
    }
    rec.state = DEAUTHORIZED.into();
    rec.state_reason = Some(
        "Deauthorized by DeauthorizeConnection: its credentials were removed. UpdateConnection with AuthParameters authorizes it again."
            .into(),
    );
    rec.modified_ms = core.clock.now_millis().max(cur.modified_ms + 1);
    let batch = conn_put(Batch::new(), &rec)?;
    Ok(Out {
        resp: short(&rec),
        batch,
        post: vec![Post::Connection(name.to_string(), Some(Box::new(rec)))],
    })
}

pub(crate) async fn delete(
    core: &Arc<Core>,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
) -> Result<Out, AwsError> {
    let name = s(input, "Name").unwrap_or_default();
    let cur = connection(core, name);
    let arn = cur
        .as_ref()
        .map(|r| r.arn.clone())
        .unwrap_or_else(|_| any_arn(core, name));
    res.push(arn);
    core.authorize(ctx, "events:DeleteConnection", &res[0], None)?;
    let cur = cur?;
    let rt = runtime(core)?;
    let mut rec = (*cur).clone();
    if rec.secret_arn.is_some() {
        let slr = rt.slr_ctx(core).await?;
        drop_secret(rt, &slr, &mut rec).await;
    }
    rt.refresh.lock().remove(&rec.arn);
    let mut resp = short(&rec);
    resp["ConnectionState"] = json!("DELETING");
    Ok(Out {
        resp,
        batch: Batch::new().delete(NS_CONNECTIONS, name.as_bytes().to_vec()),
        post: vec![Post::Connection(name.to_string(), None)],
    })
}

pub(crate) fn list(core: &Core, ctx: &CallContext, input: &Value) -> Result<Out, AwsError> {
    core.authorize(ctx, "events:ListConnections", &any_arn(core, "*"), None)?;
    let prefix = s(input, "NamePrefix").unwrap_or("");
    let state = s(input, "ConnectionState");
    let items: Vec<(String, Value)> = core
        .conns
        .connections
        .read()
        .values()
        .filter(|c| c.name.starts_with(prefix) && state.is_none_or(|st| c.state == st))
        .map(|c| {
            let mut v = json!({
                "ConnectionArn": c.arn,
                "Name": c.name,
                "ConnectionState": c.state,
                "AuthorizationType": c.auth_type,
            });
            if let Some(r) = &c.state_reason {
                v["StateReason"] = json!(r);
            }
            conn_json_times(&mut v, c);
            (c.name.clone(), v)
        })
        .collect();
    let (list, next) = page(items, input)?;
    Ok(Out::read(with_token(json!({"Connections": list}), next)))
}
