//! Compiled string patterns: literals, `*` / `?` globs and policy variables.
//!
//! Design constraints:
//! - Compilation happens once, when a policy is parsed; matching never allocates on the heap
//!   unless a pattern has more than [`INLINE_TOKENS`] pieces after variable substitution.
//! - `*` matches any run of characters (including none, and including `:` and `/`), `?` matches
//!   exactly one character (a Unicode scalar value, not a byte).
//! - Case-insensitive matching folds ASCII letters only (AWS's documented behaviour for the
//!   `...IgnoreCase` operators and for action names is exercised with ASCII in practice).
//! - Policy variables (`${aws:username}`, `${key, 'default'}`) are resolved at match time from
//!   the request; the substituted text is always literal (a `*` coming from a context value is
//!   not a wildcard). `${*}`, `${?}` and `${$}` are the literal characters `*`, `?` and `$`.
//!   A variable whose key is absent (and has no default) makes the pattern unmatchable.

use crate::context::KeyId;
use smallvec::SmallVec;

/// How many resolved pieces a pattern can have before matching spills to the heap.
pub(crate) const INLINE_TOKENS: usize = 8;

/// A reference to a request value inside a pattern (`${key}` or `${key, 'default'}`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VarRef {
    /// The condition key.
    pub key: KeyId,
    /// The default used when the key is absent.
    pub default: Option<Box<str>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(Box<str>),
    Star,
    Qm,
    Var(VarRef),
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// `*`: anything.
    Any,
    /// No wildcard, no variable.
    Exact(Box<str>),
    /// `literal*`.
    Prefix(Box<str>),
    /// Literals separated by `*` (no `?`, no variable): `first*middle[0]*...*last`.
    Lits {
        first: Box<str>,
        middle: Box<[Needle]>,
        last: Box<str>,
        min_len: usize,
    },
    /// Anything else without variables.
    General(Vec<Part>),
    /// Contains at least one variable.
    Vars(Vec<Part>),
}

/// A literal searched for between two `*`, with its substring searcher built at compile time.
#[derive(Debug, Clone)]
pub(crate) struct Needle {
    text: Box<str>,
    finder: memchr::memmem::Finder<'static>,
}

impl PartialEq for Needle {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pattern {
    kind: Kind,
    ci: bool,
}

/// A piece of a resolved pattern.
#[derive(Debug, Clone, Copy)]
enum Tok<'a> {
    Lit(&'a str),
    Star,
    Qm,
}

/// Errors compiling a pattern (bad variable syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PatternError(pub String);

/// Options for [`Pattern::compile`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct PatternOpts {
    /// `*` and `?` are wildcards (otherwise literal).
    pub glob: bool,
    /// Compare ASCII case-insensitively.
    pub ci: bool,
    /// `${...}` is a policy variable (policy Version 2012-10-17).
    pub vars: bool,
}

impl Pattern {
    /// Compiles `src`.
    pub(crate) fn compile(src: &str, o: PatternOpts) -> Result<Pattern, PatternError> {
        let mut parts: Vec<Part> = Vec::new();
        let mut lit = String::new();
        let mut has_var = false;
        let mut chars = src.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '*' if o.glob => {
                    flush(&mut lit, &mut parts, o.ci);
                    if parts.last() != Some(&Part::Star) {
                        parts.push(Part::Star);
                    }
                }
                '?' if o.glob => {
                    flush(&mut lit, &mut parts, o.ci);
                    parts.push(Part::Qm);
                }
                '$' if o.vars && src[i + 1..].starts_with('{') => {
                    let rest = &src[i + 2..];
                    let Some(end) = rest.find('}') else {
                        return Err(PatternError(format!(
                            "policy variable starting at offset {i} in {src:?} has no closing '}}'"
                        )));
                    };
                    let body = &rest[..end];
                    // Skip the consumed characters: '{', body, '}'.
                    for _ in 0..body.chars().count() + 2 {
                        chars.next();
                    }
                    match body.trim() {
                        "*" => lit.push('*'),
                        "?" => lit.push('?'),
                        "$" => lit.push('$'),
                        _ => {
                            let var = parse_var(body).map_err(|m| {
                                PatternError(format!("policy variable ${{{body}}} in {src:?}: {m}"))
                            })?;
                            flush(&mut lit, &mut parts, o.ci);
                            parts.push(Part::Var(var));
                            has_var = true;
                        }
                    }
                }
                _ => lit.push(c),
            }
        }
        flush(&mut lit, &mut parts, o.ci);
        let kind = if has_var {
            Kind::Vars(parts)
        } else {
            match parts.as_slice() {
                [] => Kind::Exact("".into()),
                [Part::Star] => Kind::Any,
                [Part::Lit(l)] => Kind::Exact(l.clone()),
                [Part::Lit(l), Part::Star] => Kind::Prefix(l.clone()),
                _ if !parts.contains(&Part::Qm) => lits(&parts),
                _ => Kind::General(parts),
            }
        };
        Ok(Pattern { kind, ci: o.ci })
    }

    /// Matches `s`; `resolve` supplies policy-variable values (lowercased key).
    #[inline]
    pub(crate) fn matches<'v>(&self, s: &str, resolve: &dyn Fn(&KeyId) -> Option<&'v str>) -> bool {
        match &self.kind {
            Kind::Any => true,
            Kind::Exact(l) => eq(l, s, self.ci),
            Kind::Prefix(l) => {
                s.len() >= l.len() && bytes_eq(&s.as_bytes()[..l.len()], l.as_bytes(), self.ci)
            }
            Kind::Lits {
                first,
                middle,
                last,
                min_len,
            } => lits_match(first, middle, last, *min_len, s, self.ci),
            Kind::General(parts) | Kind::Vars(parts) => general(parts, s, self.ci, resolve),
        }
    }
}

