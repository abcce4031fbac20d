//! Policy documents: parsing, validation and the compiled form.
//!
//! Design constraints:
//! - Parsing walks a `serde_json::Value` by hand so that every rejection names the statement
//!   (index and Sid), the member and what is wrong; the texts are what sluice returns in
//!   `MalformedPolicyDocumentException`.
//! - Everything evaluation needs is precomputed here: lowercased action patterns, split ARN
//!   patterns, lowercased condition keys, parsed numbers / dates / CIDRs / base64.
//! - Both `Version`s are accepted; with `2008-10-17` (or no Version) `${...}` is literal text,
//!   as in AWS.
//! - The compiled policy keeps its source text verbatim ([`Policy::source`]).

use crate::arn::{self, ArnPattern};
use crate::condition::{Condition, Operator, SetMode};
use crate::pattern::{Pattern, PatternOpts};
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;

/// Maximum size of a KMS key policy in bytes.
pub const KEY_POLICY_MAX_BYTES: usize = 32 * 1024;

/// Why a policy document was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub struct PolicyError {
    /// Zero-based statement index, when the problem is inside a statement.
    pub statement: Option<usize>,
    /// That statement's Sid, if it has one.
    pub sid: Option<String>,
    /// The member at fault (`Effect`, `Condition.StringLike.kms:ViaService`, ...).
    pub member: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(i) = self.statement {
            write!(f, "Statement {i}")?;
            if let Some(s) = &self.sid {
                write!(f, " (Sid {s:?})")?;
            }
            f.write_str(": ")?;
        }
        if let Some(m) = &self.member {
            write!(f, "{m}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// `Allow` or `Deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Effect {
    /// Allow.
    Allow,
    /// Deny.
    Deny,
}

/// What kind of document is being parsed (decides which members are required).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PolicyKind {
    /// Any policy: Principal and Resource optional (a missing Resource matches every resource,
    /// as in trust policies).
    Any,
    /// An identity policy: no Principal, Resource required.
    Identity,
    /// A resource policy: Principal and Resource required.
    Resource,
    /// A KMS key policy: a resource policy, at most 32 KB, and KMS's extra condition rules.
    KeyPolicy,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Principals {
    pub negated: bool,
    pub any: bool,
    pub accounts: Vec<Box<str>>,
    pub arns: Vec<Box<str>>,
    pub services: Vec<Box<str>>,
    pub federated: Vec<Box<str>>,
    pub canonical: Vec<Box<str>>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Actions {
    pub negated: bool,
    pub any: bool,
    pub patterns: Vec<Pattern>,
    pub raw: Vec<String>,
    /// The distinct (lowercased) services of the patterns, when none has a wildcard in its
    /// service part: a statement whose services do not include the request's is skipped with
    /// one comparison per service instead of one pattern match per action.
    pub services: Option<Vec<Box<str>>>,
    /// A one-word filter over the first letter of the action name (after `service:`): bit
    /// `b & 63` is set for every pattern's first name byte `b`; all bits when a pattern's name
    /// starts with a wildcard. A request whose bit is clear cannot match any pattern.
    pub first_mask: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resources {
    pub negated: bool,
    pub any: bool,
    pub patterns: Vec<ArnPattern>,
    pub raw: Vec<String>,
}

/// One compiled statement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Statement {
    pub sid: Option<Box<str>>,
    pub effect: Effect,
    pub principal: Option<Principals>,
    pub action: Actions,
    /// `None`: no Resource element (matches every resource).
    pub resource: Option<Resources>,
    pub conditions: Vec<Condition>,
}

/// A compiled policy document.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    source: String,
    id: Option<String>,
    version: Option<String>,
    kind: PolicyKind,
    pub(crate) statements: Vec<Statement>,
}

impl Policy {
    /// Parses and compiles any policy document.
    pub fn parse(json: &str) -> Result<Policy, PolicyError> {
        parse(json, PolicyKind::Any)
    }

    /// Parses an identity policy (rejects Principal / NotPrincipal, requires Resource).
    pub fn parse_identity_policy(json: &str) -> Result<Policy, PolicyError> {
        parse(json, PolicyKind::Identity)
    }

    /// Parses a resource policy (requires Principal or NotPrincipal, and Resource).
    pub fn parse_resource_policy(json: &str) -> Result<Policy, PolicyError> {
        parse(json, PolicyKind::Resource)
    }

    /// Parses a KMS key policy: a resource policy of at most 32 KB that must not combine
    /// `ForAllValues:` with `kms:EncryptionContext:*` or `aws:RequestTag/*`.
    pub fn parse_key_policy(json: &str) -> Result<Policy, PolicyError> {
        parse(json, PolicyKind::KeyPolicy)
    }

    /// Parses with an explicit [`PolicyKind`].
    pub fn parse_as(json: &str, kind: PolicyKind) -> Result<Policy, PolicyError> {
        parse(json, kind)
    }

    /// The document as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The document's `Id`.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The document's `Version`, if given.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// The kind it was validated as.
    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    /// Number of statements.
    pub fn statement_count(&self) -> usize {
        self.statements.len()
    }

    /// The Sid of statement `i`.
    pub fn sid(&self, i: usize) -> Option<&str> {
        self.statements.get(i).and_then(|s| s.sid.as_deref())
    }
}

struct Ctx<'a> {
    index: Option<usize>,
    sid: Option<&'a str>,
}

