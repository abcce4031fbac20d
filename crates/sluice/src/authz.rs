//! Authorization glue the server installs in its services.
//!
//! KMS key policies are evaluated by the policy engine through `sluice_kms::PolicyAuthorizer`
//! with the caller's identity policies from IAM. Actions without a resource policy (CloudTrail
//! `LookupEvents`) are decided by the caller's identity policies alone: the account root is
//! allowed, an IAM user or role session needs an identity policy that allows the action.

use std::sync::Arc;

use serde_json::Value;
use sluice_core::{AwsError, CallContext, Clock};
use sluice_kms::IdentityPolicies;
use sluice_policy::{Context, Inputs, Policy, Request, ResourceKind, evaluate};

/// The KMS authorizer, reading identity policies from `identity` (IAM).
pub fn authorizer(identity: Arc<dyn IdentityPolicies>) -> Arc<dyn sluice_kms::Authorizer> {
    Arc::new(sluice_kms::PolicyAuthorizer::new(identity))
}

/// Authorizes `action` on `resource` with the caller's identity policies only.
pub fn authorize_identity_action(
    identity: &dyn IdentityPolicies,
    ctx: &CallContext,
    action: &str,
    resource: &str,
    now_secs: i64,
) -> Result<(), AwsError> {
    let policies = identity.policies_for(&ctx.principal);
    let refs: Vec<&Policy> = policies.iter().map(|p| p.as_ref()).collect();
    let mut context = Context::new();
    context.set_time(now_secs);
    if let Some(ip) = &ctx.source_ip {
        context.set("aws:SourceIp", ip.as_str());
    }
    let req = Request {
        principal: sluice_kms::policy_authz::principal_info(&ctx.principal),
        action,
        resource,
        context: &context,
    };
    let outcome = evaluate(
        &req,
        &Inputs {
            identity_policies: &refs,
            resource_policy: None,
            resource_account: &ctx.principal.account,
            kind: ResourceKind::Generic,
        },
    );
    if outcome.is_allowed() {
        Ok(())
    } else {
        Err(AwsError::access_denied(
            outcome.denial_message(&req).unwrap_or_else(|| {
                format!(
                    "User: {} is not authorized to perform: {action}",
                    ctx.principal.arn
                )
            }),
        ))
    }
}

/// CloudTrail (`LookupEvents`) authorized with IAM identity policies.
#[derive(Debug)]
pub struct CloudTrail {
    log: sluice_audit::AuditLog,
    clock: Arc<dyn Clock>,
    identity: Arc<dyn IdentityPolicies>,
}

impl CloudTrail {
    /// CloudTrail over `log`, deciding with `identity`.
    pub fn new(
        log: sluice_audit::AuditLog,
        clock: Arc<dyn Clock>,
        identity: Arc<dyn IdentityPolicies>,
    ) -> Self {
        Self {
            log,
            clock,
            identity,
        }
    }
}

#[async_trait::async_trait]
impl sluice_core::JsonService for CloudTrail {
    fn signing_name(&self) -> &'static str {
        "cloudtrail"
    }

    async fn handle(&self, op: &str, ctx: &CallContext, input: Value) -> Result<Value, AwsError> {
        match op {
            "LookupEvents" => {
                authorize_identity_action(
                    self.identity.as_ref(),
                    ctx,
                    "cloudtrail:LookupEvents",
                    "*",
                    self.clock.now().unix_timestamp(),
                )?;
                sluice_audit::lookup::lookup_events(&self.log, &input, self.clock.now_millis())
                    .await
            }
            other => Err(AwsError::client(
                "UnsupportedOperationException",
                format!("CloudTrail {other} is not supported by sluice; only LookupEvents is."),
            )),
        }
    }
}
