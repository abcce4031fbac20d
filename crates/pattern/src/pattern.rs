//! Pattern parsing, validation and `$or` expansion.
//!
//! A pattern is a JSON object. A field whose value is an object nests; a field whose value is an
//! array is a *leaf* holding a match list (any element may match). `$or` (an array of at least two
//! objects none of which uses an operator keyword) holds alternatives at the same level.
//!
//! After validation a pattern is expanded into *conjunctions* (its disjunctive normal form):
//! each conjunction is a list of [`Predicate`]s that must all hold. The number of conjunctions is
//! bounded by [`Limits::max_or_combinations`] (AWS: 1,000).

use crate::cond::{Condition, IpRange, Literal, NumRange, Wildcard, canonical_number, fold_case};
use crate::error::PatternError;
use serde_json::{Map, Value};

/// Limits applied to patterns. Defaults are AWS's where AWS documents one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum pattern size in characters (AWS default 2,048; adjustable up to 4,096).
    pub max_pattern_chars: usize,
    /// Maximum number of combinations `$or` (and mixed `exists:false` lists) may expand into
    /// (AWS: 1,000).
    pub max_or_combinations: u64,
    /// Maximum nesting depth of the pattern document (objects and arrays). AWS documents none;
    /// 64 is ours (a 2,048-character pattern cannot usefully nest deeper).
    pub max_depth: usize,
    /// Complexity guard for wildcards: the largest number of `wildcard` conditions (including
    /// those inside `anything-but`) one matcher may hold in total. Each wildcard condition costs
    /// at most one linear pass over a candidate value, so this bounds per-value matching cost.
    /// AWS caps rules with wildcards at 30 per bus; 1,000 is ours.
    pub max_wildcard_conditions: usize,
    /// Complexity guard for one wildcard: the most `*` it may contain.
    pub max_wildcard_stars: usize,
    /// Maximum nesting depth of arrays and objects the event scanner descends into
    /// (PutEvents processes 1,100 levels).
    pub max_event_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pattern_chars: 2048,
            max_or_combinations: 1000,
            max_depth: 64,
            max_wildcard_conditions: 1000,
            max_wildcard_stars: 64,
            max_event_depth: 1100,
        }
    }
}

/// One requirement of a conjunction.
#[derive(Debug, Clone, PartialEq)]
pub struct Predicate {
    /// Field names from the event root to the leaf.
    pub path: Vec<String>,
    /// What must hold at the path.
    pub kind: PredicateKind,
}

/// Positive (some value satisfies one condition) or absence (`exists: false`).
#[derive(Debug, Clone, PartialEq)]
pub enum PredicateKind {
    /// Some leaf value at the path satisfies at least one condition.
    Any(Vec<Condition>),
    /// No leaf value at the path (in the array elements the other predicates chose).
    Absent,
}

/// A validated, expanded pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    /// The pattern text as given.
    pub source: String,
    /// Disjunction of conjunctions.
    pub conjunctions: Vec<Vec<Predicate>>,
}

const OPERATORS: &[&str] = &[
    "prefix",
    "suffix",
    "equals-ignore-case",
    "wildcard",
    "anything-but",
    "numeric",
    "cidr",
    "exists",
];

/// Intermediate tree: fields ANDed, `$or` groups ANDed, alternatives within a group ORed.
struct Obj {
    fields: Vec<(String, Node)>,
    ors: Vec<Vec<Obj>>,
}

enum Node {
    Leaf {
        conditions: Vec<Condition>,
        absent: bool,
    },
    Obj(Obj),
}

