//! Authorization of KMS calls.
//!
//! The [`Authorizer`] decides whether `ctx.principal` may perform `action` on a key, given the
//! key's policy and the request's condition context (`kms:ViaService`, `kms:CallerAccount`,
//! `kms:EncryptionContext:*`, `kms:EncryptionContextKeys`, `aws:ResourceTag/*`, ...). The
//! server installs the policy-engine implementation; [`DefaultAuthorizer`] implements only the
//! default key policy semantics (the owning account's root may do everything; nothing else may)
//! and exists for unit tests of this crate.

use std::collections::BTreeMap;

use sluice_core::{AwsError, CallContext};

use crate::model::KeyRecord;

/// What is being asked of a key.
#[derive(Debug, Clone)]
pub struct KeyRequest<'a> {
    /// The IAM action, e.g. `kms:Decrypt`.
    pub action: &'a str,
    /// The key (`None` for account-level actions such as `kms:CreateKey`).
    pub key: Option<&'a KeyRecord>,
    /// The resource ARN (`*` for account-level actions).
    pub resource: &'a str,
    /// The encryption context of the request, if the operation has one.
    pub encryption_context: Option<&'a BTreeMap<String, String>>,
    /// Tags the request sets (`aws:RequestTag/*`, `aws:TagKeys`).
    pub request_tags: Option<&'a [(String, String)]>,
}

/// Decides KMS calls.
pub trait Authorizer: Send + Sync + std::fmt::Debug {
    /// `Ok(())` if allowed, else the `AccessDeniedException` to return.
    fn authorize(&self, ctx: &CallContext, req: &KeyRequest<'_>) -> Result<(), AwsError>;

    /// Validates a key policy document for CreateKey / PutKeyPolicy, including the lockout
    /// safety check for `ctx.principal` unless `bypass_lockout`.
    fn validate_key_policy(
        &self,
        ctx: &CallContext,
        key_arn: &str,
        policy: &str,
        bypass_lockout: bool,
    ) -> Result<(), AwsError>;

    /// Why `req` is allowed or refused, in words (which statement decided, which conditions
    /// failed), for diagnostics such as an EventBridge connection's StateReason. `None` when
    /// this authorizer cannot explain. Never has an effect and is not audited.
    fn explain(&self, _ctx: &CallContext, _req: &KeyRequest<'_>) -> Option<String> {
        None
    }
}

/// Default key-policy semantics only (see the module docs).
#[derive(Debug, Default)]
pub struct DefaultAuthorizer;

impl Authorizer for DefaultAuthorizer {
    fn authorize(&self, ctx: &CallContext, req: &KeyRequest<'_>) -> Result<(), AwsError> {
        let account = req.key.map(|k| k.account.as_str());
        let same_account = account.is_none_or(|a| a == ctx.principal.account);
        if same_account && ctx.principal.kind == sluice_core::PrincipalKind::Root {
            Ok(())
        } else {
            Err(AwsError::access_denied(format!(
                "User: {} is not authorized to perform: {} on resource: {} because no resource-based policy allows the {} action",
                ctx.principal.arn, req.action, req.resource, req.action
            )))
        }
    }

    fn validate_key_policy(
        &self,
        _ctx: &CallContext,
        _key_arn: &str,
        policy: &str,
        _bypass_lockout: bool,
    ) -> Result<(), AwsError> {
        match serde_json::from_str::<serde_json::Value>(policy) {
            Ok(v) if v.is_object() => Ok(()),
            _ => Err(AwsError::client(
                "MalformedPolicyDocumentException",
                "The new key policy will not allow you to update the key policy in the future.",
            )),
        }
    }
}
