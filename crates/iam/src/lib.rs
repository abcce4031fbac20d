//! AWS IAM and STS for sluice: users, roles, inline and managed policies, access keys,
//! service-linked roles, the policy simulator, `GetCallerIdentity` and `AssumeRole`.
//!
//! Design constraints:
//! - **Protocol.** IAM and STS speak awsQuery ([`query`]): form-encoded input validated against
//!   botocore's models, XML output in AWS's shapes, policy documents URL-encoded in responses.
//!   [`IamService`] and [`StsService`] are the [`QueryService`]s the server routes to (signing
//!   names `iam` and `sts`); both share one [`Iam`].
//! - **In-memory index, single node.** Every IAM entity, access key and STS session is held in
//!   memory (loaded from the store by [`Iam::open`], updated on every write this process makes),
//!   because the server's credential lookups ([`CredentialSource`]) and KMS's identity-policy
//!   lookups ([`IdentityPolicies`]) are synchronous while the store is async. Policies are
//!   compiled once, when written or loaded. Writes are serialized by one async writer lock:
//!   check against memory, apply the store batch (durable), then update memory. This assumes one
//!   sluice process owns the data directory (the server's `LOCK` file enforces it); a second
//!   node writing the same store would not be seen until restart.
//! - **Secrets.** Secret access keys and session tokens are generated from the CSPRNG, stored only
//!   sealed under the root key ([`model`] lists the labels), kept in memory in zeroizing strings,
//!   returned once (CreateAccessKey, AssumeRole) and never logged or audited.
//! - **Authorization.** Every IAM action is authorized before it has any effect, with the
//!   caller's identity policies (the account root is allowed everything; services acting in
//!   process use the Rust API). `AssumeRole` evaluates the role's trust policy with the policy
//!   engine with key-policy semantics: the trust policy must name the caller, or name its
//!   account and an identity policy must allow `sts:AssumeRole`; `sts:ExternalId` is set from
//!   `ExternalId`. `GetCallerIdentity` needs no permission.
//! - **Audit.** Every IAM / STS call that names a served operation appends one audit record
//!   (event sources `iam.amazonaws.com`, `sts.amazonaws.com`), allowed or denied; a state change
//!   and its record commit in one store batch ([`Iam`]'s `commit`).
//! - **Time** comes from the injected [`Clock`]: session expiry is tested with `ManualClock`.

pub mod model;
mod ops;
pub mod query;
mod simulate;
mod sts;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine;
use parking_lot::RwLock;
use serde_json::Value;
use sluice_audit::{AuditEvent, AuditLog, AuditResource};
use sluice_core::{
    AwsError, CallContext, Clock, CredentialLookupError, CredentialSource, Principal,
    PrincipalKind, QueryResponse, QueryService,
};
use sluice_crypto::RootKey;
use sluice_kms::IdentityPolicies;
use sluice_policy::{Context, Decision, Inputs, Policy, Request, ResourceKind, evaluate};
use sluice_store::{Batch, KeyRange, Store};
use zeroize::Zeroizing;

use model::*;

/// Event source of IAM audit records.
pub const IAM_EVENT_SOURCE: &str = "iam.amazonaws.com";
/// Event source of STS audit records.
pub const STS_EVENT_SOURCE: &str = "sts.amazonaws.com";

/// Configuration of the IAM service.
#[derive(Debug, Clone)]
pub struct IamConfig {
    /// The account id.
    pub account: String,
    /// The region the server serves (for audit records).
    pub region: String,
}

#[derive(Debug, Clone)]
pub(crate) struct UserEntry {
    pub rec: UserRecord,
    pub inline: BTreeMap<String, Arc<Policy>>,
}

#[derive(Debug, Clone)]
pub(crate) struct RoleEntry {
    pub rec: RoleRecord,
    pub inline: BTreeMap<String, Arc<Policy>>,
    pub trust: Arc<Policy>,
}

