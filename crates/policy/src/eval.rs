//! Evaluation: combining identity and resource policies into a decision.
//!
//! Design constraints:
//! - [`evaluate`] is the hot path: no heap allocation (except for policy-variable patterns with
//!   more than eight pieces), statements short-circuit on the first failing element.
//! - [`crate::explain`] runs the same element matchers without short-circuiting and feeds the
//!   same [`combine`] function, so its verdict always equals [`evaluate`]'s.
//! - Algorithm (AWS IAM "policy evaluation logic", KMS "key policies"):
//!   1. an applicable `Deny` in any policy wins (identity policies are scanned first, then the
//!      resource policy; the first deny found is reported);
//!   2. a resource-policy statement *names* the caller when its Principal is `*`, the caller's
//!      ARN, its role's ARN, its service name, or the caller's account while the caller is that
//!      account's root; it *delegates to the account* when it names the caller's account and the
//!      caller is an IAM identity of that account;
//!   3. `Generic` resources: same account: an identity allow, or a resource statement naming the
//!      caller; cross-account: both an identity allow and a resource statement that names the
//!      caller or delegates to its account;
//!   4. `KmsKey`: the key policy is authoritative: a key-policy statement naming the caller
//!      allows (same account), a key-policy statement delegating to the caller's account allows
//!      when an identity policy also allows; cross-account always needs the identity allow too.
//!      No key policy means no access;
//!   5. the root principal has an implicit identity allow (it has no identity policies);
//!      service principals have no identity policies and need a resource statement naming them.

use crate::arn;
use crate::context::{KeyId, PrincipalInfo, Request, Values, lookup_id};
use crate::pattern::s_eq;
use crate::policy::{Actions, Effect, Policy, Principals, Resources, Statement};
use serde::Serialize;

/// How the resource's own policy is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ResourceKind {
    /// IAM's general rules (Secrets Manager secrets, event buses, roles, ...).
    Generic,
    /// A KMS key: the key policy is authoritative.
    KmsKey,
}

/// The policies that apply to one request.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The caller's identity-based policies (attached to the user or role, inline or managed).
    pub identity_policies: &'a [&'a Policy],
    /// The resource's policy (the key policy for a KMS key).
    pub resource_policy: Option<&'a Policy>,
    /// The account that owns the resource.
    pub resource_account: &'a str,
    /// How the resource policy is treated.
    pub kind: ResourceKind,
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Denied by a statement with `"Effect": "Deny"`.
    ExplicitDeny,
    /// Nothing allowed it.
    ImplicitDeny,
}

/// Which policy a statement belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PolicySlot {
    /// `Inputs::identity_policies[i]`.
    Identity(usize),
    /// `Inputs::resource_policy`.
    Resource,
}

/// A statement of one of the inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StatementRef {
    /// The policy.
    pub policy: PolicySlot,
    /// Zero-based index of the statement in that policy.
    pub statement: usize,
}

/// Why a request was denied; selects AWS's AccessDenied phrasing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DenialReason {
    /// "... with an explicit deny in an identity-based policy".
    ExplicitDenyInIdentityPolicy,
    /// "... with an explicit deny in a resource-based policy".
    ExplicitDenyInResourcePolicy,
    /// "... because no identity-based policy allows the `<action>` action".
    NoIdentityPolicyAllows,
    /// "... because no resource-based policy allows the `<action>` action".
    NoResourcePolicyAllows,
}

/// The result of [`evaluate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// The verdict.
    pub decision: Decision,
    /// The statement that decided: the deny; for an allow, the statement that granted (the
    /// resource statement naming the caller, or the identity statement).
    pub decided_by: Option<StatementRef>,
    /// For an allow that needed two statements (cross-account, or a key policy delegating to
    /// the account), the other one.
    pub supported_by: Option<StatementRef>,
    /// For a denial, which phrasing applies.
    pub reason: Option<DenialReason>,
}

impl Outcome {
    /// Whether the request is allowed.
    pub fn is_allowed(&self) -> bool {
        self.decision == Decision::Allow
    }

