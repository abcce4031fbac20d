//! ARN helpers: parsing, and matching with wildcards per segment.
//!
//! Design constraints:
//! - An ARN is `arn:partition:service:region:account-id:resource`; the resource part is
//!   everything after the fifth `:` and may itself contain `:` and `/`.
//! - Matching (`Resource`, `ArnEquals`, `ArnLike`) compares segment by segment: a wildcard in
//!   the region segment cannot swallow the account segment. Wildcards inside the resource
//!   segment match across `/` and `:`.
//! - Parsing borrows; nothing here allocates except [`ArnPattern::compile`].

use crate::context::KeyId;
use crate::pattern::{Pattern, PatternError, PatternOpts};
use std::fmt;

/// A parsed ARN borrowing from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arn<'a> {
    /// `aws`, `aws-cn`, ...
    pub partition: &'a str,
    /// `kms`, `iam`, `secretsmanager`, ...
    pub service: &'a str,
    /// The region, empty for global services.
    pub region: &'a str,
    /// The account id, empty for some resources (S3 buckets).
    pub account: &'a str,
    /// Everything after the fifth `:`.
    pub resource: &'a str,
}

impl<'a> Arn<'a> {
    /// Parses `s`; `None` unless it has the `arn:` prefix and six `:`-separated parts.
    pub fn parse(s: &'a str) -> Option<Arn<'a>> {
        let segs = split(s)?;
        Some(Arn {
            partition: segs[1],
            service: segs[2],
            region: segs[3],
            account: segs[4],
            resource: segs[5],
        })
    }

    /// The segments in order, `arn` first.
    pub fn segments(&self) -> [&'a str; 6] {
        [
            "arn",
            self.partition,
            self.service,
            self.region,
            self.account,
            self.resource,
        ]
    }
}

impl fmt::Display for Arn<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:{}:{}:{}:{}",
            self.partition, self.service, self.region, self.account, self.resource
        )
    }
}

/// Splits an ARN into its six segments (the first is `arn`).
pub(crate) fn split(s: &str) -> Option<[&str; 6]> {
    let b = s.as_bytes();
    if !b.starts_with(b"arn:") {
        return None;
    }
    let mut segs = [""; 6];
    segs[0] = "arn";
    let mut start = 4;
    for seg in segs.iter_mut().take(5).skip(1) {
        // A plain scan: ARN segments are a few bytes long, too short for SIMD set-up to pay.
        let i = start + b[start..].iter().position(|&c| c == b':')?;
        *seg = &s[start..i];
        start = i + 1;
    }
    segs[5] = &s[start..];
    Some(segs)
}

/// The account id of an account principal (`123456789012` or `arn:aws:iam::123456789012:root`).
pub fn account_of_root(s: &str) -> Option<&str> {
    if is_account_id(s) {
        return Some(s);
    }
    let a = Arn::parse(s)?;
    (a.service == "iam" && a.region.is_empty() && a.resource == "root" && is_account_id(a.account))
        .then_some(a.account)
}

/// Whether `s` is a 12-digit account id.
pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// A compiled ARN pattern matched per segment.
#[derive(Debug, Clone, PartialEq)]
pub struct ArnPattern {
    inner: Inner,
}

#[derive(Debug, Clone, PartialEq)]
enum Inner {
    Any,
    /// Per-segment patterns: six for a full ARN; fewer when the pattern is cut short
    /// (`arn:aws:*`), in which case the last one matches the rest of the value.
    Segments(Box<[Pattern]>),
    /// The text does not start with `arn:`: the whole string is one glob.
    Whole(Pattern),
}

impl ArnPattern {
    /// Compiles `src` (wildcards `*` and `?`; policy variables when `vars`).
    pub fn compile(src: &str, vars: bool) -> Result<ArnPattern, String> {
        let o = PatternOpts {
            glob: true,
            ci: false,
            vars,
        };
        let c = |s: &str| Pattern::compile(s, o).map_err(|PatternError(m)| m);
        if src == "*" {
            return Ok(ArnPattern { inner: Inner::Any });
        }
        let inner = if src.starts_with("arn:") {
            let segs = if vars {
                split_outside_vars(src)
            } else {
                src.splitn(6, ':').collect()
            };
            Inner::Segments(
                segs.into_iter()
                    .map(c)
                    .collect::<Result<Vec<_>, _>>()?
                    .into_boxed_slice(),
            )
        } else {
            Inner::Whole(c(src)?)
        };
        Ok(ArnPattern { inner })
    }