impl Ctx<'_> {
    fn err(&self, member: impl Into<Option<String>>, msg: impl Into<String>) -> PolicyError {
        PolicyError {
            statement: self.index,
            sid: self.sid.map(str::to_string),
            member: member.into(),
            message: msg.into(),
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn parse(json: &str, kind: PolicyKind) -> Result<Policy, PolicyError> {
    let top = Ctx {
        index: None,
        sid: None,
    };
    if kind == PolicyKind::KeyPolicy && json.len() > KEY_POLICY_MAX_BYTES {
        return Err(top.err(
            None,
            format!(
                "the key policy is {} bytes; the limit is {KEY_POLICY_MAX_BYTES}",
                json.len()
            ),
        ));
    }
    let doc: Value =
        serde_json::from_str(json).map_err(|e| top.err(None, format!("not valid JSON: {e}")))?;
    let Value::Object(obj) = &doc else {
        return Err(top.err(
            None,
            format!("the policy must be a JSON object, not {}", kind_of(&doc)),
        ));
    };
    let mut version = None;
    let mut id = None;
    let mut stmts = None;
    for (k, v) in obj {
        match k.as_str() {
            "Version" => match v {
                Value::String(s) if s == "2012-10-17" || s == "2008-10-17" => {
                    version = Some(s.clone())
                }
                _ => {
                    return Err(top.err(
                        Some("Version".into()),
                        format!("must be \"2012-10-17\" or \"2008-10-17\", not {v}"),
                    ));
                }
            },
            "Id" => match v {
                Value::String(s) => id = Some(s.clone()),
                _ => {
                    return Err(top.err(
                        Some("Id".into()),
                        format!("must be a string, not {}", kind_of(v)),
                    ));
                }
            },
            "Statement" => stmts = Some(v),
            other => {
                return Err(top.err(
                    None,
                    format!(
                        "unknown top-level member {other:?} (expected Version, Id and Statement)"
                    ),
                ));
            }
        }
    }
    let vars = version.as_deref() == Some("2012-10-17");
    let list: Vec<&Value> = match stmts {
        None => {
            return Err(top.err(
                Some("Statement".into()),
                "missing: a policy needs at least one statement",
            ));
        }
        Some(Value::Array(a)) if a.is_empty() => {
            return Err(top.err(
                Some("Statement".into()),
                "empty: a policy needs at least one statement",
            ));
        }
        Some(Value::Array(a)) => a.iter().collect(),
        Some(o @ Value::Object(_)) => vec![o],
        Some(v) => {
            return Err(top.err(
                Some("Statement".into()),
                format!(
                    "must be an object or an array of objects, not {}",
                    kind_of(v)
                ),
            ));
        }
    };
    let mut statements = Vec::with_capacity(list.len());
    let mut sids: Vec<&str> = Vec::new();
    for (i, v) in list.into_iter().enumerate() {
        let Value::Object(m) = v else {
            return Err(Ctx {
                index: Some(i),
                sid: None,
            }
            .err(None, format!("must be an object, not {}", kind_of(v))));
        };
        let sid = match m.get("Sid") {
            None => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(v) => {
                return Err(Ctx {
                    index: Some(i),
                    sid: None,
                }
                .err(
                    Some("Sid".into()),
                    format!("must be a string, not {}", kind_of(v)),
                ));
            }
        };
        let cx = Ctx {
            index: Some(i),
            sid,
        };
        if let Some(s) = sid
            && !s.is_empty()
        {
            if sids.contains(&s) {
                return Err(cx.err(
                    Some("Sid".into()),
                    format!("{s:?} is used by another statement; Sids must be unique"),
                ));
            }
            sids.push(s);
        }
        statements.push(statement(m, &cx, kind, vars)?);
    }
    Ok(Policy {
        source: json.to_string(),
        id,
        version,
        kind,
        statements,
    })
}

fn strings(v: &Value, cx: &Ctx<'_>, member: &str) -> Result<Vec<String>, PolicyError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) if a.is_empty() => {
            Err(cx.err(Some(member.to_string()), "must not be an empty array"))
        }
        Value::Array(a) => a
            .iter()
            .map(|e| match e {
                Value::String(s) => Ok(s.clone()),
                other => Err(cx.err(
                    Some(member.to_string()),
                    format!("array elements must be strings, found {}", kind_of(other)),
                )),
            })
            .collect(),
        other => Err(cx.err(
            Some(member.to_string()),
            format!(
                "must be a string or an array of strings, not {}",
                kind_of(other)
            ),
        )),
    }
}