#[derive(Debug, Clone)]
pub(crate) struct PolicyEntry {
    pub rec: PolicyRecord,
    pub compiled: Arc<Policy>,
}

pub(crate) struct KeyEntry {
    pub rec: AccessKeyRecord,
    pub secret: Zeroizing<String>,
}

pub(crate) struct SessionEntry {
    pub rec: SessionRecord,
    pub secret: Zeroizing<String>,
    pub token: Zeroizing<String>,
}

/// The in-memory index (see the crate docs).
#[derive(Default)]
pub(crate) struct State {
    pub users: BTreeMap<String, UserEntry>,
    pub roles: BTreeMap<String, RoleEntry>,
    pub policies: BTreeMap<String, PolicyEntry>,
    pub keys: HashMap<String, KeyEntry>,
    pub sessions: HashMap<String, SessionEntry>,
}

impl State {
    /// The managed policy with this ARN.
    pub(crate) fn policy_by_arn(&self, arn: &str) -> Option<&PolicyEntry> {
        self.policies
            .get(&role_name_of(arn).to_ascii_lowercase())
            .filter(|p| p.rec.arn == arn)
    }

    /// The compiled identity policies of a user or role (inline, then attached).
    fn compiled_for(
        &self,
        inline: &BTreeMap<String, Arc<Policy>>,
        attached: &[String],
    ) -> Vec<Arc<Policy>> {
        let mut v: Vec<Arc<Policy>> = inline.values().cloned().collect();
        v.extend(
            attached
                .iter()
                .filter_map(|a| self.policy_by_arn(a).map(|p| p.compiled.clone())),
        );
        v
    }

    pub(crate) fn user_of(&self, p: &Principal) -> Option<&UserEntry> {
        if p.kind != PrincipalKind::IamUser {
            return None;
        }
        self.users
            .get(&role_name_of(&p.arn).to_ascii_lowercase())
            .filter(|u| u.rec.arn == p.arn && u.rec.id == p.user_id)
    }

    pub(crate) fn role_of(&self, p: &Principal) -> Option<&RoleEntry> {
        let arn = p.role_arn.as_deref()?;
        if p.kind != PrincipalKind::AssumedRole {
            return None;
        }
        // The session's user id starts with the role's id: a role deleted and created again
        // under the same name does not serve the old sessions.
        let role_id = p.user_id.split(':').next().unwrap_or_default();
        self.roles
            .get(&role_name_of(arn).to_ascii_lowercase())
            .filter(|r| r.rec.arn == arn && r.rec.id == role_id)
    }
}

/// The IAM and STS service state and logic.
pub struct Iam {
    store: Arc<dyn Store>,
    root: Arc<RootKey>,
    clock: Arc<dyn Clock>,
    audit: AuditLog,
    cfg: IamConfig,
    state: RwLock<State>,
    writer: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Iam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iam")
            .field("account", &self.cfg.account)
            .finish_non_exhaustive()
    }
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn store_err(e: sluice_store::StoreError) -> AwsError {
    tracing::error!(error = %e, "iam store operation failed");
    AwsError::internal()
}

/// Compiles an identity policy document, mapping errors to `MalformedPolicyDocument`.
pub(crate) fn compile_identity(doc: &str) -> Result<Arc<Policy>, AwsError> {
    Policy::parse_identity_policy(doc)
        .map(Arc::new)
        .map_err(|e| errors::malformed(e.to_string()))
}

/// Compiles a trust policy: any statement shape, but every statement must name a principal.
pub(crate) fn compile_trust(doc: &str) -> Result<Arc<Policy>, AwsError> {
    let v: Value = serde_json::from_str(doc)
        .map_err(|_| errors::malformed("This policy contains invalid Json"))?;
    let statements = match v.get("Statement") {
        Some(Value::Array(a)) => a.clone(),
        Some(o @ Value::Object(_)) => vec![o.clone()],
        _ => Vec::new(),
    };
    for st in &statements {
        if st.get("Principal").is_none() && st.get("NotPrincipal").is_none() {
            return Err(errors::malformed("Missing required field Principal"));
        }
        if st.get("Resource").is_some() || st.get("NotResource").is_some() {
            return Err(errors::malformed("Has prohibited field Resource"));
        }
    }
    Policy::parse(doc)
        .map(Arc::new)
        .map_err(|e| errors::malformed(e.to_string()))
}

