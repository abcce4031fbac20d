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

use smallvec::SmallVec;

/// How many resolved pieces a pattern can have before matching spills to the heap.
pub(crate) const INLINE_TOKENS: usize = 8;

/// A reference to a request value inside a pattern (`${key}` or `${key, 'default'}`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VarRef {
    /// The condition key, lowercased.
    pub key: Box<str>,
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
    /// Anything else without variables.
    General(Vec<Part>),
    /// Contains at least one variable.
    Vars(Vec<Part>),
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
                _ => Kind::General(parts),
            }
        };
        Ok(Pattern { kind, ci: o.ci })
    }

    /// Matches `s`; `resolve` supplies policy-variable values (lowercased key).
    #[inline]
    pub(crate) fn matches<'v>(&self, s: &str, resolve: &dyn Fn(&str) -> Option<&'v str>) -> bool {
        match &self.kind {
            Kind::Any => true,
            Kind::Exact(l) => eq(l, s, self.ci),
            Kind::Prefix(l) => {
                s.len() >= l.len() && s.is_char_boundary(l.len()) && eq(l, &s[..l.len()], self.ci)
            }
            Kind::General(parts) => {
                let toks: SmallVec<[Tok<'_>; INLINE_TOKENS]> = parts
                    .iter()
                    .map(|p| match p {
                        Part::Lit(l) => Tok::Lit(l),
                        Part::Star => Tok::Star,
                        Part::Qm => Tok::Qm,
                        Part::Var(_) => unreachable!("General patterns have no variables"),
                    })
                    .collect();
                glob(&toks, s, self.ci)
            }
            Kind::Vars(parts) => {
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
                glob(&toks, s, self.ci)
            }
        }
    }
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
        key: key.to_ascii_lowercase().into_boxed_str(),
        default,
    })
}

#[inline]
fn eq(pat: &str, s: &str, ci: bool) -> bool {
    if ci {
        pat.eq_ignore_ascii_case(s)
    } else {
        pat == s
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
        assert!(p.matches("home/bob/x", &|k| (k == "aws:username").then_some("bob")));
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
