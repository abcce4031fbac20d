//! Input validation against a compiled model, with AWS's error texts.
//!
//! Two error classes, in AWS's order (the whole input is deserialized before any constraint is
//! checked):
//!
//! - **`SerializationException`**: a value has the wrong JSON type for its shape, a number is
//!   out of its type's range or not integral for an integer shape, a blob is not base64, a
//!   timestamp is not an epoch-seconds number in years 1..=9999, or the input nests more than
//!   [`MAX_DEPTH`] levels. The first such problem aborts validation.
//! - **`ValidationException`**: `required`, `min`/`max`, `pattern` and `enum`, collected over the
//!   whole input and reported as `N validation error(s) detected: <e1>; <e2>` with at most
//!   [`MAX_REPORTED`] entries, each `Value '<v>' at '<path>' failed to satisfy constraint:
//!   Member must ...`.
//!
//! Semantics: unknown members are ignored (as AWS does); JSON `null` is the same as absent;
//! `null` list elements and map values are skipped; string lengths count Unicode scalar values,
//! blob lengths count decoded bytes, list and map lengths count entries. Paths use the
//! lowerCamel member names joined by `.`, list elements as `<list>.<n>.member` (1-based) and map
//! values as `<map>.<key>.member`. Map keys and map values are checked as AWS does: once per map,
//! as `Map keys must satisfy constraint: [<all key constraints>]` (likewise `Map value`).
//!
//! **Redaction**: a value is never echoed when its shape or member is `sensitive`, when it is
//! inside a sensitive shape or member, when it is a blob, or when it is a structure or a
//! list/map containing anything but plain scalars; such entries read `Value at '<path>' ...`
//! (AWS's own form for sensitive members). Type errors never echo values.
//! Structure `union` constraints (exactly one member set) are not enforced.

use serde_json::{Map, Number, Value};
use sluice_core::AwsError;

use crate::model::{Kind, Len, Member, NumKind, NumRange, Operation, Shape, ShapeId};

/// Maximum nesting depth of a request body (objects and arrays); deeper is a
/// `SerializationException`.
pub const MAX_DEPTH: usize = 64;

/// Maximum number of constraint violations listed in one `ValidationException`.
pub const MAX_REPORTED: usize = 10;

/// The earliest and latest accepted timestamps (0001-01-01T00:00:00Z, 9999-12-31T23:59:59Z).
const MIN_EPOCH: f64 = -62_135_596_800.0;
const MAX_EPOCH: f64 = 253_402_300_799.0;

pub(crate) fn validate(op: &Operation, input: &Value) -> Result<(), AwsError> {
    let obj = match input {
        Value::Object(o) => o,
        other => return Err(mismatch(other, "a Structure")),
    };
    let Some(root) = op.input() else {
        return Ok(());
    };
    let shapes: &[Shape] = &op.shapes;
    let mut w = Walker {
        shapes,
        path: Vec::new(),
        errors: Vec::new(),
    };
    match &shapes[root as usize].kind {
        Kind::Structure { members } => {
            w.structure(members, obj, 1, shapes[root as usize].sensitive)?
        }
        // Input shapes are always structures; anything else is validated generically.
        _ => {
            w.walk(root, input, 1, false, true)?;
        }
    }
    if w.errors.is_empty() {
        return Ok(());
    }
    let n = w.errors.len();
    let head = if n == 1 {
        "1 validation error detected: ".to_owned()
    } else {
        format!("{n} validation errors detected: ")
    };
    Err(AwsError::validation(head + &w.errors.join("; ")))
}

#[derive(Clone, Copy)]
enum Seg<'a> {
    Member(&'a str),
    Index(usize),
    Key(&'a str),
}

struct Walker<'a> {
    shapes: &'a [Shape],
    path: Vec<Seg<'a>>,
    errors: Vec<String>,
}

/// The JSON token names AWS uses in conversion errors.
fn token(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "STRING_VALUE",
        Value::Number(_) => "NUMBER_VALUE",
        Value::Bool(_) => "BOOLEAN_VALUE",
        Value::Null => "NULL_VALUE",
        Value::Array(_) => "START_LIST",
        Value::Object(_) => "START_STRUCTURE",
    }
}

