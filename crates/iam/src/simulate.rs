//! The policy simulator: `SimulatePrincipalPolicy` and `SimulateCustomPolicy`, answered by the
//! policy engine's `explain`.
//!
//! For each action and resource the result has AWS's shape: `EvalDecision` (`allowed`,
//! `explicitDeny`, `implicitDeny`), `MatchedStatements` (the statements that decided: the
//! applicable `Deny` statements for an explicit deny, the applicable `Allow` statements for an
//! allow, none for an implicit deny; `SourcePolicyId` is the inline policy's name, the managed
//! policy's name, `PolicyInputList.N` or `ResourcePolicy`; `SourcePolicyType` is `user`, `role`,
//! `user-managed`, `IAM Policy` or `resource`) and `MissingContextValues` (the condition keys of
//! statements whose action and resource matched that the request did not supply).
//! `StartPosition` / `EndPosition` give the line and column (1-based) of the statement's `{`
//! and `}` in the document as written ([`statement_spans`]).

use std::sync::Arc;

use serde_json::Value;
use sluice_core::{AwsError, CallContext};
use sluice_policy::{
    Context, Decision, Effect, Inputs, Policy, PolicySlot, PrincipalInfo, Request, ResourceKind,
    explain,
};

use crate::errors::*;
use crate::model::role_name_of;
use crate::query::{Xml, s, strings};
use crate::{Iam, Out, compile_identity};

/// A policy the simulation evaluates, with its AWS source id and type.
struct Source {
    id: String,
    kind: &'static str,
    policy: Arc<Policy>,
}

/// The simulated caller.
struct Caller {
    arn: String,
    role_arn: Option<String>,
    user_id: String,
    username: Option<String>,
}

fn context_of(input: &Value, base: Context) -> Context {
    let mut c = base;
    for e in input
        .get("ContextEntries")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(key) = s(e, "ContextKeyName") else {
            continue;
        };
        let values = strings(e, "ContextKeyValues");
        let list = s(e, "ContextKeyType").is_some_and(|t| t.ends_with("List"));
        if list {
            c.set_multi(key, values);
        } else if let Some(v) = values.into_iter().next() {
            c.set(key, v);
        }
    }
    c
}

fn decision_name(d: Decision) -> &'static str {
    match d {
        Decision::Allow => "allowed",
        Decision::ExplicitDeny => "explicitDeny",
        Decision::ImplicitDeny => "implicitDeny",
    }
}

impl Iam {
    fn input_policies(&self, input: &Value) -> Result<Vec<Source>, AwsError> {
        strings(input, "PolicyInputList")
            .iter()
            .enumerate()
            .map(|(i, doc)| {
                Ok(Source {
                    id: format!("PolicyInputList.{}", i + 1),
                    kind: "IAM Policy",
                    policy: compile_identity(doc)?,
                })
            })
            .collect()
    }

    pub(crate) fn simulate_principal(
        &self,
        ctx: &CallContext,
        input: &Value,
    ) -> Result<Out, AwsError> {
        let arn = s(input, "PolicySourceArn").unwrap_or_default();
        let name = role_name_of(arn).to_ascii_lowercase();
        let mut sources = Vec::new();
        let caller = {
            let st = self.state.read();
            let managed = |attached: &[String], sources: &mut Vec<Source>| {
                for a in attached {
                    if let Some(p) = st.policy_by_arn(a) {
                        sources.push(Source {
                            id: p.rec.name.clone(),
                            kind: "user-managed",
                            policy: p.compiled.clone(),
                        });
                    }
                }
            };
            if let Some(u) = st.users.get(&name).filter(|u| u.rec.arn == arn) {
                for (n, p) in &u.inline {
                    sources.push(Source {
                        id: n.clone(),
                        kind: "user",
                        policy: p.clone(),
                    });
                }
                managed(&u.rec.attached, &mut sources);
                Caller {
                    arn: u.rec.arn.clone(),
                    role_arn: None,
                    user_id: u.rec.id.clone(),
                    username: Some(u.rec.name.clone()),
                }
            } else if let Some(r) = st.roles.get(&name).filter(|r| r.rec.arn == arn) {
                for (n, p) in &r.inline {
                    sources.push(Source {
                        id: n.clone(),
                        kind: "role",
                        policy: p.clone(),
                    });
                }
                managed(&r.rec.attached, &mut sources);
                Caller {
                    arn: r.rec.arn.clone(),
                    role_arn: Some(r.rec.arn.clone()),
                    user_id: r.rec.id.clone(),
                    username: None,
                }
            } else {
                return Err(no_such_entity(format!(
                    "PolicySourceArn {arn} does not name a user or role of this account."
                )));
            }
        };
        sources.extend(self.input_policies(input)?);
        self.simulate(ctx, input, &sources, &caller)
    }