/// Patterns with `?` or variables: resolve into tokens, then glob. Kept out of line so that
/// [`Pattern::matches`] stays small enough to inline for the common kinds.
#[inline(never)]
fn general<'v>(
    parts: &[Part],
    s: &str,
    ci: bool,
    resolve: &dyn Fn(&KeyId) -> Option<&'v str>,
) -> bool {
    let mut toks: SmallVec<[Tok<'_>; INLINE_TOKENS]> = SmallVec::new();
    for p in parts {
        toks.push(match p {
            Part::Lit(l) => Tok::Lit(l),
            Part::Star => Tok::Star,
            Part::Qm => Tok::Qm,
            Part::Var(v) => match resolve(&v.key) {
                Some(val) => Tok::Lit(val),
                None => match &v.default {
                    Some(d) => Tok::Lit(d),
                    None => return false,
                },
            },
        });
    }
    glob(&toks, s, ci)
}

/// Builds [`Kind::Lits`] from star-separated literals.
fn lits(parts: &[Part]) -> Kind {
    let mut groups: Vec<Box<str>> = vec!["".into()];
    for p in parts {
        match p {
            Part::Lit(l) => *groups.last_mut().expect("non-empty") = l.clone(),
            Part::Star => groups.push("".into()),
            Part::Qm | Part::Var(_) => unreachable!("lits() takes literals and stars only"),
        }
    }
    let first = groups.remove(0);
    let last = groups.pop().unwrap_or_default();
    let min_len = first.len() + last.len() + groups.iter().map(|g| g.len()).sum::<usize>();
    let middle: Vec<Needle> = groups
        .into_iter()
        .filter(|g| !g.is_empty())
        .map(|g| Needle {
            finder: memchr::memmem::Finder::new(g.as_bytes()).into_owned(),
            text: g,
        })
        .collect();
    Kind::Lits {
        first,
        middle: middle.into_boxed_slice(),
        last,
        min_len,
    }
}

#[inline]
fn bytes_eq(a: &[u8], b: &[u8], ci: bool) -> bool {
    if ci {
        a.eq_ignore_ascii_case(b)
    } else {
        fast_eq(a, b)
    }
}

/// String equality through [`fast_eq`].
#[inline]
pub(crate) fn s_eq(a: &str, b: &str) -> bool {
    fast_eq(a.as_bytes(), b.as_bytes())
}

/// Byte equality with word loads, inline: the strings compared here (actions, ARNs, key
/// names) are short, and a libc `memcmp` call costs more than the comparison itself.
#[inline]
pub(crate) fn fast_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n >= 8 {
        let mut i = 0;
        while i + 8 <= n {
            if word8(a, i) != word8(b, i) {
                return false;
            }
            i += 8;
        }
        // The last word overlaps the previous one when n is not a multiple of 8.
        return word8(a, n - 8) == word8(b, n - 8);
    }
    if n >= 4 {
        return word4(a, 0) == word4(b, 0) && word4(a, n - 4) == word4(b, n - 4);
    }
    a.iter().zip(b).all(|(x, y)| x == y)
}

#[inline(always)]
fn word8(s: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&s[i..i + 8]);
    u64::from_ne_bytes(w)
}

