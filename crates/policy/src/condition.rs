//! Condition operators: compilation of policy values and evaluation against request values.
//!
//! Design constraints:
//! - Every policy value is parsed once (numbers, dates, CIDRs, base64, patterns); request values
//!   are parsed at evaluation time (they change on every request).
//! - Semantics (AWS IAM "condition operators" and "multivalued context keys"):
//!   - several values for one key are OR-ed for positive operators; negated operators are true
//!     when the request value matches none of them;
//!   - a key absent from the request makes a positive operator false and a negated operator
//!     true; `...IfExists` makes an absent key true; `Null` tests presence;
//!   - `ForAnyValue:` is true when at least one request value satisfies the operator (false for
//!     an absent or empty key); `ForAllValues:` is true when every request value satisfies it
//!     (true for an absent or empty key);
//!   - without a set prefix, a multi-valued request key behaves like `ForAnyValue` for positive
//!     operators and like the negation of that for negated operators.
//! - Condition key names are compared case-insensitively (stored lowercased); values follow the
//!   operator (`StringEquals` is case-sensitive, `StringEqualsIgnoreCase` is not, `Bool` is not).

use crate::arn::{self, ArnPattern};
use crate::context::{KeyId, Values};
use crate::pattern::{Pattern, PatternOpts};
use serde::Serialize;
use std::net::IpAddr;

/// The comparison family of an operator (without negation, set prefix or `IfExists`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BaseOp {
    /// StringEquals / StringNotEquals.
    StringEquals,
    /// StringEqualsIgnoreCase / StringNotEqualsIgnoreCase.
    StringEqualsIgnoreCase,
    /// StringLike / StringNotLike.
    StringLike,
    /// NumericEquals / NumericNotEquals.
    NumericEquals,
    /// NumericLessThan.
    NumericLessThan,
    /// NumericLessThanEquals.
    NumericLessThanEquals,
    /// NumericGreaterThan.
    NumericGreaterThan,
    /// NumericGreaterThanEquals.
    NumericGreaterThanEquals,
    /// DateEquals / DateNotEquals.
    DateEquals,
    /// DateLessThan.
    DateLessThan,
    /// DateLessThanEquals.
    DateLessThanEquals,
    /// DateGreaterThan.
    DateGreaterThan,
    /// DateGreaterThanEquals.
    DateGreaterThanEquals,
    /// Bool.
    Bool,
    /// BinaryEquals.
    BinaryEquals,
    /// IpAddress / NotIpAddress.
    IpAddress,
    /// ArnEquals / ArnLike / ArnNotEquals / ArnNotLike (identical matching).
    ArnLike,
    /// Null.
    Null,
}

/// How request values are quantified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SetMode {
    /// No prefix.
    Single,
    /// `ForAnyValue:`.
    ForAnyValue,
    /// `ForAllValues:`.
    ForAllValues,
}

/// A parsed operator name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Operator {
    /// The comparison.
    pub base: BaseOp,
    /// `StringNotEquals`, `NotIpAddress`, ...
    pub negated: bool,
    /// The set prefix.
    pub set: SetMode,
    /// The `IfExists` suffix.
    pub if_exists: bool,
}