fn statement(
    m: &Map<String, Value>,
    cx: &Ctx<'_>,
    kind: PolicyKind,
    vars: bool,
) -> Result<Statement, PolicyError> {
    const KNOWN: [&str; 9] = [
        "Sid",
        "Effect",
        "Principal",
        "NotPrincipal",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
    ];
    for k in m.keys() {
        if !KNOWN.contains(&k.as_str()) {
            return Err(cx.err(
                None,
                format!(
                    "unknown member {k:?} (expected Sid, Effect, Principal/NotPrincipal, Action/NotAction, \
                     Resource/NotResource, Condition)"
                ),
            ));
        }
    }
    let effect = match m.get("Effect") {
        Some(Value::String(s)) if s == "Allow" => Effect::Allow,
        Some(Value::String(s)) if s == "Deny" => Effect::Deny,
        Some(v) => {
            return Err(cx.err(
                Some("Effect".into()),
                format!("must be \"Allow\" or \"Deny\", not {v}"),
            ));
        }
        None => {
            return Err(cx.err(
                Some("Effect".into()),
                "missing: every statement needs \"Effect\": \"Allow\" or \"Deny\"",
            ));
        }
    };
    let principal = match (m.get("Principal"), m.get("NotPrincipal")) {
        (Some(_), Some(_)) => {
            return Err(cx.err(
                Some("Principal".into()),
                "a statement cannot have both Principal and NotPrincipal",
            ));
        }
        (Some(p), None) => Some(principals(p, cx, "Principal", false)?),
        (None, Some(p)) => Some(principals(p, cx, "NotPrincipal", true)?),
        (None, None) => None,
    };
    match kind {
        PolicyKind::Identity if principal.is_some() => {
            return Err(cx.err(
                Some("Principal".into()),
                "an identity-based policy must not name a principal (it applies to the identity it is attached to)",
            ));
        }
        PolicyKind::Resource | PolicyKind::KeyPolicy if principal.is_none() => {
            return Err(cx.err(Some("Principal".into()), "missing: every statement of a resource-based policy needs a Principal or NotPrincipal"));
        }
        _ => {}
    }
    let action = match (m.get("Action"), m.get("NotAction")) {
        (Some(_), Some(_)) => {
            return Err(cx.err(
                Some("Action".into()),
                "a statement cannot have both Action and NotAction",
            ));
        }
        (Some(a), None) => actions(a, cx, "Action", false)?,
        (None, Some(a)) => actions(a, cx, "NotAction", true)?,
        (None, None) => {
            return Err(cx.err(
                Some("Action".into()),
                "missing: every statement needs Action or NotAction",
            ));
        }
    };
    let resource = match (m.get("Resource"), m.get("NotResource")) {
        (Some(_), Some(_)) => {
            return Err(cx.err(
                Some("Resource".into()),
                "a statement cannot have both Resource and NotResource",
            ));
        }
        (Some(r), None) => Some(resources(r, cx, "Resource", false, vars)?),
        (None, Some(r)) => Some(resources(r, cx, "NotResource", true, vars)?),
        (None, None) if kind != PolicyKind::Any => {
            return Err(cx.err(
                Some("Resource".into()),
                "missing: every statement needs Resource or NotResource",
            ));
        }
        (None, None) => None,
    };
    let conditions = match m.get("Condition") {
        None => Vec::new(),
        Some(c) => conditions(c, cx, kind, vars)?,
    };
    Ok(Statement {
        sid: cx.sid.map(Into::into),
        effect,
        principal,
        action,
        resource,
        conditions,
    })
}