    /// AWS's AccessDenied message for this outcome, `None` when allowed.
    pub fn denial_message(&self, req: &Request<'_>) -> Option<String> {
        self.reason
            .map(|r| access_denied_message(req.principal.arn, req.action, req.resource, r))
    }
}

/// AWS's AccessDenied message text, e.g. `User: arn:aws:iam::111122223333:user/bob is not
/// authorized to perform: kms:Decrypt on resource: arn:aws:kms:... because no resource-based
/// policy allows the kms:Decrypt action`.
pub fn access_denied_message(
    principal_arn: &str,
    action: &str,
    resource: &str,
    reason: DenialReason,
) -> String {
    let tail = match reason {
        DenialReason::ExplicitDenyInIdentityPolicy => {
            "with an explicit deny in an identity-based policy".to_string()
        }
        DenialReason::ExplicitDenyInResourcePolicy => {
            "with an explicit deny in a resource-based policy".to_string()
        }
        DenialReason::NoIdentityPolicyAllows => {
            format!("because no identity-based policy allows the {action} action")
        }
        DenialReason::NoResourcePolicyAllows => {
            format!("because no resource-based policy allows the {action} action")
        }
    };
    format!(
        "User: {principal_arn} is not authorized to perform: {action} on resource: {resource} {tail}"
    )
}

/// How a Principal element relates to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PrincipalMatch {
    /// Not the caller.
    NotMatched,
    /// Names the caller (or `*`).
    Named,
    /// Names the caller's account while the caller is an IAM identity of it: a delegation to
    /// the account's identity policies.
    Account,
}

#[inline]
pub(crate) fn principal_match(p: &Principals, who: &PrincipalInfo<'_>) -> PrincipalMatch {
    let m = principal_match_plain(p, who);
    if p.negated {
        // AWS: an account listed in NotPrincipal exempts only the account principal itself, not
        // its users and roles (hence `!= Named`).
        if m != PrincipalMatch::Named {
            PrincipalMatch::Named
        } else {
            PrincipalMatch::NotMatched
        }
    } else {
        m
    }
}

#[inline]
fn principal_match_plain(p: &Principals, who: &PrincipalInfo<'_>) -> PrincipalMatch {
    if p.any {
        return PrincipalMatch::Named;
    }
    if who.is_service {
        return if p.services.iter().any(|s| **s == *who.arn) {
            PrincipalMatch::Named
        } else {
            PrincipalMatch::NotMatched
        };
    }
    if p.arns
        .iter()
        .any(|a| s_eq(a, who.arn) || who.role_arn.is_some_and(|r| s_eq(a, r)))
        || p.federated.iter().any(|a| s_eq(a, who.arn))
        || p.canonical.iter().any(|a| s_eq(a, who.user_id))
    {
        return PrincipalMatch::Named;
    }
    if p.accounts.iter().any(|a| s_eq(a, who.account)) {
        return if who.is_root {
            PrincipalMatch::Named
        } else {
            PrincipalMatch::Account
        };
    }
    PrincipalMatch::NotMatched
}

/// Calls `f` with `action` ASCII-lowercased, without allocating for actions up to 128 bytes.
pub(crate) fn with_lower_action<R>(action: &str, f: impl FnOnce(&str) -> R) -> R {
    if !action.bytes().any(|b| b.is_ascii_uppercase()) {
        return f(action);
    }
    let mut buf = [0u8; 128];
    if action.len() <= buf.len() {
        let dst = &mut buf[..action.len()];
        dst.copy_from_slice(action.as_bytes());
        dst.make_ascii_lowercase();
        // Lowercasing ASCII letters keeps UTF-8 valid.
        if let Ok(s) = std::str::from_utf8(dst) {
            return f(s);
        }
    }
    f(&action.to_ascii_lowercase())
}

/// `action` must be lowercased ([`with_lower_action`]); patterns are stored lowercased.
pub(crate) fn action_match(a: &Actions, action: &ReqAction<'_>) -> bool {
    let hit = a.any
        || (a.first_mask & action.first_bit != 0
            && a.services
                .as_ref()
                .is_none_or(|svcs| svcs.iter().any(|s| s_eq(s, action.service)))
            && a.patterns
                .iter()
                .any(|p| p.matches(action.lower, &|_| None)));
    hit != a.negated
}

