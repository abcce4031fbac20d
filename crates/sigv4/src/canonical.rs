//! Building blocks of the canonical request (see the crate docs for the exact rules).

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

/// RFC 3986 unreserved characters: `A-Z a-z 0-9 - . _ ~`.
#[inline]
pub(crate) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Appends `bytes` percent-encoded: unreserved bytes (and `/` when `keep_slash`) verbatim,
/// every other byte as `%XY` with upper-case hex.
pub(crate) fn encode_into(out: &mut Vec<u8>, bytes: &[u8], keep_slash: bool) {
    for &b in bytes {
        if is_unreserved(b) || (keep_slash && b == b'/') {
            out.push(b);
        } else {
            out.extend_from_slice(&[
                b'%',
                HEX_UPPER[usize::from(b >> 4)],
                HEX_UPPER[usize::from(b & 15)],
            ]);
        }
    }
}

/// Lower-case hex of a 32-byte digest.
pub(crate) fn hex32(bytes: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (i, &b) in bytes.iter().take(32).enumerate() {
        out[2 * i] = HEX_LOWER[usize::from(b >> 4)];
        out[2 * i + 1] = HEX_LOWER[usize::from(b & 15)];
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Form-style decoding of one query component: `+` is a space, a valid `%XY` is that byte, and
/// anything else (including a malformed `%`) is kept literally.
pub(crate) fn decode_component(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                match (
                    input.get(i + 1).copied().and_then(hex_val),
                    input.get(i + 2).copied().and_then(hex_val),
                ) {
                    (Some(h), Some(l)) => {
                        out.push((h << 4) | l);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Removes dot segments and empty segments from an absolute path (RFC 3986 §5.2.4 plus AWS's
/// collapsing of `//`); keeps a trailing slash when the input ends in `/`, `/.` or `/..`.
pub(crate) fn normalize_path(path: &str) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    if path.is_empty() {
        return Cow::Borrowed("/");
    }
    let absolute: Cow<'_, str> = if path.starts_with('/') {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(format!("/{path}"))
    };
    if !absolute.contains('.') && !absolute.contains("//") {
        return absolute;
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in absolute.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(absolute.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    let trailing = absolute.ends_with('/') || absolute.ends_with("/.") || absolute.ends_with("/..");
    if out.is_empty() || trailing {
        out.push('/');
    }
    Cow::Owned(out)
}

/// Appends the canonical URI of a raw (as received, already percent-encoded) path: normalised,
/// then every byte except unreserved and `/` percent-encoded again (so `%` becomes `%25`).
pub(crate) fn canonical_uri_into(out: &mut Vec<u8>, raw_path: &str) {
    let normalized = normalize_path(raw_path);
    encode_into(out, normalized.as_bytes(), true);
}

/// One query parameter as received: the raw value and the re-encoded name and value.
pub(crate) struct QueryParam<'a> {
    pub raw_value: &'a str,
    pub enc_name: Vec<u8>,
    pub enc_value: Vec<u8>,
}

/// Splits a raw query string into parameters (empty `&&` pieces are skipped; a piece without
/// `=` has an empty value) and re-encodes each name and value strictly.
pub(crate) fn parse_query(query: &str) -> Vec<QueryParam<'_>> {
    let mut params = Vec::new();
    for piece in query.split('&') {
        if piece.is_empty() {
            continue;
        }
        let (raw_name, raw_value) = piece.split_once('=').unwrap_or((piece, ""));
        let mut enc_name = Vec::with_capacity(raw_name.len());
        encode_into(&mut enc_name, &decode_component(raw_name.as_bytes()), false);
        let mut enc_value = Vec::with_capacity(raw_value.len());
        encode_into(
            &mut enc_value,
            &decode_component(raw_value.as_bytes()),
            false,
        );
        params.push(QueryParam {
            raw_value,
            enc_name,
            enc_value,
        });
    }
    params
}

/// Appends the canonical query string: the parameters (minus those `skip` rejects) sorted by
/// encoded name, then encoded value, joined as `name=value` with `&`.
pub(crate) fn canonical_query_into(
    out: &mut Vec<u8>,
    params: &[QueryParam<'_>],
    skip: impl Fn(&QueryParam<'_>) -> bool,
) {
    let mut sorted: Vec<&QueryParam<'_>> = params.iter().filter(|p| !skip(p)).collect();
    sorted.sort_unstable_by(|a, b| {
        a.enc_name
            .cmp(&b.enc_name)
            .then_with(|| a.enc_value.cmp(&b.enc_value))
    });
    for (i, p) in sorted.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(&p.enc_name);
        out.push(b'=');
        out.extend_from_slice(&p.enc_value);
    }
}

/// Appends a header value with leading and trailing spaces removed and each run of spaces
/// collapsed to one (only the space character, as AWS does; tabs are kept).
pub(crate) fn trim_all_into(out: &mut Vec<u8>, value: &[u8]) {
    let start = value.iter().position(|&b| b != b' ');
    let Some(start) = start else { return };
    let end = value
        .iter()
        .rposition(|&b| b != b' ')
        .map_or(start, |e| e + 1);
    let mut prev_space = false;
    for &b in &value[start..end] {
        if b == b' ' {
            if !prev_space {
                out.push(b);
            }
            prev_space = true;
        } else {
            out.push(b);
            prev_space = false;
        }
    }
}

/// Parses `YYYYMMDDTHHMMSSZ`.
pub(crate) fn parse_amz_date(s: &str) -> Option<OffsetDateTime> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let mut v = 0u32;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(c - b'0');
        }
        Some(v)
    };
    let year = i32::try_from(num(0..4)?).ok()?;
    let month = Month::try_from(u8::try_from(num(4..6)?).ok()?).ok()?;
    let day = u8::try_from(num(6..8)?).ok()?;
    let hour = u8::try_from(num(9..11)?).ok()?;
    let minute = u8::try_from(num(11..13)?).ok()?;
    let second = u8::try_from(num(13..15)?).ok()?;
    let date = Date::from_calendar_date(year, month, day).ok()?;
    let time = Time::from_hms(hour, minute, second).ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_utc())
}

/// Parses an HTTP `Date` header in IMF-fixdate form (`Mon, 23 Nov 2026 10:35:00 GMT`).
pub(crate) fn parse_http_date(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    let (_, rest) = s.split_once(", ")?;
    let mut it = rest.split(' ');
    let day: u8 = it.next()?.parse().ok()?;
    let month = match it.next()? {
        "Jan" => Month::January,
        "Feb" => Month::February,
        "Mar" => Month::March,
        "Apr" => Month::April,
        "May" => Month::May,
        "Jun" => Month::June,
        "Jul" => Month::July,
        "Aug" => Month::August,
        "Sep" => Month::September,
        "Oct" => Month::October,
        "Nov" => Month::November,
        "Dec" => Month::December,
        _ => return None,
    };
    let year: i32 = it.next()?.parse().ok()?;
    let hms = it.next()?;
    if it.next()? != "GMT" || it.next().is_some() {
        return None;
    }
    let mut t = hms.split(':');
    let hour: u8 = t.next()?.parse().ok()?;
    let minute: u8 = t.next()?.parse().ok()?;
    let second: u8 = t.next()?.parse().ok()?;
    if t.next().is_some() || !(1000..=9999).contains(&year) {
        return None;
    }
    let date = Date::from_calendar_date(year, month, day).ok()?;
    let time = Time::from_hms(hour, minute, second).ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_utc())
}