fn mismatch(v: &Value, expected: &str) -> AwsError {
    match v {
        Value::Object(_) => {
            AwsError::serialization("Start of structure or map found where not expected.")
        }
        Value::Array(_) => AwsError::serialization("Start of list found where not expected."),
        other => AwsError::serialization(format!(
            "{} can not be converted to {expected}",
            token(other)
        )),
    }
}

fn too_deep() -> AwsError {
    AwsError::serialization(format!(
        "Request body is nested too deeply (more than {MAX_DEPTH} levels)."
    ))
}

/// Decoded length of a base64 (standard alphabet) string, padded or not; `None` if invalid.
/// Like Java's decoder it does not insist that unused trailing bits are zero.
pub(crate) fn base64_decoded_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let data = b
        .strip_suffix(b"==")
        .or_else(|| b.strip_suffix(b"="))
        .unwrap_or(b);
    let padded = data.len() != b.len();
    if !data
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
    {
        return None;
    }
    if padded && !b.len().is_multiple_of(4) {
        return None;
    }
    let rem = data.len() % 4;
    if rem == 1 {
        return None;
    }
    Some(data.len() / 4 * 3 + rem.saturating_sub(1))
}

fn integral(n: &Number, lo: i64, hi: i64) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return (lo..=hi).contains(&i).then_some(i);
    }
    if n.is_u64() {
        return None;
    }
    let f = n.as_f64()?;
    (f.fract() == 0.0 && f >= lo as f64 && f <= hi as f64).then_some(f as i64)
}

fn fmt_bound(kind: NumKind, v: f64) -> String {
    match kind {
        NumKind::Integer | NumKind::Long => format!("{}", v as i64),
        NumKind::Float | NumKind::Double => {
            if v.fract() == 0.0 && v.abs() < 1e15 {
                format!("{v:.1}")
            } else {
                format!("{v}")
            }
        }
    }
}

fn len_constraints(len: Len, out: &mut Vec<String>) {
    if let Some(max) = len.max {
        out.push(format!(
            "Member must have length less than or equal to {max}"
        ));
    }
    if let Some(min) = len.min {
        out.push(format!(
            "Member must have length greater than or equal to {min}"
        ));
    }
}

fn range_constraints(kind: NumKind, r: NumRange, out: &mut Vec<String>) {
    if let Some(max) = r.max {
        out.push(format!(
            "Member must have value less than or equal to {}",
            fmt_bound(kind, max)
        ));
    }
    if let Some(min) = r.min {
        out.push(format!(
            "Member must have value greater than or equal to {}",
            fmt_bound(kind, min)
        ));
    }
}

fn enum_constraint(values: &[Box<str>]) -> String {
    format!(
        "Member must satisfy enum value set: [{}]",
        values
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<&str>>()
            .join(", ")
    )
}

/// Every constraint of a shape, in AWS's order (used for map keys and values).
fn all_constraints(shape: &Shape) -> Vec<String> {
    let mut out = Vec::new();
    match &shape.kind {
        Kind::String {
            len,
            pattern,
            enumeration,
        } => {
            len_constraints(*len, &mut out);
            if let Some(p) = pattern {
                out.push(format!(
                    "Member must satisfy regular expression pattern: {}",
                    p.source
                ));
            }
            if let Some(e) = enumeration {
                out.push(enum_constraint(e));
            }
        }
        Kind::Blob { len } | Kind::List { len, .. } | Kind::Map { len, .. } => {
            len_constraints(*len, &mut out)
        }
        Kind::Number { kind, range } => range_constraints(*kind, *range, &mut out),
        Kind::Structure { .. } | Kind::Boolean | Kind::Timestamp => {}
    }
    out
}

/// Checks a length against its bounds, pushing violated constraints.
fn check_len(n: usize, len: Len, out: &mut Vec<String>) {
    if let Some(max) = len.max
        && n as u64 > max
    {
        out.push(format!(
            "Member must have length less than or equal to {max}"
        ));
    }
    if let Some(min) = len.min
        && (n as u64) < min
    {
        out.push(format!(
            "Member must have length greater than or equal to {min}"
        ));
    }
}

