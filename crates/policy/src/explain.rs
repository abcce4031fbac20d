//! Explanations: a full trace of an evaluation, readable (`Display`) and serializable.
//!
//! Design constraints:
//! - The trace uses the element matchers of [`crate::eval`] without short-circuiting and the
//!   same `combine` step, so `explain(..).outcome == evaluate(..)` by construction (a test and a
//!   property test check it).
//! - Every statement of every input policy is reported, with each element's result and, for each
//!   condition, the request values seen and why it failed (key absent, value did not match ...).
//! - Allocation is fine here: this is the slow path (CLI, SimulatePrincipalPolicy, StateReason).

use crate::condition::{BaseOp, Condition, SetMode};
use crate::context::{KeyId, Request, lookup_id};
use crate::eval::{
    Decision, Found, Inputs, Outcome, PolicySlot, PrincipalMatch, ReqAction, ReqResource,
    ResourceKind, StatementRef, action_match, combine, implicit_identity_allow, principal_match,
    resolver, resource_match, with_lower_action,
};
use crate::policy::{Effect, Policy, Principals, Statement};
use serde::Serialize;
use std::fmt;

/// The full trace of one evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The same outcome [`crate::evaluate`] returns.
    pub outcome: Outcome,
    /// The caller's ARN.
    pub principal: String,
    /// The action.
    pub action: String,
    /// The resource.
    pub resource: String,
    /// How the resource policy was treated.
    pub resource_kind: ResourceKind,
    /// Whether the caller's account differs from the resource's.
    pub cross_account: bool,
    /// Whether the caller is a root principal (implicit identity allow).
    pub implicit_identity_allow: bool,
    /// One sentence saying why.
    pub summary: String,
    /// AWS's AccessDenied message, when denied.
    pub denial_message: Option<String>,
    /// Every input policy, statement by statement.
    pub policies: Vec<PolicyTrace>,
}

/// One input policy.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyTrace {
    /// Which input.
    pub slot: PolicySlot,
    /// The policy's `Id`.
    pub id: Option<String>,
    /// Its statements.
    pub statements: Vec<StatementTrace>,
}

/// One statement.
#[derive(Debug, Clone, Serialize)]
pub struct StatementTrace {
    /// Zero-based index.
    pub index: usize,
    /// Sid.
    pub sid: Option<String>,
    /// Effect.
    pub effect: Effect,
    /// Whether every element matched (the statement applies to the request).
    pub applies: bool,
    /// The Principal element (resource policies only).
    pub principal: Option<ElementTrace>,
    /// How the principal matched (resource policies only).
    pub principal_match: Option<PrincipalMatch>,
    /// Action / NotAction.
    pub action: ElementTrace,
    /// Resource / NotResource.
    pub resource: ElementTrace,
    /// Each condition (ordered by operator, then key).
    pub conditions: Vec<ConditionTrace>,
}

/// The result of one element.
#[derive(Debug, Clone, Serialize)]
pub struct ElementTrace {
    /// Whether it matched.
    pub matched: bool,
    /// What was compared.
    pub detail: String,
}

/// The result of one condition (operator + key).
#[derive(Debug, Clone, Serialize)]
pub struct ConditionTrace {
    /// Operator as written.
    pub operator: String,
    /// Key as written.
    pub key: String,
    /// Whether it held.
    pub passed: bool,
    /// Policy values as written.
    pub policy_values: Vec<String>,
    /// Request values (`None`: key absent).
    pub request_values: Option<Vec<String>>,
    /// Why it held or failed.
    pub detail: String,
}