    pub(crate) fn simulate_custom(
        &self,
        ctx: &CallContext,
        input: &Value,
    ) -> Result<Out, AwsError> {
        let sources = self.input_policies(input)?;
        let caller = match s(input, "CallerArn") {
            Some(a) => Caller {
                arn: a.to_string(),
                role_arn: None,
                user_id: a.to_string(),
                username: Some(role_name_of(a).to_string()),
            },
            None => Caller {
                arn: ctx.principal.arn.clone(),
                role_arn: ctx.principal.role_arn.clone(),
                user_id: ctx.principal.user_id.clone(),
                username: None,
            },
        };
        self.simulate(ctx, input, &sources, &caller)
    }

    fn simulate(
        &self,
        _ctx: &CallContext,
        input: &Value,
        sources: &[Source],
        caller: &Caller,
    ) -> Result<Out, AwsError> {
        let resource_policy = match s(input, "ResourcePolicy") {
            Some(doc) => {
                Some(Policy::parse_resource_policy(doc).map_err(|e| malformed(e.to_string()))?)
            }
            None => None,
        };
        let actions = strings(input, "ActionNames");
        let mut resources = strings(input, "ResourceArns");
        if resources.is_empty() {
            resources.push("*".to_string());
        }
        // Only the supplied context entries (and the time): absent keys are what the simulator
        // reports as missing, so the caller's own address is not added.
        let mut base = Context::new();
        base.set_time(self.now().unix_timestamp());
        let context = context_of(input, base);
        let refs: Vec<&Policy> = sources.iter().map(|s| s.policy.as_ref()).collect();
        let spans: Vec<Vec<(Pos, Pos)>> = sources
            .iter()
            .map(|s| statement_spans(s.policy.source()))
            .collect();
        let resource_spans = resource_policy
            .as_ref()
            .map(|p| statement_spans(p.source()))
            .unwrap_or_default();
        let principal = PrincipalInfo {
            arn: &caller.arn,
            role_arn: caller.role_arn.as_deref(),
            account: &self.cfg.account,
            user_id: &caller.user_id,
            username: caller.username.as_deref(),
            is_root: false,
            is_service: false,
        };
        let resource_account = s(input, "ResourceOwner")
            .and_then(|o| o.split(':').nth(4).filter(|a| !a.is_empty()).or(Some(o)))
            .unwrap_or(&self.cfg.account)
            .to_string();
        let mut x = Xml::new();
        x.open("EvaluationResults");
        for action in &actions {
            for resource in &resources {
                let req = Request {
                    principal,
                    action,
                    resource,
                    context: &context,
                };
                let ex = explain(
                    &req,
                    &Inputs {
                        identity_policies: &refs,
                        resource_policy: resource_policy.as_ref(),
                        resource_account: &resource_account,
                        kind: ResourceKind::Generic,
                    },
                );
                let wanted = match ex.outcome.decision {
                    Decision::Allow => Some(Effect::Allow),
                    Decision::ExplicitDeny => Some(Effect::Deny),
                    Decision::ImplicitDeny => None,
                };
                let mut matched: Vec<(String, &'static str, Option<Span>)> = Vec::new();
                let mut missing: Vec<String> = Vec::new();
                for pt in &ex.policies {
                    let (id, kind, pos) = match pt.slot {
                        PolicySlot::Identity(i) => {
                            (sources[i].id.clone(), sources[i].kind, &spans[i])
                        }
                        PolicySlot::Resource => {
                            ("ResourcePolicy".to_string(), "resource", &resource_spans)
                        }
                    };
                    for st in &pt.statements {
                        if st.applies && Some(st.effect) == wanted {
                            matched.push((id.clone(), kind, pos.get(st.index).copied()));
                        }
                        if st.action.matched && st.resource.matched {
                            for c in &st.conditions {
                                if c.request_values.is_none() && !missing.contains(&c.key) {
                                    missing.push(c.key.clone());
                                }
                            }
                        }
                    }
                }
                x.open("member");
                x.leaf("EvalActionName", action)
                    .leaf("EvalResourceName", resource)
                    .leaf("EvalDecision", decision_name(ex.outcome.decision));
                x.members("MatchedStatements", &matched, |x, (id, kind, pos)| {
                    x.leaf("SourcePolicyId", id).leaf("SourcePolicyType", kind);
                    if let Some(((l1, c1), (l2, c2))) = pos {
                        x.elem("StartPosition", |x| {
                            x.leaf("Line", &l1.to_string())
                                .leaf("Column", &c1.to_string());
                        })
                        .elem("EndPosition", |x| {
                            x.leaf("Line", &l2.to_string())
                                .leaf("Column", &c2.to_string());
                        });
                    }
                });
                x.members("MissingContextValues", &missing, |x, k| {
                    x.text(k);
                });
                x.close("member");
            }
        }
        x.close("EvaluationResults");
        x.leaf("IsTruncated", "false");
        Ok(Out::xml(x))
    }
}

/// A line / column position (both 1-based) in a policy document.
type Pos = (u32, u32);
/// Where a statement starts and ends.
type Span = (Pos, Pos);

/// Where each statement of a policy document starts and ends (the `{` and `}` of each element
/// of the top-level `Statement`, or of the single statement object), found by a small JSON
/// scanner over the document as written. Empty when the document cannot be scanned.
pub(crate) fn statement_spans(doc: &str) -> Vec<(Pos, Pos)> {
    let mut s = Scan {
        chars: doc.chars().collect(),
        i: 0,
        line: 1,
        col: 1,
        last: (1, 1),
    };
    s.top().unwrap_or_default()
}

struct Scan {
    chars: Vec<char>,
    i: usize,
    line: u32,
    col: u32,
    last: Pos,
}

impl Scan {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.last = (self.line, self.col);
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn expect(&mut self, c: char) -> Option<()> {
        self.ws();
        (self.bump()? == c).then_some(())
    }