impl Operator {
    /// Parses an operator name such as `ForAllValues:StringLikeIfExists` (case-insensitive).
    pub fn parse(name: &str) -> Result<Operator, String> {
        let lower = name.to_ascii_lowercase();
        let (set, rest) = if let Some(r) = lower.strip_prefix("foranyvalue:") {
            (SetMode::ForAnyValue, r)
        } else if let Some(r) = lower.strip_prefix("forallvalues:") {
            (SetMode::ForAllValues, r)
        } else {
            (SetMode::Single, lower.as_str())
        };
        let (rest, if_exists) = match rest.strip_suffix("ifexists") {
            Some(r) => (r, true),
            None => (rest, false),
        };
        use BaseOp::*;
        let (base, negated) = match rest {
            "stringequals" => (StringEquals, false),
            "stringnotequals" => (StringEquals, true),
            "stringequalsignorecase" => (StringEqualsIgnoreCase, false),
            "stringnotequalsignorecase" => (StringEqualsIgnoreCase, true),
            "stringlike" => (StringLike, false),
            "stringnotlike" => (StringLike, true),
            "numericequals" => (NumericEquals, false),
            "numericnotequals" => (NumericEquals, true),
            "numericlessthan" => (NumericLessThan, false),
            "numericlessthanequals" => (NumericLessThanEquals, false),
            "numericgreaterthan" => (NumericGreaterThan, false),
            "numericgreaterthanequals" => (NumericGreaterThanEquals, false),
            "dateequals" => (DateEquals, false),
            "datenotequals" => (DateEquals, true),
            "datelessthan" => (DateLessThan, false),
            "datelessthanequals" => (DateLessThanEquals, false),
            "dategreaterthan" => (DateGreaterThan, false),
            "dategreaterthanequals" => (DateGreaterThanEquals, false),
            "bool" => (Bool, false),
            "binaryequals" => (BinaryEquals, false),
            "ipaddress" => (IpAddress, false),
            "notipaddress" => (IpAddress, true),
            "arnequals" | "arnlike" => (ArnLike, false),
            "arnnotequals" | "arnnotlike" => (ArnLike, true),
            "null" => (Null, false),
            _ => {
                return Err(format!(
                    "{name:?} is not a condition operator (expected e.g. StringEquals, StringLike, NumericLessThan, \
                     DateGreaterThan, Bool, BinaryEquals, IpAddress, ArnLike, Null, optionally with the IfExists \
                     suffix and a ForAnyValue: or ForAllValues: prefix)"
                ));
            }
        };
        if base == Null && if_exists {
            return Err(format!(
                "{name:?}: the Null operator cannot take the IfExists suffix"
            ));
        }
        if base == Null && set != SetMode::Single {
            return Err(format!(
                "{name:?}: the Null operator cannot take a ForAnyValue:/ForAllValues: prefix"
            ));
        }
        Ok(Operator {
            base,
            negated,
            set,
            if_exists,
        })
    }
}

/// A CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    v6: bool,
    bits: u128,
    prefix: u8,
}

impl Cidr {
    pub(crate) fn parse(s: &str) -> Option<Cidr> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let ip: IpAddr = ip.trim().parse().ok()?;
        let (v6, bits, max) = ip_bits(ip);
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return None;
        }
        Some(Cidr {
            v6,
            bits: bits & mask(prefix, max),
            prefix,
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let (v6, bits, max) = ip_bits(ip);
        v6 == self.v6 && bits & mask(self.prefix, max) == self.bits
    }
}

fn ip_bits(ip: IpAddr) -> (bool, u128, u8) {
    match ip {
        IpAddr::V4(a) => (false, u32::from(a) as u128, 32),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => (false, u32::from(v4) as u128, 32),
            None => (true, u128::from(a), 128),
        },
    }
}

fn mask(prefix: u8, max: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        let all: u128 = if max == 128 {
            u128::MAX
        } else {
            (1u128 << max) - 1
        };
        all & !((1u128 << (max - prefix)) - 1)
    }
}

/// Parses a date as AWS accepts it: ISO 8601 (date, or date and time with an offset or `Z`) or
/// epoch seconds. Returns Unix nanoseconds.
pub(crate) fn parse_date(s: &str) -> Option<i128> {
    use time::format_description::well_known::{Iso8601, Rfc3339};
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
        || (s.starts_with('-') && s.len() > 1 && s[1..].bytes().all(|b| b.is_ascii_digit()))
    {
        return s.parse::<i64>().ok().map(|v| v as i128 * 1_000_000_000);
    }
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t.unix_timestamp_nanos());
    }
    if let Ok(t) = time::OffsetDateTime::parse(s, &Iso8601::DEFAULT) {
        return Some(t.unix_timestamp_nanos());
    }
    if let Ok(t) = time::PrimitiveDateTime::parse(s, &Iso8601::DEFAULT) {
        return Some(t.assume_utc().unix_timestamp_nanos());
    }
    if let Ok(d) = time::Date::parse(s, &Iso8601::DEFAULT) {
        return Some(d.midnight().assume_utc().unix_timestamp_nanos());
    }
    None
}