/// Evaluates `req` with a full trace; `explain(req, inputs).outcome == evaluate(req, inputs)`.
pub fn explain(req: &Request<'_>, inputs: &Inputs<'_>) -> Explanation {
    let resolve = resolver(req);
    let res = ReqResource::new(req.resource);
    let mut found = Found::default();
    let mut policies = Vec::new();
    let mut denied_early = false;
    for (pi, p) in inputs.identity_policies.iter().enumerate() {
        let slot = PolicySlot::Identity(pi);
        let mut sts = Vec::new();
        for (si, st) in p.statements.iter().enumerate() {
            let t = trace_statement(st, si, None, req, &res, &resolve);
            if t.applies
                && !denied_early
                && found.record(slot, si, st.effect, PrincipalMatch::Named)
            {
                denied_early = true;
            }
            sts.push(t);
        }
        policies.push(PolicyTrace {
            slot,
            id: p.id().map(str::to_string),
            statements: sts,
        });
    }
    if let Some(p) = inputs.resource_policy {
        let mut sts = Vec::new();
        for (si, st) in p.statements.iter().enumerate() {
            let t = trace_statement(st, si, Some(st.principal.as_ref()), req, &res, &resolve);
            let pm = t.principal_match.unwrap_or(PrincipalMatch::NotMatched);
            if t.applies && !denied_early && found.record(PolicySlot::Resource, si, st.effect, pm) {
                denied_early = true;
            }
            sts.push(t);
        }
        policies.push(PolicyTrace {
            slot: PolicySlot::Resource,
            id: p.id().map(str::to_string),
            statements: sts,
        });
    }
    let outcome = combine(req, inputs, &found);
    let cross_account =
        !req.principal.is_service && req.principal.account != inputs.resource_account;
    let mut summary = summarize(req, inputs, &outcome, &found, cross_account);
    if outcome.decision == Decision::ImplicitDeny {
        summary.push_str(&near_misses(inputs, &policies));
    }
    Explanation {
        outcome,
        principal: req.principal.arn.to_string(),
        action: req.action.to_string(),
        resource: req.resource.to_string(),
        resource_kind: inputs.kind,
        cross_account,
        implicit_identity_allow: implicit_identity_allow(&req.principal),
        summary,
        denial_message: outcome.denial_message(req),
        policies,
    }
}

fn slot_name(inputs: &Inputs<'_>, r: StatementRef) -> String {
    let (p, what): (Option<&Policy>, String) = match r.policy {
        PolicySlot::Identity(i) => (
            inputs.identity_policies.get(i).copied(),
            format!("identity policy #{i}"),
        ),
        PolicySlot::Resource => (
            inputs.resource_policy,
            if inputs.kind == ResourceKind::KmsKey {
                "the key policy".into()
            } else {
                "the resource policy".into()
            },
        ),
    };
    match p.and_then(|p| p.sid(r.statement)) {
        Some(sid) => format!("statement {} (Sid {sid:?}) of {what}", r.statement),
        None => format!("statement {} of {what}", r.statement),
    }
}

/// For an implicit deny: the Allow statements that named the caller and the action but whose
/// conditions failed, with the failed conditions (what a person needs to fix a policy).
fn near_misses(inputs: &Inputs<'_>, policies: &[PolicyTrace]) -> String {
    let mut out = String::new();
    for p in policies {
        for st in &p.statements {
            let elements_ok = st.effect == Effect::Allow
                && st.principal.as_ref().is_none_or(|x| x.matched)
                && st.action.matched
                && st.resource.matched;
            if !elements_ok || st.applies {
                continue;
            }
            let failed: Vec<String> = st
                .conditions
                .iter()
                .filter(|c| !c.passed)
                .map(|c| match &c.request_values {
                    None => format!("{} {} (key absent)", c.operator, c.key),
                    Some(v) => format!(
                        "{} {} (request value {v:?} vs policy {:?})",
                        c.operator, c.key, c.policy_values
                    ),
                })
                .collect();
            let name = slot_name(
                inputs,
                StatementRef {
                    policy: p.slot,
                    statement: st.index,
                },
            );
            let name = format!("{}{}", name[..1].to_uppercase(), &name[1..]);
            out.push_str(&format!(
                " {name} would allow it, but its conditions failed: {}.",
                failed.join("; ")
            ));
        }
    }
    out
}