fn principals(
    v: &Value,
    cx: &Ctx<'_>,
    member: &str,
    negated: bool,
) -> Result<Principals, PolicyError> {
    let mut p = Principals {
        negated,
        any: false,
        accounts: Vec::new(),
        arns: Vec::new(),
        services: Vec::new(),
        federated: Vec::new(),
        canonical: Vec::new(),
    };
    match v {
        Value::String(s) if s == "*" => p.any = true,
        Value::String(s) => {
            return Err(cx.err(
                Some(member.to_string()),
                format!("{s:?}: a string Principal must be \"*\"; name principals as {{\"AWS\": ...}}, {{\"Service\": ...}} or {{\"Federated\": ...}}"),
            ));
        }
        Value::Object(o) if o.is_empty() => {
            return Err(cx.err(Some(member.to_string()), "must name at least one principal"));
        }
        Value::Object(o) => {
            for (k, vals) in o {
                let mem = format!("{member}.{k}");
                let list = strings(vals, cx, &mem)?;
                match k.as_str() {
                    "AWS" => {
                        for a in list {
                            if a == "*" {
                                p.any = true;
                            } else if let Some(acct) = arn::account_of_root(&a) {
                                p.accounts.push(acct.into());
                            } else if let Some(parsed) = arn::Arn::parse(&a) {
                                if a.contains('*') || a.contains('?') {
                                    return Err(cx.err(
                                        Some(mem),
                                        format!("{a:?}: wildcards are not allowed in principal ARNs (use \"*\" or a Condition on aws:PrincipalArn)"),
                                    ));
                                }
                                if parsed.service != "iam" && parsed.service != "sts" {
                                    return Err(cx.err(
                                        Some(mem),
                                        format!("{a:?} is not an IAM or STS principal ARN"),
                                    ));
                                }
                                p.arns.push(a.into());
                            } else {
                                return Err(cx.err(
                                    Some(mem),
                                    format!("{a:?} is not a valid principal: expected an account id, an IAM/STS ARN or \"*\""),
                                ));
                            }
                        }
                    }
                    "Service" => {
                        for s in list {
                            if s.is_empty() || s.contains('*') {
                                return Err(cx.err(
                                    Some(mem),
                                    format!("{s:?} is not a service principal name"),
                                ));
                            }
                            p.services.push(s.into());
                        }
                    }
                    "Federated" => p.federated.extend(list.into_iter().map(Into::into)),
                    "CanonicalUser" => p.canonical.extend(list.into_iter().map(Into::into)),
                    other => {
                        return Err(cx.err(
                            Some(member.to_string()),
                            format!("unknown principal type {other:?} (expected AWS, Service, Federated or CanonicalUser)"),
                        ));
                    }
                }
            }
        }
        other => {
            return Err(cx.err(
                Some(member.to_string()),
                format!("must be \"*\" or an object, not {}", kind_of(other)),
            ));
        }
    }
    Ok(p)
}

fn actions(v: &Value, cx: &Ctx<'_>, member: &str, negated: bool) -> Result<Actions, PolicyError> {
    let raw = strings(v, cx, member)?;
    let mut patterns = Vec::with_capacity(raw.len());
    let mut any = false;
    for a in &raw {
        if a == "*" {
            any = true;
        } else {
            let ok = a.split_once(':').is_some_and(|(svc, act)| {
                !svc.is_empty()
                    && !act.is_empty()
                    && svc.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !act.contains(':')
            });
            if !ok {
                return Err(cx.err(
                    Some(member.to_string()),
                    format!("{a:?} is not a valid action: expected \"service:Action\" (wildcards allowed, e.g. \"kms:GenerateDataKey*\") or \"*\""),
                ));
            }
        }
        // Lowercased once here; the request action is lowercased once per evaluation, so the
        // comparison itself is case-sensitive (memcmp) rather than per-byte case folding.
        let pat = Pattern::compile(
            &a.to_ascii_lowercase(),
            PatternOpts {
                glob: true,
                ci: false,
                vars: false,
            },
        )
        .map_err(|e| cx.err(Some(member.to_string()), e.0))?;
        patterns.push(pat);
    }
    let mut services: Option<Vec<Box<str>>> = Some(Vec::new());
    for a in &raw {
        match a.split_once(':') {
            Some((svc, _)) if !svc.contains(['*', '?']) => {
                let svc = svc.to_ascii_lowercase();
                if let Some(list) = services.as_mut()
                    && !list.iter().any(|s| **s == *svc)
                {
                    list.push(svc.into_boxed_str());
                }
            }
            _ => services = None,
        }
    }
    let mut first_mask = 0u64;
    for a in &raw {
        match a
            .split_once(':')
            .map(|(_, name)| name.as_bytes().first().copied())
        {
            Some(Some(b)) if b != b'*' && b != b'?' => {
                first_mask |= 1u64 << (b.to_ascii_lowercase() & 63)
            }
            _ => first_mask = u64::MAX,
        }
    }
    Ok(Actions {
        negated,
        any,
        patterns,
        raw,
        services,
        first_mask,
    })
}