#[inline(always)]
fn word4(s: &[u8], i: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&s[i..i + 4]);
    u32::from_ne_bytes(w)
}

/// First occurrence of `needle` in `hay`: a scan for the first byte, then a comparison (no
/// searcher or SIMD set-up: needles are short and haystacks are ARNs of a few dozen bytes).
fn find(hay: &[u8], needle: &[u8], ci: bool) -> Option<usize> {
    if needle.len() > hay.len() {
        return None;
    }
    let last_start = hay.len() - needle.len();
    let (first, rest) = needle.split_first()?;
    let (lo, up) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
    let mut start = 0;
    while start <= last_start {
        let window = &hay[start..=last_start];
        let i = start
            + if ci && lo != up {
                window.iter().position(|&c| c == lo || c == up)?
            } else {
                window.iter().position(|c| c == first)?
            };
        if bytes_eq(&hay[i + 1..i + needle.len()], rest, ci) {
            return Some(i);
        }
        start = i + 1;
    }
    None
}

/// Out of line so that [`Pattern::matches`] stays small (few saved registers) for the
/// common kinds.
#[inline(never)]
fn lits_match(
    first: &str,
    middle: &[Needle],
    last: &str,
    min_len: usize,
    s: &str,
    ci: bool,
) -> bool {
    let b = s.as_bytes();
    if b.len() < min_len
        || !bytes_eq(&b[..first.len()], first.as_bytes(), ci)
        || !bytes_eq(&b[b.len() - last.len()..], last.as_bytes(), ci)
    {
        return false;
    }
    let end = b.len() - last.len();
    let mut pos = first.len();
    for m in middle {
        let hay = &b[pos..end];
        let found = if ci {
            find(hay, m.text.as_bytes(), true)
        } else {
            m.finder.find(hay)
        };
        match found {
            Some(i) => pos += i + m.text.len(),
            None => return false,
        }
    }
    true
}

fn flush(lit: &mut String, parts: &mut Vec<Part>, ci: bool) {
    if !lit.is_empty() {
        let s = if ci {
            lit.to_ascii_lowercase()
        } else {
            lit.clone()
        };
        parts.push(Part::Lit(s.into_boxed_str()));
        lit.clear();
    }
}

fn parse_var(body: &str) -> Result<VarRef, String> {
    let (key, default) = match body.split_once(',') {
        Some((k, d)) => {
            let d = d.trim();
            let inner = d
                .strip_prefix('\'')
                .and_then(|d| d.strip_suffix('\''))
                .ok_or_else(|| format!("the default value {d:?} must be in single quotes"))?;
            (k.trim(), Some(inner.to_string().into_boxed_str()))
        }
        None => (body.trim(), None),
    };
    if key.is_empty() {
        return Err("the variable names no key".into());
    }
    if key
        .chars()
        .any(|c| c.is_whitespace() || c == '$' || c == '{')
    {
        return Err(format!("{key:?} is not a valid condition key name"));
    }
    Ok(VarRef {
        key: KeyId::new(key),
        default,
    })
}

#[inline]
fn eq(pat: &str, s: &str, ci: bool) -> bool {
    if ci {
        pat.eq_ignore_ascii_case(s)
    } else {
        fast_eq(pat.as_bytes(), s.as_bytes())
    }
}

#[inline]
fn starts_at(s: &[u8], at: usize, lit: &[u8], ci: bool) -> bool {
    let end = at + lit.len();
    end <= s.len()
        && if ci {
            s[at..end].eq_ignore_ascii_case(lit)
        } else {
            &s[at..end] == lit
        }
}