/// Decodes standard or URL-safe base64, padding optional.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut n = 0;
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32;
        acc = (acc << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((acc >> n) as u8);
            acc &= (1 << n) - 1;
        }
    }
    (n < 6).then_some(out)
}

/// One compiled policy value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CValue {
    Str(Pattern),
    Num(f64),
    Date(i128),
    Bool(bool),
    Bin(Vec<u8>),
    Ip(Cidr),
    Arn(ArnPattern),
    Null(bool),
}

/// A compiled condition: one operator, one key, its values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Condition {
    pub op: Operator,
    /// Operator as written.
    pub op_name: Box<str>,
    /// Key as written.
    pub key_name: Box<str>,
    /// Key compiled for lookup (lowercased, hashed).
    pub key: KeyId,
    pub values: Vec<CValue>,
    /// Values as written.
    pub raw: Vec<String>,
}

impl Condition {
    /// Compiles one `operator: { key: values }` entry.
    pub(crate) fn compile(
        op_name: &str,
        op: Operator,
        key_name: &str,
        raw: Vec<String>,
        vars: bool,
    ) -> Result<Condition, String> {
        let mut values = Vec::with_capacity(raw.len());
        for r in &raw {
            values.push(compile_value(op.base, r, vars)?);
        }
        Ok(Condition {
            op,
            op_name: op_name.into(),
            key_name: key_name.into(),
            key: KeyId::new(key_name),
            values,
            raw,
        })
    }

    /// Evaluates the condition; `get` looks up a lowercased key.
    #[inline]
    pub(crate) fn eval<'v>(
        &self,
        vals: Option<Values<'v>>,
        resolve: &dyn Fn(&KeyId) -> Option<&'v str>,
    ) -> bool {
        let present = vals.filter(|v| !v.is_empty());
        if self.op.base == BaseOp::Null {
            let absent = present.is_none();
            return self
                .values
                .iter()
                .any(|v| matches!(v, CValue::Null(b) if *b == absent));
        }
        let Some(vals) = present else {
            return match self.op.set {
                SetMode::ForAllValues => true,
                SetMode::ForAnyValue => self.op.if_exists,
                SetMode::Single => self.op.if_exists || self.op.negated,
            };
        };
        let m = |v: &str| {
            self.values
                .iter()
                .any(|p| value_matches(self.op.base, p, v, resolve))
        };
        let neg = self.op.negated;
        // One request value (the common case): every set mode reduces to "matches != negated".
        if let Values::One(v) = vals {
            return m(v) != neg;
        }
        match self.op.set {
            SetMode::Single => {
                let any = vals.iter().any(m);
                if neg { !any } else { any }
            }
            SetMode::ForAnyValue => vals.iter().any(|v| m(v) != neg),
            SetMode::ForAllValues => vals.iter().all(|v| m(v) != neg),
        }
    }
}

fn compile_value(base: BaseOp, raw: &str, vars: bool) -> Result<CValue, String> {
    use BaseOp::*;
    Ok(match base {
        StringEquals => CValue::Str(str_pat(raw, false, false, vars)?),
        StringEqualsIgnoreCase => CValue::Str(str_pat(raw, false, true, vars)?),
        StringLike => CValue::Str(str_pat(raw, true, false, vars)?),
        NumericEquals
        | NumericLessThan
        | NumericLessThanEquals
        | NumericGreaterThan
        | NumericGreaterThanEquals => {
            CValue::Num(parse_num(raw).ok_or_else(|| format!("{raw:?} is not a number"))?)
        }
        DateEquals
        | DateLessThan
        | DateLessThanEquals
        | DateGreaterThan
        | DateGreaterThanEquals => CValue::Date(parse_date(raw).ok_or_else(|| {
            format!(
                "{raw:?} is not a date (ISO 8601 such as 2026-01-31T12:00:00Z, or epoch seconds)"
            )
        })?),
        Bool => CValue::Bool(
            parse_bool(raw).ok_or_else(|| format!("{raw:?} is not a boolean (true or false)"))?,
        ),
        BinaryEquals => {
            CValue::Bin(base64_decode(raw).ok_or_else(|| format!("{raw:?} is not base64"))?)
        }
        IpAddress => CValue::Ip(Cidr::parse(raw).ok_or_else(|| {
            format!("{raw:?} is not an IP address or CIDR block (e.g. 203.0.113.0/24)")
        })?),
        ArnLike => CValue::Arn(ArnPattern::compile(raw, vars)?),
        Null => CValue::Null(
            parse_bool(raw).ok_or_else(|| format!("{raw:?}: Null takes true or false"))?,
        ),
    })
}