fn summarize(
    req: &Request<'_>,
    inputs: &Inputs<'_>,
    o: &Outcome,
    f: &Found,
    cross: bool,
) -> String {
    let name = |r: Option<StatementRef>| {
        r.map(|r| slot_name(inputs, r))
            .unwrap_or_else(|| "(none)".into())
    };
    let rp = if inputs.kind == ResourceKind::KmsKey {
        "key policy"
    } else {
        "resource policy"
    };
    match o.decision {
        Decision::ExplicitDeny => format!("Denied explicitly by {}.", name(o.decided_by)),
        Decision::Allow => match (o.decided_by, o.supported_by) {
            (Some(a), Some(b)) => format!(
                "Allowed by {} together with {}.",
                name(Some(a)),
                name(Some(b))
            ),
            (Some(a), None)
                if implicit_identity_allow(&req.principal)
                    && a.policy == PolicySlot::Resource
                    && f.resource_named_allow.is_none() =>
            {
                format!(
                    "Allowed: {} delegates to the account and the root principal has every identity permission.",
                    name(Some(a))
                )
            }
            (Some(a), None) => format!("Allowed by {}.", name(Some(a))),
            (None, _) => {
                "Allowed: the root principal has every identity permission in its own account."
                    .into()
            }
        },
        Decision::ImplicitDeny => {
            if req.principal.is_service {
                return format!(
                    "Implicitly denied: no statement of the {rp} names the service principal {}.",
                    req.principal.arn
                );
            }
            if inputs.resource_policy.is_none() && (inputs.kind == ResourceKind::KmsKey || cross) {
                return format!(
                    "Implicitly denied: there is no {rp}, and {} needs one.",
                    if cross {
                        "cross-account access"
                    } else {
                        "a KMS key"
                    }
                );
            }
            let mut s = String::from("Implicitly denied: ");
            if cross {
                s += &format!(
                    "cross-account access needs both an identity-policy allow (found: {}) and a {rp} statement naming the caller or its account (found: {}).",
                    if f.identity_allow.is_some() || implicit_identity_allow(&req.principal) {
                        "yes"
                    } else {
                        "no"
                    },
                    name(f.resource_named_allow.or(f.resource_account_allow))
                );
            } else if inputs.kind == ResourceKind::KmsKey {
                match f.resource_account_allow {
                    Some(r) => {
                        s += &format!(
                            "{} delegates to the account's IAM policies, but no identity policy allows {}.",
                            name(Some(r)),
                            req.action
                        )
                    }
                    None => {
                        s += &format!(
                            "no key policy statement that applies allows {} for this caller (see the failed elements below).",
                            req.action
                        )
                    }
                }
            } else {
                s += &format!(
                    "no identity policy allows {} and no {rp} statement names the caller.",
                    req.action
                );
            }
            s
        }
    }
}