#[inline]
fn char_len(b: u8) -> usize {
    match b {
        0..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// Matches a star-free token run at byte offset `at`; returns the end offset.
fn seg_at(seg: &[Tok<'_>], s: &str, at: usize, ci: bool) -> Option<usize> {
    let b = s.as_bytes();
    let mut p = at;
    for t in seg {
        match t {
            Tok::Lit(l) => {
                if !starts_at(b, p, l.as_bytes(), ci) {
                    return None;
                }
                p += l.len();
            }
            Tok::Qm => {
                if p >= b.len() {
                    return None;
                }
                p += char_len(b[p]);
            }
            Tok::Star => unreachable!("segments are split at stars"),
        }
    }
    Some(p)
}

/// Glob match of resolved tokens against `s`.
fn glob(toks: &[Tok<'_>], s: &str, ci: bool) -> bool {
    let mut segs = toks.split(|t| matches!(t, Tok::Star));
    let first = segs.next().unwrap_or(&[]);
    let Some(mut pos) = seg_at(first, s, 0, ci) else {
        return false;
    };
    let rest: SmallVec<[&[Tok<'_>]; INLINE_TOKENS]> = segs.collect();
    let Some((last, middle)) = rest.split_last() else {
        // No star at all: the first segment must consume everything.
        return pos == s.len();
    };
    for seg in middle {
        if seg.is_empty() {
            continue;
        }
        let mut found = None;
        let mut at = pos;
        while at <= s.len() {
            if s.is_char_boundary(at)
                && let Some(end) = seg_at(seg, s, at, ci)
            {
                found = Some(end);
                break;
            }
            at += 1;
        }
        match found {
            Some(end) => pos = end,
            None => return false,
        }
    }
    if last.is_empty() {
        return true;
    }
    // The last segment is anchored at the end.
    if last.iter().all(|t| matches!(t, Tok::Lit(_))) {
        let len: usize = last
            .iter()
            .map(|t| if let Tok::Lit(l) = t { l.len() } else { 0 })
            .sum();
        return s.len() >= pos + len
            && s.is_char_boundary(s.len() - len)
            && seg_at(last, s, s.len() - len, ci) == Some(s.len());
    }
    (pos..=s.len()).any(|at| s.is_char_boundary(at) && seg_at(last, s, at, ci) == Some(s.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Pattern::compile(
            p,
            PatternOpts {
                glob: true,
                ci: false,
                vars: true,
            },
        )
        .unwrap()
        .matches(s, &|_| None)
    }

    #[test]
    fn globs() {
        assert!(m("*", ""));
        assert!(m("a*", "abc"));
        assert!(!m("a*", "ba"));
        assert!(m("*c", "abc"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("a*b*c", "aXbYbZc"));
        assert!(!m("a*b*c", "aXbYbZ"));
        assert!(m("a*?", "ab"));
        assert!(!m("a*?", "a"));
        assert!(m("?", "é"));
        assert!(m("*é?", "xxéy"));
        assert!(m("ab", "ab"));
        assert!(!m("ab", "abc"));
        assert!(m("a**b", "ab"));
        assert!(m("*ab*ab", "xabab"));
        assert!(m("*aab", "aaab"));
    }

    #[test]
    fn variables() {
        let p = Pattern::compile(
            "home/${aws:username}/*",
            PatternOpts {
                glob: true,
                ci: false,
                vars: true,
            },
        )
        .unwrap();
        assert!(p.matches("home/bob/x", &|k: &KeyId| {
            (&*k.key == "aws:username").then_some("bob")
        }));
        assert!(!p.matches("home/bob/x", &|_| None));
        let p = Pattern::compile(
            "${aws:username, 'anon'}-${*}${?}${$}",
            PatternOpts {
                glob: true,
                ci: false,
                vars: true,
            },
        )
        .unwrap();
        assert!(p.matches("anon-*?$", &|_| None));
        assert!(!p.matches("anon-x?$", &|_| None));
        // A substituted '*' is literal.
        let p = Pattern::compile(
            "a${k}",
            PatternOpts {
                glob: true,
                ci: false,
                vars: true,
            },
        )
        .unwrap();
        assert!(p.matches("a*", &|_| Some("*")));
        assert!(!p.matches("ab", &|_| Some("*")));
        assert!(
            Pattern::compile(
                "${aws:username",
                PatternOpts {
                    glob: true,
                    ci: false,
                    vars: true
                }
            )
            .is_err()
        );
        assert!(
            Pattern::compile(
                "${a, nodefaultquotes}",
                PatternOpts {
                    glob: true,
                    ci: false,
                    vars: true
                }
            )
            .is_err()
        );
        // Version 2008-10-17: no variables.
        let p = Pattern::compile(
            "${k}",
            PatternOpts {
                glob: false,
                ci: false,
                vars: false,
            },
        )
        .unwrap();
        assert!(p.matches("${k}", &|_| Some("v")));
    }

    #[test]
    fn case_insensitive() {
        let p = Pattern::compile(
            "KMS:Get*",
            PatternOpts {
                glob: true,
                ci: true,
                vars: false,
            },
        )
        .unwrap();
        assert!(p.matches("kms:GetKeyPolicy", &|_| None));
        assert!(p.matches("KMS:GETKEYPOLICY", &|_| None));
        assert!(!p.matches("kms:Decrypt", &|_| None));
    }
}