/// The number of characters of `s` when a bound needs it (cheap bounds first).
fn char_len_needed(s: &str, len: Len) -> Option<usize> {
    let bytes = s.len() as u64;
    let max_ok = len.max.is_none_or(|m| bytes <= m);
    // At most four bytes per character.
    let min_ok = len.min.is_none_or(|m| bytes / 4 >= m);
    if max_ok && min_ok {
        None
    } else {
        Some(s.chars().count())
    }
}

impl<'a> Walker<'a> {
    fn path_string(&self) -> String {
        let mut s = String::new();
        for seg in &self.path {
            if !s.is_empty() {
                s.push('.');
            }
            match seg {
                Seg::Member(m) => s.push_str(m),
                Seg::Index(i) => {
                    s.push_str(&(i + 1).to_string());
                    s.push_str(".member");
                }
                Seg::Key(k) => {
                    s.push_str(k);
                    s.push_str(".member");
                }
            }
        }
        s
    }

    fn report(&mut self, rendered: Option<String>, constraint: &str) {
        if self.errors.len() >= MAX_REPORTED {
            return;
        }
        let path = self.path_string();
        let entry = match rendered {
            Some(v) => {
                format!("Value '{v}' at '{path}' failed to satisfy constraint: {constraint}")
            }
            None => format!("Value at '{path}' failed to satisfy constraint: {constraint}"),
        };
        self.errors.push(entry);
    }

    fn report_null(&mut self) {
        if self.errors.len() >= MAX_REPORTED {
            return;
        }
        let path = self.path_string();
        self.errors.push(format!(
            "Value null at '{path}' failed to satisfy constraint: Member must not be null"
        ));
    }

    /// Whether a value of this shape may be echoed in messages (when not sensitive).
    fn is_plain_scalar(&self, id: ShapeId) -> bool {
        let s = &self.shapes[id as usize];
        !s.sensitive
            && matches!(
                s.kind,
                Kind::String { .. } | Kind::Number { .. } | Kind::Boolean | Kind::Timestamp
            )
    }

