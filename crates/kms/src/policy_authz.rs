//! The policy-engine authorizer: key policies enforced with `sluice-policy`.
//!
//! For a call on a key the request context carries `kms:CallerAccount`, `kms:ViaService` (when
//! another service calls on the principal's behalf), `kms:EncryptionContext:*` and
//! `kms:EncryptionContextKeys` (operations with an encryption context), `aws:ResourceTag/*` (the
//! key's tags), `aws:RequestTag/*` / `aws:TagKeys` (TagResource, CreateKey), `aws:CurrentTime`,
//! `aws:SecureTransport` and `aws:SourceIp`; principal keys come from the principal itself.
//! The key policy is evaluated with [`ResourceKind::KmsKey`] semantics: authoritative, with
//! root-account statements delegating to the identity policies of the caller's account.
//!
//! Compiled key policies are cached per key ARN and policy text, so a policy compiles once.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use sluice_core::{AwsError, CallContext, Principal, PrincipalKind};
use sluice_policy::{
    Context, Decision, Inputs, Policy, PrincipalInfo, Request, ResourceKind, evaluate,
};

use crate::authz::{Authorizer, KeyRequest};

/// Where a principal's identity policies come from (IAM users and roles). Root has none: it is
/// implicitly allowed everything its account's resource policies let it do.
pub trait IdentityPolicies: Send + Sync + std::fmt::Debug {
    /// The compiled identity policies attached to `principal`.
    fn policies_for(&self, principal: &Principal) -> Vec<Arc<Policy>>;
}

/// No identity policies at all (only root and services exist).
#[derive(Debug, Default)]
pub struct NoIdentityPolicies;

impl IdentityPolicies for NoIdentityPolicies {
    fn policies_for(&self, _principal: &Principal) -> Vec<Arc<Policy>> {
        Vec::new()
    }
}

/// Authorizes KMS calls with the policy engine.
#[derive(Debug)]
pub struct PolicyAuthorizer {
    identity: Arc<dyn IdentityPolicies>,
    cache: RwLock<HashMap<String, (String, Arc<Policy>)>>,
}

impl PolicyAuthorizer {
    /// An authorizer reading identity policies from `identity`.
    pub fn new(identity: Arc<dyn IdentityPolicies>) -> Self {
        Self {
            identity,
            cache: RwLock::new(HashMap::new()),
        }
    }

    fn compiled(&self, arn: &str, text: &str) -> Result<Arc<Policy>, AwsError> {
        if let Some((t, p)) = self.cache.read().get(arn)
            && t == text
        {
            return Ok(p.clone());
        }
        let p = Arc::new(Policy::parse_key_policy(text).map_err(|e| {
            tracing::error!(key = arn, error = %e, "stored key policy does not compile");
            AwsError::with_status(
                "KMSInternalException",
                500,
                "The key policy could not be evaluated.",
            )
        })?);
        let mut c = self.cache.write();
        if c.len() > 10_000 {
            c.clear();
        }
        c.insert(arn.to_string(), (text.to_string(), p.clone()));
        Ok(p)
    }
}

/// The policy engine's view of a principal.
pub fn principal_info(p: &Principal) -> PrincipalInfo<'_> {
    let username = match p.kind {
        PrincipalKind::IamUser => p.arn.rsplit('/').next(),
        _ => None,
    };
    PrincipalInfo {
        arn: &p.arn,
        role_arn: p.role_arn.as_deref(),
        account: &p.account,
        user_id: &p.user_id,
        username,
        is_root: p.kind == PrincipalKind::Root,
        is_service: p.kind == PrincipalKind::Service,
    }
}

