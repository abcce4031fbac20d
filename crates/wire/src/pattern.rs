//! Botocore `pattern` constraints: Java regular expressions run on the `regex` crate.
//!
//! AWS validates `pattern` with Java's `Pattern.matcher(value).matches()`: the whole value must
//! match (IAM rejects `my role` against `[\w+=,.@-]+`), and the pattern has Java semantics. This
//! module translates the Java syntax that occurs in the models sluice ships into `regex` syntax
//! with the same meaning, and wraps it as `\A(?:...)\z`:
//!
//! - `\w`, `\d`, `\s` (and `\W`, `\D`, `\S`) are ASCII-only in Java; they become explicit ASCII
//!   classes (the `regex` crate's are Unicode-aware).
//! - `\uXXXX` takes exactly four hex digits, as in Java; a high surrogate escape directly followed
//!   by a low surrogate escape is one supplementary code point (Java's reading of
//!   `\uD800\uDC00-\uDBFF\uDFFF`). A lone surrogate cannot be matched by a Rust `&str` and makes
//!   the pattern untranslatable. Note `\u10000` is therefore `\u1000` followed by `0`, exactly as
//!   Java reads it (STS `arnType`).
//! - `.` excludes Java's line terminators (`\n`, `\r`, U+0085, U+2028, U+2029) unless the
//!   pattern uses the `(?s)` flag.
//! - Inside character classes every literal is emitted as an escape, so Java classes such as
//!   `[a-zA-Z0-9-_]` or `[\w|\d|\.|_]` mean the same as in Java.
//! - A leading negative lookahead `^(?!X)REST` (e.g. `^(?!\s*$).+`, `^(?!aws:)...`) is split into
//!   "`X` does not match a prefix" and "`REST` matches the whole value".
//!
//! **Degradation.** Constructs the `regex` crate cannot express (other lookarounds,
//! backreferences, possessive quantifiers, Java-only `\p{...}` names, lone surrogates) make the
//! pattern *unenforced*: the value is accepted as if the pattern were absent. This can only
//! make sluice more permissive than AWS, never reject a valid request. The unenforced patterns
//! are listed by [`crate::Service::unenforced_patterns`]; for botocore 1.44.5 they are Firehose
//! `ClusterJDBCURL` and IAM `accountAliasType` (tested).

use regex::Regex;

/// A compiled pattern constraint.
#[derive(Debug)]
pub(crate) struct Pattern {
    /// The pattern exactly as in the model (this is what error messages show).
    pub(crate) source: Box<str>,
    check: Option<Check>,
}

#[derive(Debug)]
struct Check {
    /// Must match the whole value.
    whole: Regex,
    /// From a leading `^(?!X)`: if this matches at the start, the value is rejected.
    not_prefix: Option<Regex>,
}

impl Pattern {
    pub(crate) fn new(source: &str) -> Self {
        Self {
            source: source.into(),
            check: compile(source).ok(),
        }
    }

    /// Whether the pattern is enforced (it could be translated and compiled).
    pub(crate) fn is_enforced(&self) -> bool {
        self.check.is_some()
    }

    /// Whether `value` satisfies the pattern. Unenforced patterns accept everything.
    pub(crate) fn matches(&self, value: &str) -> bool {
        match &self.check {
            None => true,
            Some(c) => {
                if let Some(neg) = &c.not_prefix
                    && neg.is_match(value)
                {
                    return false;
                }
                c.whole.is_match(value)
            }
        }
    }
}

fn compile(java: &str) -> Result<Check, String> {
    let dotall = java.contains("(?s)");
    let (not_prefix, rest) = match split_leading_negative_lookahead(java) {
        Some((x, rest)) => {
            let x = translate(x, dotall)?;
            let re = Regex::new(&format!(r"\A(?:{x})")).map_err(|e| e.to_string())?;
            (Some(re), rest)
        }
        None => (None, java),
    };
    let body = translate(rest, dotall)?;
    let whole = Regex::new(&format!(r"\A(?:{body})\z")).map_err(|e| e.to_string())?;
    Ok(Check { whole, not_prefix })
}

/// `^(?!X)REST` -> `(X, "^REST")`.
fn split_leading_negative_lookahead(java: &str) -> Option<(&str, &str)> {
    let inner = java.strip_prefix("^(?!")?;
    let bytes = inner.as_bytes();
    let mut depth = 0usize;
    let mut in_class = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'[' => in_class += 1,
            b']' if in_class > 0 => in_class -= 1,
            b'(' if in_class == 0 => depth += 1,
            b')' if in_class == 0 => {
                if depth == 0 {
                    // "^(?!" + X + ")" + REST
                    return Some((&inner[..i], &inner[i + 1..]));
                }
                depth -= 1;
            }
            _ => {}
        }
        i += 1;
    }
    None
}

