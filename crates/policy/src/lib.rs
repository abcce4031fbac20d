//! The IAM policy engine of sluice: parses, compiles, evaluates and explains IAM identity
//! policies, resource policies and KMS key policies.
//!
//! Design constraints:
//! - Pure: no I/O, no async, no clock, no dependency on other sluice crates. The caller supplies
//!   every request fact (principal, action, resource, context keys, including `aws:CurrentTime`).
//! - Compile once, evaluate often: [`Policy::parse`] validates and precomputes everything
//!   (lowercased keys, split ARN patterns, parsed numbers / dates / CIDRs); [`evaluate`] does not
//!   allocate in the common case.
//! - [`explain`] gives the same verdict as [`evaluate`] with a full, serializable trace.
//! - Deliberate deviations from AWS are listed in `docs/specs/policy.md`.
//!
//! ```
//! use sluice_policy::*;
//! let key_policy = Policy::parse_key_policy(r#"{"Version":"2012-10-17","Statement":[{
//!   "Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*",
//!   "Condition":{"StringLike":{"kms:ViaService":"secretsmanager.*.amazonaws.com"}}}]}"#).unwrap();
//! let ctx = Context::new().with("kms:ViaService", "secretsmanager.us-east-1.amazonaws.com");
//! let req = Request {
//!     principal: PrincipalInfo::root("111122223333", "arn:aws:iam::111122223333:root"),
//!     action: "kms:Decrypt",
//!     resource: "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
//!     context: &ctx,
//! };
//! let inputs = Inputs { identity_policies: &[], resource_policy: Some(&key_policy),
//!     resource_account: "111122223333", kind: ResourceKind::KmsKey };
//! assert_eq!(evaluate(&req, &inputs).decision, Decision::Allow);
//! assert_eq!(explain(&req, &inputs).outcome, evaluate(&req, &inputs));
//! ```

pub mod arn;
mod condition;
mod context;
mod eval;
mod explain;
mod pattern;
mod policy;

pub use condition::{BaseOp, Operator, SetMode};
pub use context::{Context, PrincipalInfo, Request, Values};
pub use eval::{
    Decision, DenialReason, Inputs, Outcome, PolicySlot, PrincipalMatch, ResourceKind,
    StatementRef, access_denied_message, evaluate,
};
pub use explain::{
    ConditionTrace, ElementTrace, Explanation, PolicyTrace, StatementTrace, explain,
};
pub use policy::{Effect, KEY_POLICY_MAX_BYTES, Policy, PolicyError, PolicyKind};