    fn render_scalar(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Null => "null".into(),
            other => other.to_string(),
        }
    }

    /// The value as AWS (Java `toString`) would show it, or `None` to redact it.
    fn render(&self, id: ShapeId, v: &Value, sensitive: bool) -> Option<String> {
        let shape = &self.shapes[id as usize];
        if sensitive || shape.sensitive {
            return None;
        }
        match (&shape.kind, v) {
            (Kind::String { .. } | Kind::Number { .. } | Kind::Boolean | Kind::Timestamp, v) => {
                Some(Self::render_scalar(v))
            }
            (Kind::List { member, .. }, Value::Array(a)) if self.is_plain_scalar(*member) => {
                let items: Vec<String> = a.iter().map(Self::render_scalar).collect();
                Some(format!("[{}]", items.join(", ")))
            }
            (Kind::Map { key, value, .. }, Value::Object(o))
                if self.is_plain_scalar(*key) && self.is_plain_scalar(*value) =>
            {
                let items: Vec<String> = o
                    .iter()
                    .map(|(k, v)| format!("{k}={}", Self::render_scalar(v)))
                    .collect();
                Some(format!("{{{}}}", items.join(", ")))
            }
            _ => None,
        }
    }

    fn structure(
        &mut self,
        members: &'a [Member],
        obj: &'a Map<String, Value>,
        depth: usize,
        sensitive: bool,
    ) -> Result<(), AwsError> {
        for m in members {
            self.path.push(Seg::Member(&m.path));
            match obj.get(m.name.as_ref()) {
                None | Some(Value::Null) => {
                    if m.required {
                        self.report_null();
                    }
                }
                Some(v) => {
                    self.walk(m.shape, v, depth + 1, sensitive || m.sensitive, true)?;
                }
            }
            self.path.pop();
        }
        Ok(())
    }

    /// Type-checks `v` against shape `id`, validates its children, and checks its own
    /// constraints: reported individually when `report_own`, else only returned as "violated".
    fn walk(
        &mut self,
        id: ShapeId,
        v: &'a Value,
        depth: usize,
        sensitive: bool,
        report_own: bool,
    ) -> Result<bool, AwsError> {
        if depth > MAX_DEPTH {
            return Err(too_deep());
        }
        let shapes = self.shapes;
        let shape = &shapes[id as usize];
        let sensitive = sensitive || shape.sensitive;
        let mut violated: Vec<String> = Vec::new();
        match &shape.kind {
            Kind::Structure { members } => {
                let Value::Object(obj) = v else {
                    return Err(mismatch(v, "a Structure"));
                };
                self.structure(members, obj, depth, sensitive)?;
            }
            Kind::List { member, len } => {
                let Value::Array(items) = v else {
                    return Err(mismatch(v, "a List"));
                };
                for (i, item) in items.iter().enumerate() {
                    if item.is_null() {
                        continue;
                    }
                    self.path.push(Seg::Index(i));
                    let r = self.walk(*member, item, depth + 1, sensitive, true);
                    self.path.pop();
                    r?;
                }
                check_len(items.len(), *len, &mut violated);
            }
            Kind::Map { key, value, len } => {
                let Value::Object(obj) = v else {
                    return Err(mismatch(v, "a Map"));
                };
                let key_shape = &shapes[*key as usize];
                let mut bad_key = false;
                let mut bad_value = false;
                for (k, val) in obj {
                    if !bad_key && !self.scalar_string_ok(key_shape, k) {
                        bad_key = true;
                    }
                    if val.is_null() {
                        continue;
                    }
                    self.path.push(Seg::Key(k));
                    let r = self.walk(*value, val, depth + 1, sensitive, false);
                    self.path.pop();
                    bad_value |= r?;
                }
                check_len(obj.len(), *len, &mut violated);
                if report_own {
                    let rendered = self.render(id, v, sensitive);
                    if bad_key {
                        let c = format!(
                            "Map keys must satisfy constraint: [{}]",
                            all_constraints(key_shape).join(", ")
                        );
                        self.report(rendered.clone(), &c);
                    }
                    if bad_value {
                        let c = format!(
                            "Map value must satisfy constraint: [{}]",
                            all_constraints(&shapes[*value as usize]).join(", ")
                        );
                        self.report(rendered.clone(), &c);
                    }
                } else if bad_key || bad_value {
                    // A map nested directly in a map: fold into the outer "Map value" entry.
                    violated.push(String::new());
                }
            }
            Kind::String {
                len,
                pattern,
                enumeration,
            } => {
                let Value::String(s) = v else {
                    return Err(mismatch(v, "a String"));
                };
                if let Some(n) = char_len_needed(s, *len) {
                    check_len(n, *len, &mut violated);
                }
                if let Some(p) = pattern
                    && !p.matches(s)
                {
                    violated.push(format!(
                        "Member must satisfy regular expression pattern: {}",
                        p.source
                    ));
                }
                if let Some(e) = enumeration
                    && !e.iter().any(|x| x.as_ref() == s)
                {
                    violated.push(enum_constraint(e));
                }
            }
            Kind::Blob { len } => {
                let Value::String(s) = v else {
                    return Err(mismatch(v, "a Blob"));
                };
                let n = base64_decoded_len(s).ok_or_else(|| {
                    AwsError::serialization(
                        "STRING_VALUE can not be converted to a Blob: it is not valid base64",
                    )
                })?;
                check_len(n, *len, &mut violated);
            }
            Kind::Number { kind, range } => {
                let Value::Number(n) = v else {
                    return Err(mismatch(
                        v,
                        match kind {
                            NumKind::Integer => "an Integer",
                            NumKind::Long => "a Long",
                            NumKind::Float => "a Float",
                            NumKind::Double => "a Double",
                        },
                    ));
                };
                let x = match kind {
                    NumKind::Integer => integral(n, i32::MIN.into(), i32::MAX.into())
                        .map(|i| i as f64)
                        .ok_or_else(|| {
                            AwsError::serialization(
                                "NUMBER_VALUE can not be converted to an Integer",
                            )
                        })?,
                    NumKind::Long => integral(n, i64::MIN, i64::MAX)
                        .map(|i| i as f64)
                        .ok_or_else(|| {
                            AwsError::serialization("NUMBER_VALUE can not be converted to a Long")
                        })?,
                    NumKind::Float => n
                        .as_f64()
                        .filter(|f| f.is_finite() && f.abs() <= f64::from(f32::MAX))
                        .ok_or_else(|| {
                            AwsError::serialization("NUMBER_VALUE can not be converted to a Float")
                        })?,
                    NumKind::Double => n.as_f64().filter(|f| f.is_finite()).ok_or_else(|| {
                        AwsError::serialization("NUMBER_VALUE can not be converted to a Double")
                    })?,
                };
                if let Some(max) = range.max
                    && x > max
                {
                    violated.push(format!(
                        "Member must have value less than or equal to {}",
                        fmt_bound(*kind, max)
                    ));
                }
                if let Some(min) = range.min
                    && x < min
                {
                    violated.push(format!(
                        "Member must have value greater than or equal to {}",
                        fmt_bound(*kind, min)
                    ));
                }
            }
            Kind::Boolean => {
                if !v.is_boolean() {
                    return Err(mismatch(v, "a Boolean"));
                }
            }
            Kind::Timestamp => {
                let ok = v
                    .as_number()
                    .and_then(Number::as_f64)
                    .is_some_and(|f| (MIN_EPOCH..=MAX_EPOCH).contains(&f));
                if !ok {
                    return Err(match v {
                        Value::Number(_) => AwsError::serialization(
                            "NUMBER_VALUE can not be converted to a Timestamp: out of range",
                        ),
                        other => mismatch(other, "a Timestamp"),
                    });
                }
            }
        }
        if violated.is_empty() {
            return Ok(false);
        }
        if report_own {
            let rendered = self.render(id, v, sensitive);
            for c in &violated {
                self.report(rendered.clone(), c);
            }
        }
        Ok(true)
    }

    /// Whether a map key satisfies its (string) key shape.
    fn scalar_string_ok(&self, key_shape: &Shape, k: &str) -> bool {
        match &key_shape.kind {
            Kind::String {
                len,
                pattern,
                enumeration,
            } => {
                let mut v = Vec::new();
                if let Some(n) = char_len_needed(k, *len) {
                    check_len(n, *len, &mut v);
                }
                v.is_empty()
                    && pattern.as_ref().is_none_or(|p| p.matches(k))
                    && enumeration
                        .as_ref()
                        .is_none_or(|e| e.iter().any(|x| x.as_ref() == k))
            }
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_lengths() {
        assert_eq!(base64_decoded_len(""), Some(0));
        assert_eq!(base64_decoded_len("QQ=="), Some(1));
        assert_eq!(base64_decoded_len("QQ"), Some(1));
        assert_eq!(base64_decoded_len("QUI="), Some(2));
        assert_eq!(base64_decoded_len("QUJD"), Some(3));
        assert_eq!(base64_decoded_len("QUJDRA=="), Some(4));
        assert_eq!(base64_decoded_len("Q"), None);
        assert_eq!(base64_decoded_len("QQ="), None);
        assert_eq!(base64_decoded_len("Q==="), None);
        assert_eq!(base64_decoded_len("QU-D"), None);
        assert_eq!(base64_decoded_len("QU D"), None);
        assert_eq!(base64_decoded_len("=="), None);
    }

    #[test]
    fn integral_ranges() {
        let n = |s: &str| serde_json::from_str::<Number>(s).unwrap();
        assert_eq!(integral(&n("5"), 0, 10), Some(5));
        assert_eq!(integral(&n("5.0"), 0, 10), Some(5));
        assert_eq!(integral(&n("5.5"), 0, 10), None);
        assert_eq!(integral(&n("11"), 0, 10), None);
        assert_eq!(
            integral(&n("18446744073709551615"), i64::MIN, i64::MAX),
            None
        );
        assert_eq!(integral(&n("1e300"), i64::MIN, i64::MAX), None);
    }

    #[test]
    fn bounds_format_like_java() {
        assert_eq!(fmt_bound(NumKind::Integer, 1.0), "1");
        assert_eq!(fmt_bound(NumKind::Double, 1.0), "1.0");
        assert_eq!(fmt_bound(NumKind::Double, 0.5), "0.5");
    }
}
