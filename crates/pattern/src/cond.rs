//! Leaf conditions and their value-level semantics.
//!
//! A *scalar* is one leaf value of an event: a string, a number, `true`, `false` or `null`.
//! Every condition is a predicate on one scalar; [`Condition::matches`] is the direct
//! (unindexed) definition that the reference evaluator uses and that the compiled matcher's
//! indexes must agree with.

use std::net::IpAddr;

/// One leaf value of an event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    /// A string, unescaped.
    Str(&'a str),
    /// A number (JSON numbers compare as IEEE doubles: `300 = 300.0 = 3.0e2`).
    Num(f64),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// A literal in an exact-match list or an `anything-but` list.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A string.
    Str(String),
    /// A number, canonicalised (see [`canonical_number`]).
    Num(f64),
    /// A boolean.
    Bool(bool),
    /// `null`.
    Null,
}

impl Literal {
    fn matches(&self, v: &Scalar<'_>) -> bool {
        match (self, v) {
            (Literal::Str(a), Scalar::Str(b)) => a == b,
            (Literal::Num(a), Scalar::Num(b)) => *a == canonical_number(*b),
            (Literal::Bool(a), Scalar::Bool(b)) => a == b,
            (Literal::Null, Scalar::Null) => true,
            _ => false,
        }
    }
}

/// Canonical numeric form: the IEEE double, with `-0.0` folded into `0.0` so that equal numbers
/// have equal bit patterns (used as hash keys).
pub fn canonical_number(x: f64) -> f64 {
    if x == 0.0 { 0.0 } else { x }
}

/// Case folding used by `equals-ignore-case` and the `prefix`/`suffix` ignore-case forms:
/// per-character Unicode lowercase mapping (no full folding: `STRASSE` does not equal `straße`,
/// and final sigma `ς` differs from `σ`, as in event-ruler and quamina).
pub fn fold_case(s: &str) -> String {
    if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        s.chars().flat_map(char::to_lowercase).collect()
    }
}

/// A wildcard pattern: literal segments separated by `*` (which matches any run of characters,
/// including none). `\*` is a literal star and `\\` a literal backslash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wildcard {
    /// The segments between stars; `segments.len() == stars + 1`.
    pub segments: Vec<String>,
    /// The pattern as written.
    pub source: String,
}

impl Wildcard {
    /// Parses a wildcard pattern; errors name the problem.
    pub fn parse(src: &str) -> Result<Wildcard, &'static str> {
        let mut segments = vec![String::new()];
        let mut chars = src.chars();
        let mut prev_star = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e @ ('*' | '\\')) => {
                        segments.last_mut().expect("non-empty").push(e);
                        prev_star = false;
                    }
                    _ => return Err("invalid escape in wildcard: only \\* and \\\\ are allowed"),
                },
                '*' => {
                    if prev_star {
                        return Err("consecutive wildcard characters are not allowed");
                    }
                    segments.push(String::new());
                    prev_star = true;
                }
                c => {
                    segments.last_mut().expect("non-empty").push(c);
                    prev_star = false;
                }
            }
        }
        Ok(Wildcard {
            segments,
            source: src.to_string(),
        })
    }

    /// Number of `*` in the pattern.
    pub fn stars(&self) -> usize {
        self.segments.len() - 1
    }

    /// Whether `value` matches. Greedy leftmost placement of the middle segments is exact for
    /// star-only globs; cost is linear in `value.len()` per segment search.
    pub fn matches(&self, value: &[u8]) -> bool {
        let segs = &self.segments;
        if segs.len() == 1 {
            return value == segs[0].as_bytes();
        }
        let first = segs[0].as_bytes();
        let last = segs[segs.len() - 1].as_bytes();
        if value.len() < first.len() + last.len()
            || !value.starts_with(first)
            || !value.ends_with(last)
        {
            return false;
        }
        let mut rest = &value[first.len()..value.len() - last.len()];
        for seg in &segs[1..segs.len() - 1] {
            let seg = seg.as_bytes();
            if seg.is_empty() {
                continue;
            }
            match memchr::memmem::find(rest, seg) {
                Some(at) => rest = &rest[at + seg.len()..],
                None => return false,
            }
        }
        true
    }
}

