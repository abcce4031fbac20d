//! The authorizer the server installs in its services.
//!
//! Account-level actions are allowed to the account's own root; KMS key policies are evaluated
//! by the policy engine through `sluice_kms::PolicyAuthorizer`, with the caller's identity
//! policies from IAM.

use std::sync::Arc;

use sluice_core::{AwsError, CallContext, PrincipalKind};

/// The KMS authorizer, reading identity policies from `identity` (IAM).
pub fn authorizer(
    identity: Arc<dyn sluice_kms::IdentityPolicies>,
) -> Arc<dyn sluice_kms::Authorizer> {
    Arc::new(sluice_kms::PolicyAuthorizer::new(identity))
}

/// Authorizes an action that has no resource policy (for example `cloudtrail:LookupEvents`).
pub fn authorize_account_action(ctx: &CallContext, action: &str) -> Result<(), AwsError> {
    if ctx.principal.kind == PrincipalKind::Root {
        Ok(())
    } else {
        Err(AwsError::access_denied(format!(
            "User: {} is not authorized to perform: {action} because no identity-based policy allows the {action} action",
            ctx.principal.arn
        )))
    }
}
