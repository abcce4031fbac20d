//! The authorizer the server installs in its services.
//!
//! Until the IAM service exists the only principals are the account's root (and services acting
//! for it), so account-level actions are allowed to the account's own root; KMS key policies
//! are evaluated by the policy engine through `sluice_kms::PolicyAuthorizer`.

use std::sync::Arc;

use sluice_core::{AwsError, CallContext, PrincipalKind};

/// The KMS authorizer.
pub fn authorizer() -> Arc<dyn sluice_kms::Authorizer> {
    Arc::new(sluice_kms::PolicyAuthorizer::new(Arc::new(
        sluice_kms::NoIdentityPolicies,
    )))
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