impl Pattern {
    /// Parses and validates a pattern with the default [`Limits`].
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        Self::parse_with(text, &Limits::default())
    }

    /// Parses and validates a pattern.
    pub fn parse_with(text: &str, limits: &Limits) -> Result<Pattern, PatternError> {
        let chars = text.chars().count();
        if chars > limits.max_pattern_chars {
            return Err(PatternError::new(
                &[],
                format!(
                    "pattern is {chars} characters, more than the limit of {}",
                    limits.max_pattern_chars
                ),
            ));
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| PatternError::new(&[], format!("pattern is not valid JSON: {e}")))?;
        let mut path = Vec::new();
        let Value::Object(map) = &value else {
            return Err(PatternError::with_value(
                &path,
                "pattern must be a JSON object",
                &value,
            ));
        };
        let ctx = Ctx { limits };
        let obj = ctx.object(map, &mut path, 1)?;
        let combos = count(&obj);
        if combos > limits.max_or_combinations {
            return Err(PatternError::new(
                &[],
                format!(
                    "pattern expands into {} combinations, more than the limit of {}",
                    if combos == u64::MAX {
                        "too many".to_string()
                    } else {
                        combos.to_string()
                    },
                    limits.max_or_combinations
                ),
            ));
        }
        let mut conjunctions = Vec::new();
        expand(&obj, &mut Vec::new(), vec![Vec::new()], &mut conjunctions);
        Ok(Pattern {
            source: text.to_string(),
            conjunctions,
        })
    }

    /// Number of `wildcard` conditions (including inside `anything-but`).
    pub fn wildcard_conditions(&self) -> usize {
        fn n(c: &Condition) -> usize {
            match c {
                Condition::Wildcard(_) => 1,
                Condition::AnythingBut(inner) => inner.iter().map(n).sum(),
                _ => 0,
            }
        }
        self.conjunctions
            .iter()
            .flatten()
            .map(|p| match &p.kind {
                PredicateKind::Any(cs) => cs.iter().map(n).sum(),
                PredicateKind::Absent => 0,
            })
            .sum()
    }
}

fn count(obj: &Obj) -> u64 {
    let mut n: u64 = 1;
    for (_, node) in &obj.fields {
        let k = match node {
            Node::Leaf { conditions, absent } => {
                if *absent && !conditions.is_empty() {
                    2
                } else {
                    1
                }
            }
            Node::Obj(o) => count(o),
        };
        n = n.saturating_mul(k);
    }
    for group in &obj.ors {
        let s = group
            .iter()
            .fold(0u64, |acc, o| acc.saturating_add(count(o)));
        n = n.saturating_mul(s);
    }
    n
}

/// Cross product: every partial conjunction in `acc` extended by each alternative.
fn cross(acc: Vec<Vec<Predicate>>, alts: &[Vec<Predicate>]) -> Vec<Vec<Predicate>> {
    let mut out = Vec::with_capacity(acc.len() * alts.len());
    for a in &acc {
        for alt in alts {
            let mut c = a.clone();
            c.extend(alt.iter().cloned());
            out.push(c);
        }
    }
    out
}

fn expand(
    obj: &Obj,
    prefix: &mut Vec<String>,
    start: Vec<Vec<Predicate>>,
    out: &mut Vec<Vec<Predicate>>,
) {
    let mut acc = start;
    for (name, node) in &obj.fields {
        prefix.push(name.clone());
        match node {
            Node::Leaf { conditions, absent } => {
                let mut alts = Vec::new();
                if !conditions.is_empty() {
                    alts.push(vec![Predicate {
                        path: prefix.clone(),
                        kind: PredicateKind::Any(conditions.clone()),
                    }]);
                }
                if *absent {
                    alts.push(vec![Predicate {
                        path: prefix.clone(),
                        kind: PredicateKind::Absent,
                    }]);
                }
                acc = cross(acc, &alts);
            }
            Node::Obj(child) => {
                let mut sub = Vec::new();
                expand(child, prefix, vec![Vec::new()], &mut sub);
                acc = cross(acc, &sub);
            }
        }
        prefix.pop();
    }
    for group in &obj.ors {
        let mut alts = Vec::new();
        for alt in group {
            expand(alt, prefix, vec![Vec::new()], &mut alts);
        }
        acc = cross(acc, &alts);
    }
    out.extend(acc);
}

struct Ctx<'l> {
    limits: &'l Limits,
}

fn is_or_group(v: &Value) -> bool {
    match v {
        Value::Array(items) if items.len() >= 2 => items.iter().all(|i| match i {
            Value::Object(m) => !m.is_empty() && !m.keys().any(|k| OPERATORS.contains(&k.as_str())),
            _ => false,
        }),
        _ => false,
    }
}