/// A numeric interval; each bound optional, inclusive or exclusive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NumRange {
    /// Lower bound and whether it is inclusive.
    pub lo: Option<(f64, bool)>,
    /// Upper bound and whether it is inclusive.
    pub hi: Option<(f64, bool)>,
}

impl NumRange {
    /// Whether `x` lies in the interval.
    pub fn contains(&self, x: f64) -> bool {
        if let Some((lo, incl)) = self.lo
            && (x < lo || (x == lo && !incl))
        {
            return false;
        }
        if let Some((hi, incl)) = self.hi
            && (x > hi || (x == hi && !incl))
        {
            return false;
        }
        !x.is_nan()
    }
}

/// An IP address range from a CIDR block (IPv4 and IPv6 are separate families).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange {
    /// IPv6 family?
    pub v6: bool,
    /// First address, as an integer.
    pub lo: u128,
    /// Last address, as an integer.
    pub hi: u128,
}

impl IpRange {
    /// Parses `addr/len` (or a bare address, meaning a single host).
    pub fn parse(s: &str) -> Result<IpRange, &'static str> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| "not a valid IP address")?;
        let (v6, bits, val) = match ip {
            IpAddr::V4(a) => (false, 32u32, u128::from(u32::from(a))),
            IpAddr::V6(a) => (true, 128u32, u128::from(a)),
        };
        let len = match len {
            None => bits,
            Some(l) => {
                if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) || l.len() > 3 {
                    return Err("invalid prefix length");
                }
                let n: u32 = l.parse().map_err(|_| "invalid prefix length")?;
                if n > bits {
                    return Err("prefix length out of range");
                }
                n
            }
        };
        let host_bits = bits - len;
        let mask: u128 = if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        Ok(IpRange {
            v6,
            lo: val & !mask,
            hi: val | mask,
        })
    }

    /// Whether the string `s` is an IP address inside the range.
    pub fn contains_str(&self, s: &str) -> bool {
        match parse_ip(s) {
            Some((v6, x)) => v6 == self.v6 && self.lo <= x && x <= self.hi,
            None => false,
        }
    }
}

/// Parses an IP address string into (is_v6, integer).
pub fn parse_ip(s: &str) -> Option<(bool, u128)> {
    if s.len() > 45 || s.is_empty() {
        return None;
    }
    match s.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) => Some((false, u128::from(u32::from(a)))),
        IpAddr::V6(a) => Some((true, u128::from(a))),
    }
}

/// One condition of a leaf match list. A leaf field matches when *any* condition in its list
/// matches *any* of the field's values.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Exact match on a string, number, boolean or null.
    Exact(Literal),
    /// String starts with.
    Prefix(String),
    /// String starts with, ignoring case (stored folded).
    PrefixIgnoreCase(String),
    /// String ends with.
    Suffix(String),
    /// String ends with, ignoring case (stored folded).
    SuffixIgnoreCase(String),
    /// String equals, ignoring case (stored folded).
    EqualsIgnoreCase(String),
    /// Wildcard match on strings.
    Wildcard(Wildcard),
    /// Number in range (`=` is a degenerate range).
    Numeric(NumRange),
    /// String is an IP address in the block.
    Cidr(IpRange),
    /// Any value exists (`true`); `exists: false` is not a condition but an absence predicate.
    Exists,
    /// Matches a value that matches *none* of the inner conditions (which are `Exact`,
    /// `Prefix`, `Suffix`, `EqualsIgnoreCase` or `Wildcard`). Never matches an absent field.
    AnythingBut(Vec<Condition>),
}

impl Condition {
    /// Direct semantics on one scalar.
    pub fn matches(&self, v: &Scalar<'_>) -> bool {
        match self {
            Condition::Exact(lit) => lit.matches(v),
            Condition::Prefix(p) => matches!(v, Scalar::Str(s) if s.starts_with(p.as_str())),
            Condition::Suffix(p) => matches!(v, Scalar::Str(s) if s.ends_with(p.as_str())),
            Condition::PrefixIgnoreCase(p) => {
                matches!(v, Scalar::Str(s) if fold_case(s).starts_with(p.as_str()))
            }
            Condition::SuffixIgnoreCase(p) => {
                matches!(v, Scalar::Str(s) if fold_case(s).ends_with(p.as_str()))
            }
            Condition::EqualsIgnoreCase(p) => matches!(v, Scalar::Str(s) if fold_case(s) == *p),
            Condition::Wildcard(w) => matches!(v, Scalar::Str(s) if w.matches(s.as_bytes())),
            Condition::Numeric(r) => matches!(v, Scalar::Num(x) if r.contains(*x)),
            Condition::Cidr(r) => matches!(v, Scalar::Str(s) if r.contains_str(s)),
            Condition::Exists => true,
            Condition::AnythingBut(inner) => !inner.iter().any(|c| c.matches(v)),
        }
    }