    fn string(&mut self) -> Option<String> {
        self.expect('"')?;
        let mut out = String::new();
        loop {
            match self.bump()? {
                '"' => return Some(out),
                '\\' => {
                    let e = self.bump()?;
                    out.push(e);
                }
                c => out.push(c),
            }
        }
    }

    fn skip_value(&mut self) -> Option<()> {
        self.ws();
        match self.peek()? {
            '"' => self.string().map(|_| ()),
            open @ ('{' | '[') => {
                let close = if open == '{' { '}' } else { ']' };
                self.bump();
                loop {
                    self.ws();
                    if self.peek()? == close {
                        self.bump();
                        return Some(());
                    }
                    if open == '{' {
                        self.string()?;
                        self.expect(':')?;
                    }
                    self.skip_value()?;
                    self.ws();
                    if self.peek()? == ',' {
                        self.bump();
                    }
                }
            }
            _ => {
                while self
                    .peek()
                    .is_some_and(|c| !matches!(c, ',' | '}' | ']') && !c.is_whitespace())
                {
                    self.bump();
                }
                Some(())
            }
        }
    }

    fn span(&mut self) -> Option<(Pos, Pos)> {
        self.ws();
        let start = (self.line, self.col);
        self.skip_value()?;
        Some((start, self.last))
    }

    fn top(&mut self) -> Option<Vec<(Pos, Pos)>> {
        self.expect('{')?;
        let mut spans = Vec::new();
        loop {
            self.ws();
            if self.peek()? == '}' {
                return Some(spans);
            }
            let key = self.string()?;
            self.expect(':')?;
            self.ws();
            if key == "Statement" {
                if self.peek()? == '[' {
                    self.bump();
                    loop {
                        self.ws();
                        if self.peek()? == ']' {
                            self.bump();
                            break;
                        }
                        spans.push(self.span()?);
                        self.ws();
                        if self.peek()? == ',' {
                            self.bump();
                        }
                    }
                } else {
                    spans.push(self.span()?);
                }
            } else {
                self.skip_value()?;
            }
            self.ws();
            if self.peek()? == ',' {
                self.bump();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_positions_follow_the_document_text() {
        let doc = "{\"Version\":\"2012-10-17\",\n \"Statement\":[\n  {\"Effect\":\"Allow\",\"Action\":\"a:b\",\"Resource\":\"*\"},\n  {\"Sid\":\"x}\\\"\",\n   \"Effect\":\"Deny\",\"Action\":[\"c:d\"],\"Resource\":\"*\"}]}";
        let spans = statement_spans(doc);
        assert_eq!(spans, vec![((3, 3), (3, 50)), ((4, 3), (5, 51))]);
        let single = r#"{"Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#;
        assert_eq!(statement_spans(single), vec![((1, 14), (1, 59))]);
        assert!(statement_spans("not json").is_empty());
    }
}