impl Ctx<'_> {
    fn depth(&self, path: &[String], depth: usize) -> Result<(), PatternError> {
        if depth > self.limits.max_depth {
            return Err(PatternError::new(
                path,
                format!(
                    "pattern nests deeper than the limit of {}",
                    self.limits.max_depth
                ),
            ));
        }
        Ok(())
    }

    fn object(
        &self,
        map: &Map<String, Value>,
        path: &mut Vec<String>,
        depth: usize,
    ) -> Result<Obj, PatternError> {
        self.depth(path, depth)?;
        if map.is_empty() {
            return Err(PatternError::new(path, "empty objects are not allowed"));
        }
        let mut obj = Obj {
            fields: Vec::new(),
            ors: Vec::new(),
        };
        for (key, value) in map {
            path.push(key.clone());
            if key == "$or" && is_or_group(value) {
                let Value::Array(items) = value else {
                    unreachable!("checked by is_or_group")
                };
                let mut group = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    path.push(format!("[{i}]"));
                    let Value::Object(m) = item else {
                        unreachable!("checked by is_or_group")
                    };
                    group.push(self.object(m, path, depth + 1)?);
                    path.pop();
                }
                obj.ors.push(group);
            } else {
                let node = match value {
                    Value::Object(m) => Node::Obj(self.object(m, path, depth + 1)?),
                    Value::Array(items) => self.leaf(items, path, depth + 1)?,
                    other => {
                        return Err(PatternError::with_value(
                            path,
                            "match value must be an array of conditions or an object",
                            other,
                        ));
                    }
                };
                obj.fields.push((key.clone(), node));
            }
            path.pop();
        }
        Ok(obj)
    }

    fn leaf(
        &self,
        items: &[Value],
        path: &mut Vec<String>,
        depth: usize,
    ) -> Result<Node, PatternError> {
        self.depth(path, depth)?;
        if items.is_empty() {
            return Err(PatternError::new(path, "empty arrays are not allowed"));
        }
        let mut conditions = Vec::new();
        let mut absent = false;
        for (i, item) in items.iter().enumerate() {
            path.push(format!("[{i}]"));
            match self.condition(item, path, depth + 1)? {
                Some(c) => {
                    if !conditions.contains(&c) {
                        conditions.push(c);
                    }
                }
                None => absent = true,
            }
            path.pop();
        }
        Ok(Node::Leaf { conditions, absent })
    }

    /// Returns `None` for `{"exists": false}`.
    fn condition(
        &self,
        item: &Value,
        path: &mut Vec<String>,
        depth: usize,
    ) -> Result<Option<Condition>, PatternError> {
        let c = match item {
            Value::String(s) => Condition::Exact(Literal::Str(s.clone())),
            Value::Number(_) => Condition::Exact(Literal::Num(number(item, path)?)),
            Value::Bool(b) => Condition::Exact(Literal::Bool(*b)),
            Value::Null => Condition::Exact(Literal::Null),
            Value::Array(_) => {
                return Err(PatternError::with_value(
                    path,
                    "arrays are not allowed inside a match list",
                    item,
                ));
            }
            Value::Object(m) => {
                self.depth(path, depth)?;
                let mut it = m.iter();
                let (Some((op, arg)), None) = (it.next(), it.next()) else {
                    return Err(PatternError::with_value(
                        path,
                        "a match expression must have exactly one operator",
                        item,
                    ));
                };
                path.push(op.clone());
                let c = match op.as_str() {
                    "exists" => match arg {
                        Value::Bool(true) => Condition::Exists,
                        Value::Bool(false) => {
                            path.pop();
                            return Ok(None);
                        }
                        _ => {
                            return Err(PatternError::with_value(
                                path,
                                "exists takes true or false",
                                arg,
                            ));
                        }
                    },
                    "prefix" | "suffix" => {
                        let prefix = op == "prefix";
                        match arg {
                            Value::String(s) => {
                                if prefix {
                                    Condition::Prefix(s.clone())
                                } else {
                                    Condition::Suffix(s.clone())
                                }
                            }
                            Value::Object(inner) => {
                                let s = ignore_case_arg(inner, path, arg)?;
                                if prefix {
                                    Condition::PrefixIgnoreCase(fold_case(s))
                                } else {
                                    Condition::SuffixIgnoreCase(fold_case(s))
                                }
                            }
                            _ => {
                                return Err(PatternError::with_value(
                                    path,
                                    format!(
                                        "{op} takes a string or {{\"equals-ignore-case\": string}}"
                                    ),
                                    arg,
                                ));
                            }
                        }
                    }
                    "equals-ignore-case" => match arg {
                        Value::String(s) => Condition::EqualsIgnoreCase(fold_case(s)),
                        _ => {
                            return Err(PatternError::with_value(
                                path,
                                "equals-ignore-case takes a string",
                                arg,
                            ));
                        }
                    },
                    "wildcard" => match arg {
                        Value::String(s) => Condition::Wildcard(self.wildcard(s, path, arg)?),
                        _ => {
                            return Err(PatternError::with_value(
                                path,
                                "wildcard takes a string",
                                arg,
                            ));
                        }
                    },
                    "numeric" => Condition::Numeric(numeric(arg, path)?),
                    "cidr" => match arg {
                        Value::String(s) => Condition::Cidr(IpRange::parse(s).map_err(|e| {
                            PatternError::with_value(path, format!("invalid CIDR: {e}"), arg)
                        })?),
                        _ => {
                            return Err(PatternError::with_value(path, "cidr takes a string", arg));
                        }
                    },
                    "anything-but" => Condition::AnythingBut(self.anything_but(arg, path)?),
                    _ => {
                        return Err(PatternError::with_value(
                            path,
                            format!("unrecognized match type {op}"),
                            item,
                        ));
                    }
                };
                path.pop();
                c
            }
        };
        Ok(Some(c))
    }

    fn wildcard(&self, s: &str, path: &[String], arg: &Value) -> Result<Wildcard, PatternError> {
        let w = Wildcard::parse(s).map_err(|e| PatternError::with_value(path, e, arg))?;
        if w.stars() > self.limits.max_wildcard_stars {
            return Err(PatternError::with_value(
                path,
                format!(
                    "wildcard has more than {} '*' characters (complexity limit)",
                    self.limits.max_wildcard_stars
                ),
                arg,
            ));
        }
        Ok(w)
    }

    fn anything_but(
        &self,
        arg: &Value,
        path: &mut Vec<String>,
    ) -> Result<Vec<Condition>, PatternError> {
        match arg {
            Value::String(s) => Ok(vec![Condition::Exact(Literal::Str(s.clone()))]),
            Value::Number(_) => Ok(vec![Condition::Exact(Literal::Num(number(arg, path)?))]),
            Value::Array(items) => {
                if items.is_empty() {
                    return Err(PatternError::new(
                        path,
                        "anything-but list must not be empty",
                    ));
                }
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    path.push(format!("[{i}]"));
                    let c = match item {
                        Value::String(s) => Condition::Exact(Literal::Str(s.clone())),
                        Value::Number(_) => Condition::Exact(Literal::Num(number(item, path)?)),
                        _ => {
                            return Err(PatternError::with_value(
                                path,
                                "anything-but lists may only hold strings and numbers",
                                item,
                            ));
                        }
                    };
                    path.pop();
                    out.push(c);
                }
                Ok(out)
            }
            Value::Object(m) => {
                let mut it = m.iter();
                let (Some((op, inner)), None) = (it.next(), it.next()) else {
                    return Err(PatternError::with_value(
                        path,
                        "anything-but object must have exactly one operator",
                        arg,
                    ));
                };
                path.push(op.clone());
                let strings: Vec<&str> = match inner {
                    Value::String(s) => vec![s.as_str()],
                    Value::Array(items) if !items.is_empty() => {
                        let mut v = Vec::new();
                        for item in items {
                            match item {
                                Value::String(s) => v.push(s.as_str()),
                                _ => {
                                    return Err(PatternError::with_value(
                                        path,
                                        format!(
                                            "anything-but {op} takes a string or a list of strings"
                                        ),
                                        item,
                                    ));
                                }
                            }
                        }
                        v
                    }
                    _ => {
                        return Err(PatternError::with_value(
                            path,
                            format!(
                                "anything-but {op} takes a string or a non-empty list of strings"
                            ),
                            inner,
                        ));
                    }
                };
                let mut out = Vec::new();
                for s in strings {
                    let c = match op.as_str() {
                        "prefix" | "suffix" if s.is_empty() => {
                            return Err(PatternError::with_value(
                                path,
                                format!("anything-but {op} must not be empty"),
                                inner,
                            ));
                        }
                        "prefix" => Condition::Prefix(s.to_string()),
                        "suffix" => Condition::Suffix(s.to_string()),
                        "equals-ignore-case" => Condition::EqualsIgnoreCase(fold_case(s)),
                        "wildcard" => Condition::Wildcard(self.wildcard(s, path, inner)?),
                        _ => {
                            return Err(PatternError::with_value(
                                path,
                                format!("unsupported operator inside anything-but: {op}"),
                                arg,
                            ));
                        }
                    };
                    out.push(c);
                }
                path.pop();
                Ok(out)
            }
            _ => Err(PatternError::with_value(
                path,
                "anything-but takes a string, a number, a list, or an operator object",
                arg,
            )),
        }
    }
}