/// The AWS errors IAM and STS return.
pub mod errors {
    use sluice_core::AwsError;

    /// `NoSuchEntity` (404).
    pub fn no_such_entity(msg: impl Into<String>) -> AwsError {
        AwsError::with_status("NoSuchEntity", 404, msg)
    }
    /// `EntityAlreadyExists` (409).
    pub fn already_exists(msg: impl Into<String>) -> AwsError {
        AwsError::with_status("EntityAlreadyExists", 409, msg)
    }
    /// `MalformedPolicyDocument` (400).
    pub fn malformed(msg: impl Into<String>) -> AwsError {
        AwsError::with_status("MalformedPolicyDocument", 400, msg)
    }
    /// `LimitExceeded` (409).
    pub fn limit(msg: impl Into<String>) -> AwsError {
        AwsError::with_status("LimitExceeded", 409, msg)
    }
    /// `DeleteConflict` (409).
    pub fn delete_conflict(msg: impl Into<String>) -> AwsError {
        AwsError::with_status("DeleteConflict", 409, msg)
    }
    /// `ValidationError` (400).
    pub fn validation(msg: impl Into<String>) -> AwsError {
        AwsError::with_status("ValidationError", 400, msg)
    }
    /// `InvalidInput` (400).
    pub fn invalid_input(msg: impl Into<String>) -> AwsError {
        AwsError::with_status("InvalidInput", 400, msg)
    }
    /// `AccessDenied` (403).
    pub fn access_denied(msg: impl Into<String>) -> AwsError {
        AwsError::with_status("AccessDenied", 403, msg)
    }
}

/// One call in progress: who, what, on which resource; whether its audit record was already
/// committed with its state change.
pub(crate) struct Call<'a> {
    pub ctx: &'a CallContext,
    pub source: &'static str,
    pub op: &'a str,
    pub input: &'a Value,
    pub resource: Option<(String, &'static str)>,
    pub audited: AtomicBool,
}

/// The result of one operation: the `Result` element's XML (if any) and the audit record's
/// response elements (identifiers only; for writes, already committed with the change).
pub(crate) struct Out {
    pub xml: Option<String>,
    pub audit: Value,
}

impl Out {
    pub(crate) fn xml(x: query::Xml) -> Self {
        Out {
            xml: Some(x.into_string()),
            audit: Value::Null,
        }
    }
    pub(crate) fn empty() -> Self {
        Out {
            xml: None,
            audit: Value::Null,
        }
    }
}