fn trace_statement<'v>(
    st: &Statement,
    index: usize,
    principal: Option<Option<&Principals>>,
    req: &Request<'v>,
    res: &ReqResource<'_>,
    resolve: &dyn Fn(&KeyId) -> Option<&'v str>,
) -> StatementTrace {
    let (principal_trace, pm) = match principal {
        None => (None, PrincipalMatch::Named),
        Some(None) => (
            Some(ElementTrace {
                matched: false,
                detail: "no Principal element: it cannot apply in a resource policy".into(),
            }),
            PrincipalMatch::NotMatched,
        ),
        Some(Some(p)) => {
            let pm = principal_match(p, &req.principal);
            let detail = describe_principal(p, pm, req);
            (
                Some(ElementTrace {
                    matched: pm != PrincipalMatch::NotMatched,
                    detail,
                }),
                pm,
            )
        }
    };
    let a_ok = with_lower_action(req.action, |a| action_match(&st.action, &ReqAction::new(a)));
    let elem = if st.action.negated {
        "NotAction"
    } else {
        "Action"
    };
    let action = ElementTrace {
        matched: a_ok,
        detail: format!(
            "{elem} {:?} {} {:?}",
            st.action.raw,
            if a_ok { "admits" } else { "does not admit" },
            req.action
        ),
    };
    let r_ok = resource_match(st.resource.as_ref(), res, resolve);
    let resource = ElementTrace {
        matched: r_ok,
        detail: match &st.resource {
            None => "no Resource element: every resource".into(),
            Some(r) => format!(
                "{} {:?} {} {:?}",
                if r.negated { "NotResource" } else { "Resource" },
                r.raw,
                if r_ok { "admits" } else { "does not admit" },
                req.resource
            ),
        },
    };
    let conditions: Vec<ConditionTrace> = st
        .conditions
        .iter()
        .map(|c| trace_condition(c, req, resolve))
        .collect();
    let applies =
        pm != PrincipalMatch::NotMatched && a_ok && r_ok && conditions.iter().all(|c| c.passed);
    StatementTrace {
        index,
        sid: st.sid.as_deref().map(str::to_string),
        effect: st.effect,
        applies,
        principal_match: principal.map(|_| pm),
        principal: principal_trace,
        action,
        resource,
        conditions,
    }
}

fn describe_principal(p: &Principals, pm: PrincipalMatch, req: &Request<'_>) -> String {
    let mut named: Vec<String> = Vec::new();
    if p.any {
        named.push("*".into());
    }
    named.extend(p.accounts.iter().map(|a| format!("account {a}")));
    named.extend(p.arns.iter().map(|a| a.to_string()));
    named.extend(p.services.iter().map(|a| format!("service {a}")));
    named.extend(p.federated.iter().map(|a| format!("federated {a}")));
    named.extend(p.canonical.iter().map(|a| format!("canonical user {a}")));
    let el = if p.negated {
        "NotPrincipal"
    } else {
        "Principal"
    };
    let who = req.principal.policy_arn();
    match pm {
        PrincipalMatch::Named => format!("{el} [{}] applies to {who}", named.join(", ")),
        PrincipalMatch::Account => format!(
            "{el} [{}] names account {}: delegated to that account's identity policies",
            named.join(", "),
            req.principal.account
        ),
        PrincipalMatch::NotMatched => {
            format!("{el} [{}] does not apply to {who}", named.join(", "))
        }
    }
}