fn ignore_case_arg<'v>(
    inner: &'v Map<String, Value>,
    path: &[String],
    arg: &Value,
) -> Result<&'v str, PatternError> {
    match (inner.len(), inner.get("equals-ignore-case")) {
        (1, Some(Value::String(s))) => Ok(s),
        _ => Err(PatternError::with_value(
            path,
            "expected {\"equals-ignore-case\": string}",
            arg,
        )),
    }
}

fn number(v: &Value, path: &[String]) -> Result<f64, PatternError> {
    match v.as_f64() {
        Some(x) if x.is_finite() => Ok(canonical_number(x)),
        _ => Err(PatternError::with_value(path, "number out of range", v)),
    }
}

fn numeric(arg: &Value, path: &mut Vec<String>) -> Result<NumRange, PatternError> {
    let Value::Array(items) = arg else {
        return Err(PatternError::with_value(
            path,
            "numeric takes an array like [\">\", 0, \"<=\", 5]",
            arg,
        ));
    };
    if items.is_empty() || items.len() % 2 != 0 || items.len() > 4 {
        return Err(PatternError::with_value(
            path,
            "numeric takes one or two (operator, number) pairs",
            arg,
        ));
    }
    let mut range = NumRange { lo: None, hi: None };
    for (i, pair) in items.chunks(2).enumerate() {
        path.push(format!("[{}]", i * 2));
        let Value::String(op) = &pair[0] else {
            return Err(PatternError::with_value(
                path,
                "expected a numeric operator (=, <, <=, >, >=)",
                &pair[0],
            ));
        };
        path.pop();
        path.push(format!("[{}]", i * 2 + 1));
        if !pair[1].is_number() {
            return Err(PatternError::with_value(
                path,
                "expected a number",
                &pair[1],
            ));
        }
        let x = number(&pair[1], path)?;
        path.pop();
        path.push(format!("[{}]", i * 2));
        match op.as_str() {
            "=" if items.len() == 2 => {
                range.lo = Some((x, true));
                range.hi = Some((x, true));
            }
            ">" | ">=" if range.lo.is_none() => range.lo = Some((x, op == ">=")),
            "<" | "<=" if range.hi.is_none() => range.hi = Some((x, op == "<=")),
            _ => {
                return Err(PatternError::with_value(
                    path,
                    "invalid numeric operator here: use one lower bound (>, >=) and/or one upper bound (<, <=), or = alone",
                    &pair[0],
                ));
            }
        }
        path.pop();
    }
    if let (Some((lo, _)), Some((hi, _))) = (range.lo, range.hi)
        && items.len() == 4
        && lo >= hi
    {
        return Err(PatternError::with_value(
            path,
            "numeric lower bound must be less than upper bound",
            arg,
        ));
    }
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(p: &str) -> String {
        Pattern::parse(p).unwrap_err().to_string()
    }

    #[test]
    fn rejects_with_path_and_value() {
        let e = err(r#"{"detail":{"state":[{"numeric":[">",0,">",5]}]}}"#);
        assert!(e.contains("detail.state[0].numeric[2]"), "{e}");
        let e = err(r#"{"a":[]}"#);
        assert!(e.contains("empty arrays") && e.contains("\"a\""), "{e}");
        let e = err(r#"{"a":"x"}"#);
        assert!(e.contains("offending value: \"x\""), "{e}");
        let e = err(r#"{"a":[{"wildcard":"a**"}]}"#);
        assert!(e.contains("consecutive"), "{e}");
        assert!(err(r#"{"a":[{"prefix":"x","suffix":"y"}]}"#).contains("exactly one operator"));
        assert!(err(r#"{"a":[{"foo":1}]}"#).contains("unrecognized match type foo"));
        assert!(err("[]").contains("must be a JSON object"));
        assert!(err("{}").contains("empty objects"));
        assert!(err(r#"{"a":[{"anything-but":{"prefix":""}}]}"#).contains("must not be empty"));
        assert!(
            err(r#"{"a":[{"anything-but":[null]}]}"#).contains("only hold strings and numbers")
        );
        assert!(err(r#"{"a":[{"numeric":[">",5,"<",1]}]}"#).contains("less than"));
        assert!(err(r#"{"a":[{"cidr":"10.0.0.0/40"}]}"#).contains("CIDR"));
        assert!(err(r#"{"a":[{"exists":"yes"}]}"#).contains("exists takes"));
    }

    #[test]
    fn or_expansion_and_limit() {
        let p = Pattern::parse(
            r#"{"a":["1"],"$or":[{"b":["2"]},{"c":["3"],"$or":[{"d":["4"]},{"e":["5"]}]}]}"#,
        )
        .unwrap();
        assert_eq!(p.conjunctions.len(), 3);
        // 11 * 10 * 10 = 1100 combinations > 1000
        let alt = |n: usize, f: &str| {
            let v: Vec<String> = (0..n).map(|i| format!("{{\"{f}{i}\":[\"x\"]}}")).collect();
            format!("[{}]", v.join(","))
        };
        let text = format!(
            "{{\"$or\":{},\"x\":{{\"$or\":{}}},\"y\":{{\"$or\":{}}}}}",
            alt(11, "a"),
            alt(10, "b"),
            alt(10, "c")
        );
        let limits = Limits {
            max_pattern_chars: 10_000,
            ..Limits::default()
        };
        let e = Pattern::parse_with(&text, &limits).unwrap_err().to_string();
        assert!(e.contains("1100 combinations"), "{e}");
        let text = text.replace(&alt(11, "a"), &alt(10, "a"));
        assert_eq!(
            Pattern::parse_with(&text, &limits)
                .unwrap()
                .conjunctions
                .len(),
            1000
        );
    }

    #[test]
    fn or_with_operators_is_a_field() {
        let p = Pattern::parse(r#"{"$or":[{"prefix":"a"},{"suffix":"b"}]}"#).unwrap();
        assert_eq!(p.conjunctions.len(), 1);
        assert_eq!(p.conjunctions[0][0].path, vec!["$or".to_string()]);
    }

    #[test]
    fn size_and_depth_limits() {
        let big = format!("{{\"a\":[\"{}\"]}}", "x".repeat(3000));
        assert!(
            Pattern::parse(&big)
                .unwrap_err()
                .to_string()
                .contains("characters")
        );
        let mut deep = String::new();
        for _ in 0..70 {
            deep.push_str("{\"a\":");
        }
        deep.push_str("[1]");
        for _ in 0..70 {
            deep.push('}');
        }
        assert!(
            Pattern::parse(&deep)
                .unwrap_err()
                .to_string()
                .contains("deeper")
        );
    }
}