/// Formats `YYYYMMDDTHHMMSSZ` (UTC).
pub(crate) fn format_amz_date(t: OffsetDateTime) -> String {
    fn push(out: &mut String, v: u32, width: u32) {
        for k in (0..width).rev() {
            let digit = (v / 10u32.pow(k)) % 10;
            out.push(char::from(b'0' + digit as u8));
        }
    }
    let t = t.to_offset(time::UtcOffset::UTC);
    let mut out = String::with_capacity(16);
    push(&mut out, u32::try_from(t.year()).unwrap_or(0), 4);
    push(&mut out, u32::from(u8::from(t.month())), 2);
    push(&mut out, u32::from(t.day()), 2);
    out.push('T');
    push(&mut out, u32::from(t.hour()), 2);
    push(&mut out, u32::from(t.minute()), 2);
    push(&mut out, u32::from(t.second()), 2);
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(p: &str) -> String {
        let mut v = Vec::new();
        canonical_uri_into(&mut v, p);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn path_normalisation() {
        assert_eq!(uri(""), "/");
        assert_eq!(uri("/"), "/");
        assert_eq!(uri("//"), "/");
        assert_eq!(uri("//example//"), "/example/");
        assert_eq!(uri("/./"), "/");
        assert_eq!(uri("/example/.."), "/");
        assert_eq!(uri("/example/../x"), "/x");
        assert_eq!(uri("/a/b/."), "/a/b/");
        assert_eq!(uri("/a/b/.."), "/a/");
        assert_eq!(uri("/../../a"), "/a");
        assert_eq!(uri("/a.b/c"), "/a.b/c");
        assert_eq!(uri("/..a/.b"), "/..a/.b");
        assert_eq!(uri("/%2E/x"), "/%252E/x");
        assert_eq!(uri("/ü"), "/%C3%BC");
        assert_eq!(uri("/a%20b"), "/a%2520b");
        assert_eq!(uri("/~a-b_c.d"), "/~a-b_c.d");
        assert_eq!(uri("/a:b@c"), "/a%3Ab%40c");
        assert_eq!(uri("a"), "/a");
    }

    fn query(q: &str) -> String {
        let params = parse_query(q);
        let mut v = Vec::new();
        canonical_query_into(&mut v, &params, |_| false);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn query_canonicalisation() {
        assert_eq!(query(""), "");
        assert_eq!(query("b=2&a=1"), "a=1&b=2");
        assert_eq!(query("a=2&a=1&a=10"), "a=1&a=10&a=2");
        assert_eq!(query("a"), "a=");
        assert_eq!(query("a=&&b"), "a=&b=");
        assert_eq!(query("a=b+c"), "a=b%20c");
        assert_eq!(query("a=b%2bc"), "a=b%2Bc");
        assert_eq!(query("a=%zz%4"), "a=%25zz%254");
        assert_eq!(query("a=%"), "a=%25");
        assert_eq!(query("%41=x"), "A=x");
        assert_eq!(query("a=b=c"), "a=b%3Dc");
        assert_eq!(query("a=~*'"), "a=~%2A%27");
        assert_eq!(query("a=%FF"), "a=%FF");
        // sorted on the encoded form: `%` (0x25) sorts before letters.
        assert_eq!(query("a=z&a=%20"), "a=%20&a=z");
    }

    #[test]
    fn decode_edge_cases() {
        assert_eq!(decode_component(b"%"), b"%");
        assert_eq!(decode_component(b"%4"), b"%4");
        assert_eq!(decode_component(b"%41"), b"A");
        assert_eq!(decode_component(b"x%41%"), b"xA%");
        assert_eq!(decode_component(b"%%41"), b"%A");
    }

    #[test]
    fn trimming() {
        let t = |s: &str| {
            let mut v = Vec::new();
            trim_all_into(&mut v, s.as_bytes());
            String::from_utf8(v).unwrap()
        };
        assert_eq!(t("  a   b  c "), "a b c");
        assert_eq!(t("   "), "");
        assert_eq!(t(""), "");
        assert_eq!(t("a\t\tb"), "a\t\tb");
        assert_eq!(t("x"), "x");
    }

    #[test]
    fn dates() {
        let t = parse_amz_date("20261123T103500Z").unwrap();
        assert_eq!(format_amz_date(t), "20261123T103500Z");
        assert!(parse_amz_date("20261123T103500").is_none());
        assert!(parse_amz_date("20261323T103500Z").is_none());
        assert!(parse_amz_date("20261123T253500Z").is_none());
        assert!(parse_amz_date("2026112xT103500Z").is_none());
        assert!(parse_amz_date("+0261123T103500Z").is_none());
        let h = parse_http_date("Mon, 23 Nov 2026 10:35:00 GMT").unwrap();
        assert_eq!(h, t);
        assert!(parse_http_date("Mon, 23 Nov 2026 10:35:00 UTC").is_none());
        assert!(parse_http_date("Mon, 31 Nov 2026 10:35:00 GMT").is_none());
    }
}