fn resources(
    v: &Value,
    cx: &Ctx<'_>,
    member: &str,
    negated: bool,
    vars: bool,
) -> Result<Resources, PolicyError> {
    let raw = strings(v, cx, member)?;
    let mut patterns = Vec::with_capacity(raw.len());
    let mut any = false;
    for r in &raw {
        if r == "*" {
            any = true;
        } else if !r.starts_with("arn:") || r.matches(':').count() < 5 {
            return Err(cx.err(
                Some(member.to_string()),
                format!("{r:?} is not a valid resource: expected \"*\" or an ARN (arn:partition:service:region:account:resource)"),
            ));
        }
        patterns
            .push(ArnPattern::compile(r, vars).map_err(|m| cx.err(Some(member.to_string()), m))?);
    }
    Ok(Resources {
        negated,
        any,
        patterns,
        raw,
    })
}

fn cond_values(v: &Value) -> Option<Vec<String>> {
    let one = |e: &Value| match e {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match v {
        Value::Array(a) if a.is_empty() => None,
        Value::Array(a) => a.iter().map(one).collect(),
        other => one(other).map(|s| vec![s]),
    }
}

fn conditions(
    v: &Value,
    cx: &Ctx<'_>,
    kind: PolicyKind,
    vars: bool,
) -> Result<Vec<Condition>, PolicyError> {
    let Value::Object(ops) = v else {
        return Err(cx.err(
            Some("Condition".into()),
            format!(
                "must be an object of {{\"Operator\": {{\"key\": value(s)}}}}, not {}",
                kind_of(v)
            ),
        ));
    };
    let mut out = Vec::new();
    for (op_name, keys) in ops {
        let mem = format!("Condition.{op_name}");
        let op = Operator::parse(op_name).map_err(|m| cx.err(Some(mem.clone()), m))?;
        let Value::Object(keys) = keys else {
            return Err(cx.err(
                Some(mem),
                format!(
                    "must be an object of {{\"key\": value(s)}}, not {}",
                    kind_of(keys)
                ),
            ));
        };
        if keys.is_empty() {
            return Err(cx.err(Some(mem), "names no condition key"));
        }
        for (key, vals) in keys {
            let mem = format!("Condition.{op_name}.{key}");
            if key.is_empty() || key.chars().any(char::is_whitespace) {
                return Err(cx.err(
                    Some(mem),
                    format!("{key:?} is not a valid condition key name"),
                ));
            }
            let raw = cond_values(vals).ok_or_else(|| {
                cx.err(
                    Some(mem.clone()),
                    format!("values must be a string, number or boolean, or a non-empty array of them, not {vals}"),
                )
            })?;
            if kind == PolicyKind::KeyPolicy && op.set == SetMode::ForAllValues {
                let lk = key.to_ascii_lowercase();
                if lk.starts_with("kms:encryptioncontext:") || lk.starts_with("aws:requesttag/") {
                    return Err(cx.err(
                        Some(mem),
                        format!(
                            "OverlyPermissiveCondition: {op_name} with the single-valued key {key:?} is true when the \
                             key is absent, so it would allow requests without it; use {} without ForAllValues: \
                             (or ForAllValues: with kms:EncryptionContextKeys / aws:TagKeys to limit the keys)",
                            op_name.split_once(':').map_or(op_name.as_str(), |x| x.1)
                        ),
                    ));
                }
            }
            out.push(
                Condition::compile(op_name, op, key, raw, vars)
                    .map_err(|m| cx.err(Some(mem), m))?,
            );
        }
    }
    Ok(out)
}