/// The request's action, lowercased, and its service part.
pub(crate) struct ReqAction<'a> {
    pub lower: &'a str,
    pub service: &'a str,
    /// The bit of the first byte of the action name (see `Actions::first_mask`).
    pub first_bit: u64,
}

impl<'a> ReqAction<'a> {
    pub(crate) fn new(lower: &'a str) -> Self {
        let end = lower.bytes().position(|b| b == b':').unwrap_or(lower.len());
        let first = lower.as_bytes().get(end + 1).copied().unwrap_or(0);
        ReqAction {
            lower,
            service: &lower[..end],
            first_bit: 1u64 << (first & 63),
        }
    }
}

/// The request's resource, split into ARN segments on first use (key policies use `"*"`).
pub(crate) struct ReqResource<'a> {
    pub whole: &'a str,
    segs: std::cell::OnceCell<Option<[&'a str; 6]>>,
}

impl<'a> ReqResource<'a> {
    pub(crate) fn new(whole: &'a str) -> Self {
        ReqResource {
            whole,
            segs: std::cell::OnceCell::new(),
        }
    }

    fn segs(&self) -> Option<&[&'a str; 6]> {
        self.segs.get_or_init(|| arn::split(self.whole)).as_ref()
    }
}

pub(crate) fn resource_match<'v>(
    r: Option<&Resources>,
    res: &ReqResource<'_>,
    resolve: &dyn Fn(&KeyId) -> Option<&'v str>,
) -> bool {
    let Some(r) = r else { return true };
    let hit = r.any
        || r.patterns
            .iter()
            .any(|p| p.matches_split(res.whole, res.segs(), resolve));
    hit != r.negated
}

/// What one pass over the statements found.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Found {
    pub identity_deny: Option<StatementRef>,
    pub resource_deny: Option<StatementRef>,
    pub identity_allow: Option<StatementRef>,
    pub resource_named_allow: Option<StatementRef>,
    pub resource_account_allow: Option<StatementRef>,
}

impl Found {
    /// Records an applicable statement. Returns true when it is a deny (the fast path stops).
    pub(crate) fn record(
        &mut self,
        slot: PolicySlot,
        index: usize,
        effect: Effect,
        pm: PrincipalMatch,
    ) -> bool {
        let r = Some(StatementRef {
            policy: slot,
            statement: index,
        });
        let set = |s: &mut Option<StatementRef>| {
            if s.is_none() {
                *s = r;
            }
        };
        match (slot, effect, pm) {
            (_, _, PrincipalMatch::NotMatched) => return false,
            (PolicySlot::Identity(_), Effect::Deny, _) => set(&mut self.identity_deny),
            (PolicySlot::Identity(_), Effect::Allow, _) => set(&mut self.identity_allow),
            (PolicySlot::Resource, Effect::Deny, _) => set(&mut self.resource_deny),
            (PolicySlot::Resource, Effect::Allow, PrincipalMatch::Named) => {
                set(&mut self.resource_named_allow)
            }
            (PolicySlot::Resource, Effect::Allow, PrincipalMatch::Account) => {
                set(&mut self.resource_account_allow)
            }
        }
        effect == Effect::Deny
    }
}

/// Whether the caller is implicitly allowed by identity (the root principal).
pub(crate) fn implicit_identity_allow(who: &PrincipalInfo<'_>) -> bool {
    who.is_root && !who.is_service
}