fn trace_condition<'v>(
    c: &Condition,
    req: &Request<'v>,
    resolve: &dyn Fn(&KeyId) -> Option<&'v str>,
) -> ConditionTrace {
    let vals = lookup_id(req, &c.key);
    let passed = c.eval(vals, resolve);
    let request_values = vals.map(|v| v.to_vec());
    let present = vals.filter(|v| !v.is_empty());
    let op = &c.op;
    let detail = if op.base == BaseOp::Null {
        format!(
            "{} is {}; Null {:?} {}",
            c.key_name,
            if present.is_some() {
                "present"
            } else {
                "absent"
            },
            c.raw,
            if passed { "holds" } else { "fails" }
        )
    } else if present.is_none() {
        let what = if vals.is_some() {
            "present with no values"
        } else {
            "absent from the request"
        };
        let why = match (op.set, op.if_exists, op.negated) {
            (SetMode::ForAllValues, _, _) => "ForAllValues: is true for an absent or empty key",
            (_, true, _) => "the IfExists suffix makes an absent key true",
            (SetMode::ForAnyValue, false, _) => "ForAnyValue: is false for an absent or empty key",
            (SetMode::Single, false, true) => "a negated operator is true for an absent key",
            (SetMode::Single, false, false) => "a positive operator is false for an absent key",
        };
        format!("{} is {what}: {why}", c.key_name)
    } else {
        let kind = match c.op.base {
            BaseOp::StringLike | BaseOp::ArnLike => "pattern",
            _ => "value",
        };
        let rv = request_values.clone().unwrap_or_default();
        let quant = match op.set {
            SetMode::Single => "",
            SetMode::ForAnyValue => "ForAnyValue: at least one request value must satisfy it; ",
            SetMode::ForAllValues => "ForAllValues: every request value must satisfy it; ",
        };
        if passed {
            format!(
                "{quant}request value(s) {rv:?} satisfy {} {:?}",
                c.op_name, c.raw
            )
        } else if op.negated {
            format!(
                "{quant}request value(s) {rv:?} match a forbidden {kind} of {} {:?}",
                c.op_name, c.raw
            )
        } else {
            format!(
                "{quant}request value(s) {rv:?} did not match any {kind} of {} {:?}",
                c.op_name, c.raw
            )
        }
    };
    ConditionTrace {
        operator: c.op_name.to_string(),
        key: c.key_name.to_string(),
        passed,
        policy_values: c.raw.clone(),
        request_values,
        detail,
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.outcome.decision {
            Decision::Allow => "ALLOW",
            Decision::ExplicitDeny => "DENY (explicit)",
            Decision::ImplicitDeny => "DENY (implicit)",
        };
        writeln!(
            f,
            "{verdict}: {} -> {} on {}",
            self.principal, self.action, self.resource
        )?;
        writeln!(f, "  {}", self.summary)?;
        if let Some(m) = &self.denial_message {
            writeln!(f, "  AccessDenied: {m}")?;
        }
        for p in &self.policies {
            let name = match p.slot {
                PolicySlot::Identity(i) => format!("identity policy #{i}"),
                PolicySlot::Resource if self.resource_kind == ResourceKind::KmsKey => {
                    "key policy".into()
                }
                PolicySlot::Resource => "resource policy".into(),
            };
            match &p.id {
                Some(id) => writeln!(f, "{name} (Id {id:?}):")?,
                None => writeln!(f, "{name}:")?,
            }
            for s in &p.statements {
                let sid = s
                    .sid
                    .as_deref()
                    .map(|s| format!(" Sid {s:?}"))
                    .unwrap_or_default();
                let eff = match s.effect {
                    Effect::Allow => "Allow",
                    Effect::Deny => "Deny",
                };
                let status = if s.applies {
                    "every element matched".to_string()
                } else {
                    let mut failed: Vec<String> = Vec::new();
                    if s.principal.as_ref().is_some_and(|p| !p.matched) {
                        failed.push("Principal".into());
                    }
                    if !s.action.matched {
                        failed.push("Action".into());
                    }
                    if !s.resource.matched {
                        failed.push("Resource".into());
                    }
                    failed.extend(
                        s.conditions
                            .iter()
                            .filter(|c| !c.passed)
                            .map(|c| format!("{} {}", c.operator, c.key)),
                    );
                    format!("not applicable ({} failed)", failed.join(", "))
                };
                writeln!(
                    f,
                    "  [{}] statement {}{sid} ({eff}): {status}",
                    if s.applies { "applies" } else { "skipped" },
                    s.index,
                )?;
                let mark = |b: bool| if b { "ok  " } else { "FAIL" };
                if let Some(pr) = &s.principal {
                    writeln!(f, "      {} {}", mark(pr.matched), pr.detail)?;
                }
                writeln!(f, "      {} {}", mark(s.action.matched), s.action.detail)?;
                writeln!(
                    f,
                    "      {} {}",
                    mark(s.resource.matched),
                    s.resource.detail
                )?;
                for c in &s.conditions {
                    writeln!(
                        f,
                        "      {} {} {}: {}",
                        mark(c.passed),
                        c.operator,
                        c.key,
                        c.detail
                    )?;
                }
            }
        }
        Ok(())
    }
}