/// The request context of a KMS call.
pub fn kms_context(ctx: &CallContext, req: &KeyRequest<'_>, now_secs: i64) -> Context {
    let mut c = Context::new();
    c.set("kms:CallerAccount", ctx.principal.account.as_str());
    if let Some(v) = &ctx.via_service {
        c.set("kms:ViaService", v.as_str());
    }
    if let Some(enc) = req.encryption_context {
        c.set_encryption_context(enc.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
    if let Some(k) = req.key {
        c.set_resource_tags(k.tags.iter().map(|(a, b)| (a.as_str(), b.as_str())));
    }
    if let Some(t) = req.request_tags {
        c.set_request_tags(t.iter().map(|(a, b)| (a.as_str(), b.as_str())));
    }
    c.set_time(now_secs);
    c.set(
        "aws:SecureTransport",
        if ctx.secure_transport {
            "true"
        } else {
            "false"
        },
    );
    if let Some(ip) = &ctx.source_ip
        && ctx.via_service.is_none()
    {
        c.set("aws:SourceIp", ip.as_str());
    }
    c
}

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Authorizer for PolicyAuthorizer {
    fn authorize(&self, ctx: &CallContext, req: &KeyRequest<'_>) -> Result<(), AwsError> {
        let context = kms_context(ctx, req, now_secs());
        let identity = self.identity.policies_for(&ctx.principal);
        let identity_refs: Vec<&Policy> = identity.iter().map(|p| p.as_ref()).collect();
        let request = Request {
            principal: principal_info(&ctx.principal),
            action: req.action,
            resource: req.resource,
            context: &context,
        };
        let outcome = match req.key {
            Some(key) => {
                let kp = self.compiled(&key.arn, &key.policy)?;
                evaluate(
                    &request,
                    &Inputs {
                        identity_policies: &identity_refs,
                        resource_policy: Some(&kp),
                        resource_account: &key.account,
                        kind: ResourceKind::KmsKey,
                    },
                )
            }
            None => evaluate(
                &request,
                &Inputs {
                    identity_policies: &identity_refs,
                    resource_policy: None,
                    resource_account: &ctx.principal.account,
                    kind: ResourceKind::Generic,
                },
            ),
        };
        if outcome.decision == Decision::Allow {
            return Ok(());
        }
        let msg = outcome.denial_message(&request).unwrap_or_else(|| {
            format!(
                "User: {} is not authorized to perform: {} on resource: {}",
                ctx.principal.arn, req.action, req.resource
            )
        });
        tracing::debug!(principal = %ctx.principal.arn, action = req.action, resource = req.resource, "kms call denied");
        Err(AwsError::access_denied(msg))
    }

    fn explain(&self, ctx: &CallContext, req: &KeyRequest<'_>) -> Option<String> {
        let key = req.key?;
        let context = kms_context(ctx, req, now_secs());
        let identity = self.identity.policies_for(&ctx.principal);
        let identity_refs: Vec<&Policy> = identity.iter().map(|p| p.as_ref()).collect();
        let kp = self.compiled(&key.arn, &key.policy).ok()?;
        let request = Request {
            principal: principal_info(&ctx.principal),
            action: req.action,
            resource: req.resource,
            context: &context,
        };
        let ex = sluice_policy::explain(
            &request,
            &Inputs {
                identity_policies: &identity_refs,
                resource_policy: Some(&kp),
                resource_account: &key.account,
                kind: ResourceKind::KmsKey,
            },
        );
        Some(ex.summary)
    }

    fn validate_key_policy(
        &self,
        ctx: &CallContext,
        key_arn: &str,
        policy: &str,
        bypass_lockout: bool,
    ) -> Result<(), AwsError> {
        let compiled = Policy::parse_key_policy(policy)
            .map_err(|e| AwsError::client("MalformedPolicyDocumentException", e.to_string()))?;
        if bypass_lockout {
            return Ok(());
        }
        // Lockout safety check: the caller must still be able to call PutKeyPolicy.
        let context = Context::new().with("kms:CallerAccount", ctx.principal.account.as_str());
        let identity = self.identity.policies_for(&ctx.principal);
        let identity_refs: Vec<&Policy> = identity.iter().map(|p| p.as_ref()).collect();
        let account = key_arn.split(':').nth(4).unwrap_or(&ctx.principal.account);
        let outcome = evaluate(
            &Request {
                principal: principal_info(&ctx.principal),
                action: "kms:PutKeyPolicy",
                resource: key_arn,
                context: &context,
            },
            &Inputs {
                identity_policies: &identity_refs,
                resource_policy: Some(&compiled),
                resource_account: account,
                kind: ResourceKind::KmsKey,
            },
        );
        if outcome.decision == Decision::Allow {
            Ok(())
        } else {
            Err(AwsError::client(
                "MalformedPolicyDocumentException",
                format!(
                    "The new key policy will not allow you to update the key policy in the future: it does not allow {} to call kms:PutKeyPolicy. Set BypassPolicyLockoutSafetyCheck to apply it anyway.",
                    ctx.principal.arn
                ),
            ))
        }
    }
}