/// Turns what was found into an outcome.
pub(crate) fn combine(req: &Request<'_>, inputs: &Inputs<'_>, f: &Found) -> Outcome {
    let deny = |by, reason| Outcome {
        decision: Decision::ExplicitDeny,
        decided_by: by,
        supported_by: None,
        reason: Some(reason),
    };
    let allow = |by, sup| Outcome {
        decision: Decision::Allow,
        decided_by: by,
        supported_by: sup,
        reason: None,
    };
    let implicit = |reason| Outcome {
        decision: Decision::ImplicitDeny,
        decided_by: None,
        supported_by: None,
        reason: Some(reason),
    };
    if f.identity_deny.is_some() {
        return deny(f.identity_deny, DenialReason::ExplicitDenyInIdentityPolicy);
    }
    if f.resource_deny.is_some() {
        return deny(f.resource_deny, DenialReason::ExplicitDenyInResourcePolicy);
    }
    let who = &req.principal;
    if who.is_service {
        return match f.resource_named_allow {
            Some(r) => allow(Some(r), None),
            None => implicit(DenialReason::NoResourcePolicyAllows),
        };
    }
    let identity_ok = f.identity_allow.is_some() || implicit_identity_allow(who);
    let same_account = who.account == inputs.resource_account;
    let resource_any = f.resource_named_allow.or(f.resource_account_allow);
    match (inputs.kind, same_account) {
        (ResourceKind::Generic, true) => {
            if identity_ok {
                allow(f.identity_allow.or(f.resource_named_allow), None)
            } else if let Some(r) = f.resource_named_allow {
                allow(Some(r), None)
            } else {
                implicit(DenialReason::NoIdentityPolicyAllows)
            }
        }
        (ResourceKind::KmsKey, true) => {
            if let Some(r) = f.resource_named_allow {
                allow(Some(r), None)
            } else if let Some(r) = f.resource_account_allow {
                if identity_ok {
                    match f.identity_allow {
                        Some(i) => allow(Some(i), Some(r)),
                        None => allow(Some(r), None),
                    }
                } else {
                    implicit(DenialReason::NoIdentityPolicyAllows)
                }
            } else {
                implicit(DenialReason::NoResourcePolicyAllows)
            }
        }
        (_, false) => match resource_any {
            None => implicit(DenialReason::NoResourcePolicyAllows),
            Some(r) if identity_ok => allow(Some(r), f.identity_allow),
            Some(_) => implicit(DenialReason::NoIdentityPolicyAllows),
        },
    }
}

#[inline]
fn statement_applies<'v>(
    st: &Statement,
    pm: PrincipalMatch,
    action: &ReqAction<'_>,
    res: &ReqResource<'_>,
    req: &Request<'v>,
    resolve: &dyn Fn(&KeyId) -> Option<&'v str>,
) -> bool {
    pm != PrincipalMatch::NotMatched
        && action_match(&st.action, action)
        && resource_match(st.resource.as_ref(), res, resolve)
        && st
            .conditions
            .iter()
            .all(|c| c.eval(lookup_id(req, &c.key), resolve))
}

/// Resolves a policy variable (lowercased key) to a single request value.
pub(crate) fn resolver<'a>(req: &'a Request<'a>) -> impl Fn(&KeyId) -> Option<&'a str> + 'a {
    move |k: &KeyId| lookup_id(req, k).and_then(|v: Values<'a>| v.single())
}

/// Decides `req` against `inputs` (hot path; no explanation is built).
pub fn evaluate(req: &Request<'_>, inputs: &Inputs<'_>) -> Outcome {
    with_lower_action(req.action, |action| {
        evaluate_lowered(req, &ReqAction::new(action), inputs)
    })
}

fn evaluate_lowered(req: &Request<'_>, action: &ReqAction<'_>, inputs: &Inputs<'_>) -> Outcome {
    let resolve = resolver(req);
    let res = ReqResource::new(req.resource);
    let mut f = Found::default();
    'scan: {
        for (pi, p) in inputs.identity_policies.iter().enumerate() {
            for (si, st) in p.statements.iter().enumerate() {
                if statement_applies(st, PrincipalMatch::Named, action, &res, req, &resolve)
                    && f.record(
                        PolicySlot::Identity(pi),
                        si,
                        st.effect,
                        PrincipalMatch::Named,
                    )
                {
                    break 'scan;
                }
            }
        }
        if let Some(p) = inputs.resource_policy {
            for (si, st) in p.statements.iter().enumerate() {
                let pm = match &st.principal {
                    Some(pr) => principal_match(pr, &req.principal),
                    None => PrincipalMatch::NotMatched,
                };
                if statement_applies(st, pm, action, &res, req, &resolve)
                    && f.record(PolicySlot::Resource, si, st.effect, pm)
                {
                    break 'scan;
                }
            }
        }
    }
    combine(req, inputs, &f)
}