const JAVA_DOT: &str = r"[^\n\r\x{85}\x{2028}\x{2029}]";
const WORD: &str = "0-9A-Za-z_";
const DIGIT: &str = "0-9";
const SPACE: &str = r"\t\n\x0B\x0C\r\x20";

/// One element of a Java character class.
enum ClassItem {
    Char(char),
    /// Already in `regex` class syntax (e.g. `0-9A-Za-z_`, `\p{L}`, `[^0-9]`).
    Set(String),
}

struct Translator {
    chars: Vec<char>,
    pos: usize,
    dotall: bool,
}

/// Translate Java regex syntax into `regex` crate syntax with the same meaning.
pub(crate) fn translate(java: &str, dotall: bool) -> Result<String, String> {
    let mut t = Translator {
        chars: java.chars().collect(),
        pos: 0,
        dotall,
    };
    let mut out = String::with_capacity(java.len() + 16);
    while let Some(c) = t.next() {
        match c {
            '\\' => t.escape_outside(&mut out)?,
            '[' => {
                let class = t.class()?;
                out.push_str(&class);
            }
            '.' => {
                if t.dotall {
                    out.push('.');
                } else {
                    out.push_str(JAVA_DOT);
                }
            }
            '(' => {
                out.push('(');
                if t.peek() == Some('?') {
                    t.pos += 1;
                    out.push('?');
                    match t.peek() {
                        Some('=') | Some('!') | Some('>') => {
                            return Err("lookaround or atomic group".into());
                        }
                        Some('<') => {
                            if matches!(t.peek_at(1), Some('=') | Some('!')) {
                                return Err("lookbehind".into());
                            }
                        }
                        _ => {}
                    }
                }
            }
            '*' | '+' | '?' | '}' => {
                out.push(c);
                if t.peek() == Some('+') {
                    return Err("possessive quantifier".into());
                }
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

impl Translator {
    fn next(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.pos + n).copied()
    }

    fn hex(&mut self, n: usize) -> Result<u32, String> {
        let mut v = 0u32;
        for _ in 0..n {
            let c = self.next().ok_or("truncated hex escape")?;
            v = v * 16 + c.to_digit(16).ok_or("bad hex escape")?;
        }
        Ok(v)
    }

    /// After `\u`: four hex digits, combining a surrogate pair written as two escapes.
    fn unicode_escape(&mut self) -> Result<char, String> {
        let v = self.hex(4)?;
        if (0xD800..0xDC00).contains(&v)
            && self.peek() == Some('\\')
            && self.peek_at(1) == Some('u')
        {
            let save = self.pos;
            self.pos += 2;
            if let Ok(lo) = self.hex(4)
                && (0xDC00..0xE000).contains(&lo)
            {
                let cp = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
                return char::from_u32(cp).ok_or_else(|| "bad surrogate pair".into());
            }
            self.pos = save;
        }
        char::from_u32(v).ok_or_else(|| "lone surrogate".into())
    }

    /// After `\x`: `HH` or `{H...}`.
    fn x_escape(&mut self) -> Result<char, String> {
        let v = if self.peek() == Some('{') {
            self.pos += 1;
            let mut v = 0u32;
            loop {
                let c = self.next().ok_or("truncated \\x{}")?;
                if c == '}' {
                    break;
                }
                v = v
                    .checked_mul(16)
                    .and_then(|v| v.checked_add(c.to_digit(16)?))
                    .ok_or("bad \\x{} escape")?;
            }
            v
        } else {
            self.hex(2)?
        };
        char::from_u32(v).ok_or_else(|| "bad code point".into())
    }

    fn property(&mut self, negated: bool) -> Result<String, String> {
        let mut name = String::new();
        if self.peek() == Some('{') {
            self.pos += 1;
            loop {
                let c = self.next().ok_or("truncated \\p{}")?;
                if c == '}' {
                    break;
                }
                name.push(c);
            }
        } else {
            name.push(self.next().ok_or("truncated \\p")?);
        }
        // Only the Unicode general categories and scripts mean the same in both engines;
        // Java-only names (Alpha, javaLowerCase, IsAlphabetic, ...) fail to compile later.
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err("unsupported property name".into());
        }
        Ok(format!("\\{}{{{name}}}", if negated { 'P' } else { 'p' }))
    }

    /// A class escape shared by both contexts: returns a char or a set.
    fn escape_item(&mut self) -> Result<ClassItem, String> {
        let c = self.next().ok_or("trailing backslash")?;
        Ok(match c {
            'w' => ClassItem::Set(WORD.into()),
            'd' => ClassItem::Set(DIGIT.into()),
            's' => ClassItem::Set(SPACE.into()),
            'W' => ClassItem::Set(format!("[^{WORD}]")),
            'D' => ClassItem::Set(format!("[^{DIGIT}]")),
            'S' => ClassItem::Set(format!("[^{SPACE}]")),
            'p' => ClassItem::Set(self.property(false)?),
            'P' => ClassItem::Set(self.property(true)?),
            'u' => ClassItem::Char(self.unicode_escape()?),
            'x' => ClassItem::Char(self.x_escape()?),
            't' => ClassItem::Char('\t'),
            'n' => ClassItem::Char('\n'),
            'r' => ClassItem::Char('\r'),
            'f' => ClassItem::Char('\x0C'),
            'a' => ClassItem::Char('\x07'),
            'e' => ClassItem::Char('\x1B'),
            c if c.is_ascii_alphanumeric() => {
                return Err(format!("unsupported escape \\{c}"));
            }
            c => ClassItem::Char(c),
        })
    }

    fn escape_outside(&mut self, out: &mut String) -> Result<(), String> {
        match self.peek() {
            Some(c @ ('b' | 'B' | 'A' | 'z')) => {
                self.pos += 1;
                out.push('\\');
                out.push(c);
                Ok(())
            }
            Some('Z') => {
                self.pos += 1;
                out.push_str(r"(?:\r\n|[\n\r\x{85}\x{2028}\x{2029}])?\z");
                Ok(())
            }
            Some('Q') | Some('G') | Some('R') | Some('X') => Err("unsupported escape".into()),
            Some(c) if c.is_ascii_digit() => Err("backreference".into()),
            _ => {
                match self.escape_item()? {
                    ClassItem::Char(c) => push_literal(out, c),
                    ClassItem::Set(s) => {
                        if s.starts_with('[') {
                            out.push_str(&s);
                        } else {
                            out.push('[');
                            out.push_str(&s);
                            out.push(']');
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// After `[`: a whole (possibly nested) Java class, returned in `regex` syntax.
    fn class(&mut self) -> Result<String, String> {
        let mut out = String::from("[");
        if self.peek() == Some('^') {
            self.pos += 1;
            out.push('^');
        }
        let mut first = true;
        let mut nonempty = false;
        loop {
            let c = self.next().ok_or("unterminated class")?;
            let item = match c {
                ']' if !first => break,
                '[' => {
                    let nested = self.class()?;
                    out.push_str(&nested);
                    first = false;
                    nonempty = true;
                    continue;
                }
                '&' if self.peek() == Some('&') => {
                    self.pos += 1;
                    out.push_str("&&");
                    first = false;
                    continue;
                }
                '\\' => self.escape_item()?,
                c => ClassItem::Char(c),
            };
            first = false;
            nonempty = true;
            match item {
                ClassItem::Set(s) => out.push_str(&s),
                ClassItem::Char(lo) => {
                    // A range needs `-` followed by something other than `]`.
                    if self.peek() == Some('-')
                        && self.peek_at(1).is_some()
                        && self.peek_at(1) != Some(']')
                    {
                        let save = self.pos;
                        self.pos += 1;
                        let hi = match self.next() {
                            Some('\\') => self.escape_item()?,
                            Some('[') => {
                                // `a-[...]`: the `-` is literal, then a nested class.
                                self.pos = save;
                                push_class_literal(&mut out, lo);
                                continue;
                            }
                            Some(c) => ClassItem::Char(c),
                            None => return Err("unterminated class".into()),
                        };
                        match hi {
                            ClassItem::Char(hi) => {
                                if hi < lo {
                                    return Err("reversed range".into());
                                }
                                push_class_literal(&mut out, lo);
                                out.push('-');
                                push_class_literal(&mut out, hi);
                            }
                            ClassItem::Set(s) => {
                                // `a-\w`: Java reads `-` literally here.
                                push_class_literal(&mut out, lo);
                                push_class_literal(&mut out, '-');
                                out.push_str(&s);
                            }
                        }
                    } else {
                        push_class_literal(&mut out, lo);
                    }
                }
            }
        }
        if !nonempty {
            return Err("empty class".into());
        }
        out.push(']');
        Ok(out)
    }
}

fn push_class_literal(out: &mut String, c: char) {
    if c.is_alphanumeric() {
        out.push(c);
    } else {
        out.push_str(&format!("\\x{{{:X}}}", c as u32));
    }
}

fn push_literal(out: &mut String, c: char) {
    if c.is_alphanumeric() || c == ' ' {
        out.push(c);
    } else {
        out.push_str(&format!("\\x{{{:X}}}", c as u32));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        let p = Pattern::new(s);
        assert!(p.is_enforced(), "{s} should compile");
        p
    }

    #[test]
    fn whole_value_must_match() {
        let re = p(r"[\w+=,.@-]+");
        assert!(re.matches("my-role_1"));
        assert!(!re.matches("my role"));
        assert!(!re.matches(""));
    }

    #[test]
    fn java_shorthands_are_ascii() {
        let re = p(r"[\w]+");
        assert!(re.matches("abc_09"));
        assert!(!re.matches("é"));
        let re = p(r"\d+");
        assert!(!re.matches("٣"));
        assert!(re.matches("42"));
    }

    #[test]
    fn unicode_properties() {
        let re = p(r"^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$");
        assert!(re.matches("Ünïcode tag 1:/=+-@"));
        assert!(!re.matches("no*star"));
    }

    #[test]
    fn escaped_punctuation_in_classes() {
        let re = p(r"[a-zA-Z0-9\-\_]+");
        assert!(re.matches("a-b_c"));
        assert!(!re.matches("a.b"));
        let re = p(r"[a-zA-Z0-9-_]+");
        assert!(re.matches("a-b_c"));
        assert!(!re.matches("a.b"));
        let re = p(r"[a-zA-Z0-9\\._\\-]+");
        assert!(re.matches(r"a\b.c"));
        let re = p(r"[\w|\d|\.|_]+");
        assert!(re.matches("a|b.c"));
        assert!(!re.matches("a b"));
    }

    #[test]
    fn surrogate_pairs_combine() {
        let re = p(r"[\u0020-\uD7FF\uE000-\uFFFD\uD800\uDC00-\uDBFF\uDFFF\t]*");
        assert!(re.matches("plain\ttext 😀"));
        assert!(!re.matches("nl\n"));
    }

    #[test]
    fn java_reads_four_hex_digits() {
        let re = p(
            r"[\u0009\u000A\u000D\u0020-\u007E\u0085\u00A0-\uD7FF\uE000-\uFFFD\u10000-\u10FFFF]+",
        );
        assert!(re.matches("arn:aws:iam::123456789012:role/x"));
        // Java reads `\u10000` as U+1000 then `0`, so supplementary characters do not match.
        assert!(!re.matches("😀"));
    }

    #[test]
    fn leading_negative_lookahead() {
        let re = p(r"^(?!\s*$).+");
        assert!(re.matches("x"));
        assert!(re.matches(" x "));
        assert!(!re.matches("   "));
        assert!(!re.matches(""));
        let re = p(r"^(?!aws:)[\p{L}\p{Z}\p{N}_.:\/=+\-@%]*$");
        assert!(re.matches("team"));
        assert!(!re.matches("aws:team"));
    }

    #[test]
    fn java_dot_excludes_line_terminators_unless_dotall() {
        let re = p(".*");
        assert!(re.matches("one line"));
        assert!(!re.matches("two\nlines"));
        assert!(!re.matches("cr\r"));
        let re = p("(?s).*");
        assert!(re.matches("two\nlines"));
    }

    #[test]
    fn alternation_and_anchors() {
        let re = p(r"^$|[a-zA-Z/_]+");
        assert!(re.matches(""));
        assert!(re.matches("a/b"));
        assert!(!re.matches("a-b"));
        let re = p(r"(\u002F)|(\u002F[\u0021-\u007E]+\u002F)");
        assert!(re.matches("/"));
        assert!(re.matches("/path/"));
        assert!(!re.matches("/path"));
    }

    #[test]
    fn unsupported_constructs_degrade_to_unenforced() {
        for s in [
            r"^[a-z0-9]([a-z0-9]|-(?!-)){1,61}[a-z0-9]$",
            r"(?<!-)x",
            r"(a)\1",
            r"a*+",
            r"\p{javaLowerCase}+",
            r"[\uD800]",
            r"[unterminated",
        ] {
            let pat = Pattern::new(s);
            assert!(!pat.is_enforced(), "{s} should be unenforced");
            assert!(pat.matches("anything at all"));
        }
    }
}