fn str_pat(raw: &str, glob: bool, ci: bool, vars: bool) -> Result<Pattern, String> {
    Pattern::compile(raw, PatternOpts { glob, ci, vars }).map_err(|e| e.0)
}

fn parse_num(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("nan") || t.to_ascii_lowercase().contains("inf") {
        return None;
    }
    t.parse::<f64>().ok()
}

fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

#[inline]
fn value_matches<'v>(
    base: BaseOp,
    p: &CValue,
    v: &str,
    resolve: &dyn Fn(&KeyId) -> Option<&'v str>,
) -> bool {
    use BaseOp::*;
    match (base, p) {
        (_, CValue::Str(pat)) => pat.matches(v, resolve),
        (_, CValue::Num(n)) => match parse_num(v) {
            Some(x) => match base {
                NumericEquals => x == *n,
                NumericLessThan => x < *n,
                NumericLessThanEquals => x <= *n,
                NumericGreaterThan => x > *n,
                NumericGreaterThanEquals => x >= *n,
                _ => false,
            },
            None => false,
        },
        (_, CValue::Date(d)) => match parse_date(v) {
            Some(x) => match base {
                DateEquals => x == *d,
                DateLessThan => x < *d,
                DateLessThanEquals => x <= *d,
                DateGreaterThan => x > *d,
                DateGreaterThanEquals => x >= *d,
                _ => false,
            },
            None => false,
        },
        (_, CValue::Bool(b)) => parse_bool(v) == Some(*b),
        (_, CValue::Bin(bytes)) => base64_decode(v).is_some_and(|x| x == *bytes),
        (_, CValue::Ip(c)) => v.trim().parse::<IpAddr>().is_ok_and(|ip| c.contains(ip)),
        (_, CValue::Arn(a)) => a.matches_split(v, arn::split(v).as_ref(), resolve),
        (_, CValue::Null(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_parse() {
        let o = Operator::parse("ForAllValues:StringNotLikeIfExists").unwrap();
        assert_eq!(
            o,
            Operator {
                base: BaseOp::StringLike,
                negated: true,
                set: SetMode::ForAllValues,
                if_exists: true
            }
        );
        assert!(Operator::parse("StringEqualz").is_err());
        assert!(Operator::parse("NullIfExists").is_err());
        assert_eq!(Operator::parse("ArnEquals").unwrap().base, BaseOp::ArnLike);
    }

    #[test]
    fn cidr() {
        let c = Cidr::parse("203.0.113.0/24").unwrap();
        assert!(c.contains("203.0.113.9".parse().unwrap()));
        assert!(!c.contains("203.0.114.9".parse().unwrap()));
        assert!(c.contains("::ffff:203.0.113.9".parse().unwrap()));
        let c = Cidr::parse("2001:db8::/32").unwrap();
        assert!(c.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!c.contains("2001:db9::1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Cidr::parse("10.0.0.1")
                .unwrap()
                .contains("10.0.0.1".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_none());
    }

    #[test]
    fn dates_and_base64() {
        assert_eq!(parse_date("1970-01-02"), Some(86_400_000_000_000));
        assert_eq!(parse_date("1970-01-01T00:01:00Z"), Some(60_000_000_000));
        assert_eq!(parse_date("60"), Some(60_000_000_000));
        assert_eq!(parse_date("1970-01-01T01:00:00+01:00"), Some(0));
        assert!(parse_date("yesterday").is_none());
        assert_eq!(base64_decode("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(base64_decode("aGVsbG8"), Some(b"hello".to_vec()));
        assert!(base64_decode("a!").is_none());
    }
}