pub(crate) fn rfc3339(t: time::OffsetDateTime) -> String {
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Iam {
    /// Opens the service over `store`, loading every IAM entity, key and session into memory.
    pub async fn open(
        store: Arc<dyn Store>,
        root: Arc<RootKey>,
        clock: Arc<dyn Clock>,
        audit: AuditLog,
        cfg: IamConfig,
    ) -> Result<Self, AwsError> {
        let iam = Iam {
            store,
            root,
            clock,
            audit,
            cfg,
            state: RwLock::new(State::default()),
            writer: tokio::sync::Mutex::new(()),
        };
        iam.load().await?;
        Ok(iam)
    }

    /// [`Iam::open`] from synchronous code (the server's service assembly). Must not be called
    /// on a Tokio current-thread runtime's only thread while that runtime is needed elsewhere;
    /// the store's reads run on Tokio's blocking pool, so blocking here is safe on a worker.
    pub fn open_blocking(
        store: Arc<dyn Store>,
        root: Arc<RootKey>,
        clock: Arc<dyn Clock>,
        audit: AuditLog,
        cfg: IamConfig,
    ) -> Result<Self, AwsError> {
        futures::executor::block_on(Self::open(store, root, clock, audit, cfg))
    }

    /// The account.
    pub fn account(&self) -> &str {
        &self.cfg.account
    }

    async fn scan_all(&self, ns: &str) -> Result<Vec<Vec<u8>>, AwsError> {
        let mut out = Vec::new();
        let mut start: Option<Vec<u8>> = None;
        loop {
            let range = match &start {
                Some(s) => {
                    let mut k = s.clone();
                    k.push(0);
                    KeyRange::from(&k)
                }
                None => KeyRange::all(),
            };
            let page = self
                .store
                .scan(ns, range, 1000, false)
                .await
                .map_err(store_err)?;
            let n = page.len();
            for (k, v) in page {
                out.push(v.value);
                start = Some(k);
            }
            if n < 1000 {
                return Ok(out);
            }
        }
    }

    fn open_sealed(&self, label: &str, b64text: &str) -> Option<Zeroizing<String>> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64text)
            .ok()?;
        let plain = self.root.open(label.as_bytes(), &bytes).ok()?;
        String::from_utf8(plain.to_vec()).ok().map(Zeroizing::new)
    }

    pub(crate) fn seal(&self, label: &str, secret: &str) -> String {
        b64(&self.root.seal(label.as_bytes(), secret.as_bytes()))
    }

    async fn load(&self) -> Result<(), AwsError> {
        let mut st = State::default();
        for v in self.scan_all(NS_POLICIES).await? {
            let Ok(rec) = serde_json::from_slice::<PolicyRecord>(&v) else {
                tracing::error!("unreadable iam policy record skipped");
                continue;
            };
            match compile_identity(&rec.document) {
                Ok(compiled) => {
                    st.policies
                        .insert(rec.name.to_ascii_lowercase(), PolicyEntry { rec, compiled });
                }
                Err(_) => tracing::error!(policy = %rec.arn, "stored policy does not compile"),
            }
        }
        for v in self.scan_all(NS_USERS).await? {
            let Ok(rec) = serde_json::from_slice::<UserRecord>(&v) else {
                tracing::error!("unreadable iam user record skipped");
                continue;
            };
            let inline = compile_inline(&rec.inline);
            st.users
                .insert(rec.name.to_ascii_lowercase(), UserEntry { rec, inline });
        }
        for v in self.scan_all(NS_ROLES).await? {
            let Ok(rec) = serde_json::from_slice::<RoleRecord>(&v) else {
                tracing::error!("unreadable iam role record skipped");
                continue;
            };
            let Ok(trust) = compile_trust(&rec.trust) else {
                tracing::error!(role = %rec.arn, "stored trust policy does not compile");
                continue;
            };
            let inline = compile_inline(&rec.inline);
            st.roles.insert(
                rec.name.to_ascii_lowercase(),
                RoleEntry { rec, inline, trust },
            );
        }
        for v in self.scan_all(NS_ACCESS_KEYS).await? {
            let Ok(rec) = serde_json::from_slice::<AccessKeyRecord>(&v) else {
                continue;
            };
            match self.open_sealed(&format!("iam/access-key/{}", rec.id), &rec.secret_sealed) {
                Some(secret) => {
                    st.keys.insert(rec.id.clone(), KeyEntry { rec, secret });
                }
                None => tracing::error!(access_key = %rec.id, "sealed secret does not open"),
            }
        }
        let now = self.clock.now_millis();
        for v in self.scan_all(NS_SESSIONS).await? {
            let Ok(rec) = serde_json::from_slice::<SessionRecord>(&v) else {
                continue;
            };
            if rec.expires_ms <= now {
                continue;
            }
            let secret = self.open_sealed(
                &format!("iam/session-secret/{}", rec.id),
                &rec.secret_sealed,
            );
            let token =
                self.open_sealed(&format!("iam/session-token/{}", rec.id), &rec.token_sealed);
            if let (Some(secret), Some(token)) = (secret, token) {
                st.sessions
                    .insert(rec.id.clone(), SessionEntry { rec, secret, token });
            }
        }
        *self.state.write() = st;
        Ok(())
    }

    /// Applies a state change together with the call's audit record (one batch), so a change
    /// that is acknowledged always has its record; `response` are the record's response
    /// elements.
    pub(crate) async fn commit(
        &self,
        call: &Call<'_>,
        batch: Batch,
        response: Value,
    ) -> Result<(), AwsError> {
        let rec = self.record(call, Ok(response));
        let batch = self.audit.append_to(batch, &rec);
        self.store.apply(batch).await.map_err(store_err)?;
        call.audited.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Persists a user record and updates the index.
    pub(crate) async fn save_user(
        &self,
        call: &Call<'_>,
        rec: UserRecord,
        response: Value,
    ) -> Result<(), AwsError> {
        let inline = compile_inline(&rec.inline);
        let key = rec.name.to_ascii_lowercase();
        let json = serde_json::to_vec(&rec).map_err(|_| AwsError::internal())?;
        self.commit(
            call,
            Batch::new().put(NS_USERS, key.clone(), json),
            response,
        )
        .await?;
        self.state
            .write()
            .users
            .insert(key, UserEntry { rec, inline });
        Ok(())
    }

    /// Persists a role record and updates the index.
    pub(crate) async fn save_role(
        &self,
        call: &Call<'_>,
        rec: RoleRecord,
        response: Value,
    ) -> Result<(), AwsError> {
        let inline = compile_inline(&rec.inline);
        let trust = compile_trust(&rec.trust)?;
        let key = rec.name.to_ascii_lowercase();
        let json = serde_json::to_vec(&rec).map_err(|_| AwsError::internal())?;
        self.commit(
            call,
            Batch::new().put(NS_ROLES, key.clone(), json),
            response,
        )
        .await?;
        self.state
            .write()
            .roles
            .insert(key, RoleEntry { rec, inline, trust });
        Ok(())
    }

    pub(crate) fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    pub(crate) fn user_arn(&self, path: &str, name: &str) -> String {
        format!("arn:aws:iam::{}:user{path}{name}", self.cfg.account)
    }

    pub(crate) fn role_arn(&self, path: &str, name: &str) -> String {
        format!("arn:aws:iam::{}:role{path}{name}", self.cfg.account)
    }

    pub(crate) fn policy_arn(&self, path: &str, name: &str) -> String {
        format!("arn:aws:iam::{}:policy{path}{name}", self.cfg.account)
    }

    /// The request context every IAM / STS authorization sees.
    pub(crate) fn base_context(&self, ctx: &CallContext) -> Context {
        let mut c = Context::new();
        c.set_time(self.clock.now().unix_timestamp());
        c.set(
            "aws:SecureTransport",
            if ctx.secure_transport {
                "true"
            } else {
                "false"
            },
        );
        if let Some(ip) = &ctx.source_ip {
            c.set("aws:SourceIp", ip.as_str());
        }
        c
    }

    /// Authorizes `action` on `resource` with the caller's identity policies.
    pub(crate) fn authorize(
        &self,
        ctx: &CallContext,
        action: &str,
        resource: &str,
    ) -> Result<(), AwsError> {
        if ctx.principal.kind == PrincipalKind::Root && ctx.principal.account == self.cfg.account {
            return Ok(());
        }
        let policies = self.policies_for(&ctx.principal);
        let refs: Vec<&Policy> = policies.iter().map(|p| p.as_ref()).collect();
        let context = self.base_context(ctx);
        let request = Request {
            principal: sluice_kms::policy_authz::principal_info(&ctx.principal),
            action,
            resource,
            context: &context,
        };
        let outcome = evaluate(
            &request,
            &Inputs {
                identity_policies: &refs,
                resource_policy: None,
                resource_account: &self.cfg.account,
                kind: ResourceKind::Generic,
            },
        );
        if outcome.decision == Decision::Allow {
            return Ok(());
        }
        let msg = outcome.denial_message(&request).unwrap_or_else(|| {
            format!(
                "User: {} is not authorized to perform: {action} on resource: {resource}",
                ctx.principal.arn
            )
        });
        Err(errors::access_denied(msg))
    }

    /// The audit record of `call` with its outcome.
    pub(crate) fn record(
        &self,
        call: &Call<'_>,
        outcome: Result<Value, &AwsError>,
    ) -> sluice_audit::AuditRecord {
        let op = call.op;
        let read_only =
            op.starts_with("Get") || op.starts_with("List") || op.starts_with("Simulate");
        let request_parameters = match call.input {
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| (lower_first(k), v.clone())).collect())
            }
            _ => Value::Null,
        };
        self.audit.record_for(
            call.ctx,
            AuditEvent {
                event_source: call.source,
                event_name: op,
                request_parameters,
                resources: call
                    .resource
                    .as_ref()
                    .map(|(arn, kind)| {
                        vec![AuditResource {
                            arn: arn.clone(),
                            kind: kind.to_string(),
                        }]
                    })
                    .unwrap_or_default(),
                read_only,
            },
            outcome,
        )
    }

    /// Writes the audit record of a call that did not commit one with a state change.
    pub(crate) async fn audit(&self, call: &Call<'_>, outcome: Result<Value, &AwsError>) {
        if call.audited.load(Ordering::Relaxed) {
            return;
        }
        let rec = self.record(call, outcome);
        if let Err(e) = self.audit.write(&rec).await {
            tracing::error!(code = %e.code, op = call.op, "iam audit record not written");
        }
    }

    /// Handles one awsQuery request for `service` (`iam` or `sts`).
    async fn handle(
        &self,
        service: &'static str,
        ctx: &CallContext,
        params: Vec<(String, String)>,
    ) -> QueryResponse {
        let (xmlns, types, source) = if service == "sts" {
            (query::STS_XMLNS, &*query::STS_SHAPES, STS_EVENT_SOURCE)
        } else {
            (query::IAM_XMLNS, &*query::IAM_SHAPES, IAM_EVENT_SOURCE)
        };
        let (op, input) = match query::to_json(service, types, &params) {
            Ok(x) => x,
            Err(e) => return query::error_body(xmlns, &e, &ctx.request_id),
        };
        let (action, resource) = if service == "sts" {
            let res = (op == "AssumeRole")
                .then(|| query::s(&input, "RoleArn").map(|a| (a.to_string(), "AWS::IAM::Role")))
                .flatten();
            (None, res)
        } else {
            match self.resource_for(&op, ctx, &input) {
                Some((action, resource, kind)) => (Some(action), Some((resource, kind))),
                None => {
                    let e = AwsError::client(
                        "InvalidAction",
                        format!("Could not find operation {op} for version 2010-05-08"),
                    );
                    return query::error_body(xmlns, &e, &ctx.request_id);
                }
            }
        };
        let call = Call {
            ctx,
            source,
            op: &op,
            input: &input,
            resource,
            audited: AtomicBool::new(false),
        };
        let result = match (&action, &call.resource) {
            (Some(action), Some((res, _))) => self.authorize(ctx, action, res),
            _ => Ok(()),
        };
        let result = match result {
            Ok(()) if service == "sts" => self.call_sts(&call).await,
            Ok(()) => self.call_iam(&call).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(out) => {
                self.audit(&call, Ok(out.audit)).await;
                query::success(xmlns, &op, out.xml.as_deref(), &ctx.request_id)
            }
            Err(e) => {
                if e.status >= 500 {
                    tracing::warn!(op, code = %e.code, "iam call failed");
                }
                if e.code != "InvalidAction" {
                    self.audit(&call, Err(&e)).await;
                }
                query::error_body(xmlns, &e, &ctx.request_id)
            }
        }
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

fn compile_inline(inline: &BTreeMap<String, String>) -> BTreeMap<String, Arc<Policy>> {
    inline
        .iter()
        .filter_map(|(n, d)| match compile_identity(d) {
            Ok(p) => Some((n.clone(), p)),
            Err(_) => {
                tracing::error!(policy = %n, "stored inline policy does not compile");
                None
            }
        })
        .collect()
}

impl IdentityPolicies for Iam {
    fn policies_for(&self, principal: &Principal) -> Vec<Arc<Policy>> {
        let st = self.state.read();
        match principal.kind {
            PrincipalKind::IamUser => st
                .user_of(principal)
                .map(|u| st.compiled_for(&u.inline, &u.rec.attached))
                .unwrap_or_default(),
            PrincipalKind::AssumedRole => st
                .role_of(principal)
                .map(|r| st.compiled_for(&r.inline, &r.rec.attached))
                .unwrap_or_default(),
            PrincipalKind::Root | PrincipalKind::Service => Vec::new(),
        }
    }
}

impl CredentialSource for Iam {
    fn lookup(
        &self,
        access_key_id: &str,
        session_token: Option<&str>,
        now_ms: i64,
    ) -> Result<(Zeroizing<String>, Principal), CredentialLookupError> {
        use subtle::ConstantTimeEq;
        let st = self.state.read();
        if let Some(k) = st.keys.get(access_key_id) {
            if session_token.is_some() {
                return Err(CredentialLookupError::InvalidToken);
            }
            if k.rec.status != "Active" {
                return Err(CredentialLookupError::Unknown);
            }
            let Some(u) = st.users.get(&k.rec.user.to_ascii_lowercase()) else {
                return Err(CredentialLookupError::Unknown);
            };
            return Ok((
                k.secret.clone(),
                Principal {
                    kind: PrincipalKind::IamUser,
                    account: self.cfg.account.clone(),
                    arn: u.rec.arn.clone(),
                    user_id: u.rec.id.clone(),
                    access_key_id: Some(access_key_id.to_string()),
                    role_arn: None,
                },
            ));
        }
        if let Some(s) = st.sessions.get(access_key_id) {
            let Some(token) = session_token else {
                return Err(CredentialLookupError::InvalidToken);
            };
            if !bool::from(token.as_bytes().ct_eq(s.token.as_bytes())) {
                return Err(CredentialLookupError::InvalidToken);
            }
            if now_ms >= s.rec.expires_ms {
                return Err(CredentialLookupError::Expired);
            }
            return Ok((
                s.secret.clone(),
                sts::session_principal(&s.rec, Some(access_key_id)),
            ));
        }
        Err(CredentialLookupError::Unknown)
    }
}

/// The IAM awsQuery service (signing name `iam`).
#[derive(Debug, Clone)]
pub struct IamService(pub Arc<Iam>);

/// The STS awsQuery service (signing name `sts`).
#[derive(Debug, Clone)]
pub struct StsService(pub Arc<Iam>);

#[async_trait::async_trait]
impl QueryService for IamService {
    fn signing_name(&self) -> &'static str {
        "iam"
    }

    async fn handle_query(
        &self,
        ctx: &CallContext,
        params: Vec<(String, String)>,
    ) -> QueryResponse {
        self.0.handle("iam", ctx, params).await
    }

    fn error_response(&self, err: &AwsError, request_id: &str) -> QueryResponse {
        query::error_body(query::IAM_XMLNS, err, request_id)
    }
}

#[async_trait::async_trait]
impl QueryService for StsService {
    fn signing_name(&self) -> &'static str {
        "sts"
    }

    async fn handle_query(
        &self,
        ctx: &CallContext,
        params: Vec<(String, String)>,
    ) -> QueryResponse {
        self.0.handle("sts", ctx, params).await
    }

    fn error_response(&self, err: &AwsError, request_id: &str) -> QueryResponse {
        query::error_body(query::STS_XMLNS, err, request_id)
    }
}