    /// Short human description, for diagnostics.
    pub fn describe(&self) -> String {
        fn lit(l: &Literal) -> String {
            match l {
                Literal::Str(s) => serde_json::Value::String(s.clone()).to_string(),
                Literal::Num(x) => format!("{x}"),
                Literal::Bool(b) => b.to_string(),
                Literal::Null => "null".into(),
            }
        }
        fn q(s: &str) -> String {
            serde_json::Value::String(s.to_string()).to_string()
        }
        match self {
            Condition::Exact(l) => format!("equals {}", lit(l)),
            Condition::Prefix(p) => format!("prefix {}", q(p)),
            Condition::PrefixIgnoreCase(p) => format!("prefix (ignore case) {}", q(p)),
            Condition::Suffix(p) => format!("suffix {}", q(p)),
            Condition::SuffixIgnoreCase(p) => format!("suffix (ignore case) {}", q(p)),
            Condition::EqualsIgnoreCase(p) => format!("equals-ignore-case {}", q(p)),
            Condition::Wildcard(w) => format!("wildcard {}", q(&w.source)),
            Condition::Numeric(r) => {
                let mut parts = Vec::new();
                if let Some((x, incl)) = r.lo {
                    parts.push(format!("{} {x}", if incl { ">=" } else { ">" }));
                }
                if let Some((x, incl)) = r.hi {
                    parts.push(format!("{} {x}", if incl { "<=" } else { "<" }));
                }
                format!("numeric {}", parts.join(" and "))
            }
            Condition::Cidr(r) => format!("cidr ({} range)", if r.v6 { "IPv6" } else { "IPv4" }),
            Condition::Exists => "exists".into(),
            Condition::AnythingBut(inner) => {
                let d: Vec<String> = inner.iter().map(Condition::describe).collect();
                format!("anything-but [{}]", d.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_semantics() {
        let w = Wildcard::parse("a*b*c").unwrap();
        assert!(w.matches(b"abc"));
        assert!(w.matches(b"a-b-c"));
        assert!(w.matches(b"abbbbc"));
        assert!(!w.matches(b"acb"));
        assert!(!w.matches(b"ab"));
        let w = Wildcard::parse("*/lib/*").unwrap();
        assert!(w.matches(b"/usr/lib/x"));
        assert!(!w.matches(b"/usr/bin/x"));
        let w = Wildcard::parse(r"a\*b").unwrap();
        assert!(w.matches(b"a*b"));
        assert!(!w.matches(b"axb"));
        assert!(Wildcard::parse("a**b").is_err());
        assert!(Wildcard::parse(r"a\b").is_err());
        let w = Wildcard::parse("aa*aa").unwrap();
        assert!(!w.matches(b"aaa"));
        assert!(w.matches(b"aaaa"));
    }

    #[test]
    fn cidr_ranges() {
        let r = IpRange::parse("10.0.0.0/24").unwrap();
        assert!(r.contains_str("10.0.0.255"));
        assert!(!r.contains_str("10.0.1.0"));
        assert!(!r.contains_str("::1"));
        let r = IpRange::parse("2001:db8::/32").unwrap();
        assert!(r.contains_str("2001:db8:ffff::1"));
        assert!(!r.contains_str("2001:db9::1"));
        assert!(IpRange::parse("10.0.0.0/33").is_err());
        assert!(
            IpRange::parse("0.0.0.0/0")
                .unwrap()
                .contains_str("255.255.255.255")
        );
        assert!(IpRange::parse("10.0.0.300/8").is_err());
    }

    #[test]
    fn folding_is_simple() {
        assert_ne!(fold_case("STRASSE"), fold_case("straße"));
        assert_ne!(fold_case("ΣΊΣΥΦΟΣ"), fold_case("σίσυφος"));
        assert_eq!(fold_case("HeLLo"), "hello");
    }
}