    /// Matches an ARN (or any string when the pattern is not ARN-shaped).
    pub fn matches(&self, arn: &str) -> bool {
        self.matches_split(arn, split(arn).as_ref(), &|_| None)
    }

    /// Matches with pre-split segments and a policy-variable resolver.
    pub(crate) fn matches_split<'v>(
        &self,
        whole: &str,
        segs: Option<&[&str; 6]>,
        resolve: &dyn Fn(&KeyId) -> Option<&'v str>,
    ) -> bool {
        match &self.inner {
            Inner::Any => true,
            Inner::Whole(p) => p.matches(whole, resolve),
            Inner::Segments(pats) if pats.len() == 6 => match segs {
                Some(segs) => pats
                    .iter()
                    .zip(segs.iter())
                    .all(|(p, s)| p.matches(s, resolve)),
                None => false,
            },
            Inner::Segments(pats) => {
                let n = pats.len();
                let mut parts = whole.splitn(n, ':');
                pats.iter()
                    .all(|p| parts.next().is_some_and(|s| p.matches(s, resolve)))
            }
        }
    }
}

/// Splits a pattern into at most six `:`-separated segments, ignoring `:` inside `${...}`.
fn split_outside_vars(src: &str) -> Vec<&str> {
    let mut out = Vec::with_capacity(6);
    let (mut depth, mut start) = (0usize, 0usize);
    let b = src.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'{' if i > 0 && b[i - 1] == b'$' => depth += 1,
            b'}' if depth > 0 => depth -= 1,
            b':' if depth == 0 && out.len() < 5 => {
                out.push(&src[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&src[start..]);
    out
}

/// Matches `arn` against `pattern` per segment (no policy variables).
pub fn arn_like(pattern: &str, arn: &str) -> bool {
    ArnPattern::compile(pattern, false)
        .map(|p| p.matches(arn))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        let a = Arn::parse(
            "arn:aws:secretsmanager:us-east-1:111122223333:secret:events!connection/x/u-abc",
        )
        .unwrap();
        assert_eq!(a.service, "secretsmanager");
        assert_eq!(a.resource, "secret:events!connection/x/u-abc");
        assert_eq!(
            a.to_string(),
            "arn:aws:secretsmanager:us-east-1:111122223333:secret:events!connection/x/u-abc"
        );
        assert!(Arn::parse("arn:aws:s3").is_none());
        assert!(Arn::parse("urn:aws:s3:::b:x").is_none());
        assert_eq!(
            account_of_root("arn:aws:iam::111122223333:root"),
            Some("111122223333")
        );
        assert_eq!(account_of_root("111122223333"), Some("111122223333"));
        assert_eq!(account_of_root("arn:aws:iam::111122223333:user/root"), None);
    }

    #[test]
    fn per_segment() {
        assert!(arn_like(
            "arn:aws:secretsmanager:*:*:secret:events!connection/*",
            "arn:aws:secretsmanager:us-east-1:111122223333:secret:events!connection/x/y"
        ));
        // A region wildcard cannot eat the account segment.
        assert!(!arn_like("arn:aws:s3:*:*:x", "arn:aws:s3:a:b:c:x"));
        assert!(!arn_like("arn:aws:s3:*:x", "arn:aws:s3:a:b:x"));
        // A pattern cut short: its last segment matches the rest.
        assert!(arn_like("arn:aws:*", "arn:aws:s3:a:b:x"));
        assert!(!arn_like("arn:aws:*", "arn:aws-cn:s3:a:b:x"));
        assert!(arn_like(
            "arn:aws:iam::*:role/*",
            "arn:aws:iam::111122223333:role/a/b"
        ));
        assert!(!arn_like(
            "arn:aws:iam::*:role/*",
            "arn:aws:iam::111122223333:user/a"
        ));
        assert!(arn_like("*", "anything"));
        assert!(!arn_like("arn:aws:iam::1:root", "not-an-arn"));
    }
}
