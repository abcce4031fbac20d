//! Minimal JSON lexing over raw event bytes, used by the streaming matcher.
//!
//! Only what the scanner needs: whitespace, string bounds (with an "has escapes" flag), string
//! unescaping, number tokens (validated against the JSON grammar), literals, and a fast skip of a
//! whole value. Skipped subtrees are checked for string termination and bracket balance only,
//! not for full JSON validity (see the crate docs).

use crate::error::EventError;

pub(crate) type Res<T> = Result<T, EventError>;

pub(crate) fn err<T>(offset: usize, reason: &'static str) -> Res<T> {
    Err(EventError { offset, reason })
}

#[inline]
pub(crate) fn skip_ws(buf: &[u8], mut i: usize) -> usize {
    while let Some(&b) = buf.get(i) {
        if b == b' ' || b == b'\n' || b == b'\r' || b == b'\t' {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// `i` is just after the opening quote. Returns (index of the closing quote, has escapes).
/// Control characters (< 0x20) inside the string are an error. Eight bytes at a time (SWAR).
#[inline]
pub(crate) fn string_end(buf: &[u8], mut i: usize) -> Res<(usize, bool)> {
    let mut escaped = false;
    let n = buf.len();
    loop {
        while i + 8 <= n {
            let w = word(buf, i);
            // bytes < 0x20: (w - 0x20..) & !w & 0x80.. (lowest flag exact, like eq_mask)
            let m = eq_mask(w, b'"') | eq_mask(w, b'\\') | (w.wrapping_sub(LO * 0x20) & !w & HI);
            if m != 0 {
                i += (m.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        match buf.get(i) {
            Some(b'"') => return Ok((i, escaped)),
            Some(b'\\') => {
                escaped = true;
                i += 2;
            }
            Some(&b) if b < 0x20 => return err(i, "control character in string"),
            Some(_) => i += 1,
            None => return err(i.min(n), "unterminated string"),
        }
    }
}

/// The first (up to) eight bytes of `key`, little-endian, zero-padded: with the length, an
/// exact identity for keys of at most eight bytes and a cheap filter for longer ones.
#[inline]
pub(crate) fn key_head(key: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let k = key.len().min(8);
    a[..k].copy_from_slice(&key[..k]);
    u64::from_le_bytes(a)
}

/// Like [`string_end`] for an object key, also returning [`key_head`] of the raw contents (only
/// meaningful when there are no escapes). Keys shorter than eight bytes cost one word load.
#[inline(always)]
pub(crate) fn key_end(buf: &[u8], i: usize) -> Res<(usize, bool, u64)> {
    if i + 8 <= buf.len() {
        let w = word(buf, i);
        let m = eq_mask(w, b'"') | eq_mask(w, b'\\') | (w.wrapping_sub(LO * 0x20) & !w & HI);
        if m == 0 {
            let (e, esc) = string_end(buf, i + 8)?;
            return Ok((e, esc, w));
        }
        let p = (m.trailing_zeros() / 8) as usize;
        if buf[i + p] == b'"' {
            let head = if p == 0 {
                0
            } else {
                w & (u64::MAX >> (64 - 8 * p))
            };
            return Ok((i + p, false, head));
        }
    }
    let (e, esc) = string_end(buf, i)?;
    Ok((e, esc, key_head(&buf[i..e])))
}

fn hex4(buf: &[u8], i: usize) -> Res<u32> {
    let mut v = 0u32;
    for k in 0..4 {
        let d = match buf.get(i + k) {
            Some(b) => (*b as char).to_digit(16),
            None => None,
        };
        match d {
            Some(d) => v = v * 16 + d,
            None => return err(i + k, "invalid \\u escape"),
        }
    }
    Ok(v)
}

/// Unescapes the raw string contents `raw` (between the quotes) into `out`.
pub(crate) fn unescape(raw: &[u8], base: usize, out: &mut Vec<u8>) -> Res<()> {
    out.clear();
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let Some(&e) = raw.get(i + 1) else {
            return err(base + i, "invalid escape");
        };
        i += 2;
        let c = match e {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = hex4(raw, i)?;
                i += 4;
                let cp = if (0xD800..0xDC00).contains(&hi) {
                    if raw.get(i) == Some(&b'\\') && raw.get(i + 1) == Some(&b'u') {
                        let lo = hex4(raw, i + 2)?;
                        if !(0xDC00..0xE000).contains(&lo) {
                            return err(base + i, "invalid surrogate pair");
                        }
                        i += 6;
                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                    } else {
                        return err(base + i, "lone surrogate");
                    }
                } else {
                    hi
                };
                match char::from_u32(cp) {
                    Some(c) => c,
                    None => return err(base + i, "lone surrogate"),
                }
            }
            _ => return err(base + i, "invalid escape"),
        };
        let mut tmp = [0u8; 4];
        out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
    }
    Ok(())
}

/// Validates a number token starting at `i`; returns its end.
#[inline]
pub(crate) fn number_end(buf: &[u8], start: usize) -> Res<usize> {
    let mut i = start;
    let digits = |buf: &[u8], mut i: usize| {
        let s = i;
        while buf.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i, i - s)
    };
    if buf.get(i) == Some(&b'-') {
        i += 1;
    }
    match buf.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(buf, i).0,
        _ => return err(i, "invalid number"),
    }
    if buf.get(i) == Some(&b'.') {
        let (j, n) = digits(buf, i + 1);
        if n == 0 {
            return err(j, "invalid number");
        }
        i = j;
    }
    if matches!(buf.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(buf.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let (j, n) = digits(buf, i);
        if n == 0 {
            return err(j, "invalid number");
        }
        i = j;
    }
    Ok(i)
}

/// Clinger's fast path for a plain decimal `[-]digits[.digits]`: when the digits, read as an
/// integer `m`, are at most 2^53 and there are at most 22 fraction digits, `m` and `10^k` are
/// exact doubles and one IEEE division gives the correctly rounded value (what a full parser
/// returns). `None` otherwise.
#[inline]
fn parse_plain_decimal(tok: &[u8]) -> Option<f64> {
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    let (neg, digits) = match tok.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, tok),
    };
    if digits.is_empty() || digits.len() > 17 {
        return None;
    }
    let mut m = 0u64;
    let mut frac: Option<usize> = None;
    for &b in digits {
        match b {
            b'0'..=b'9' => {
                m = m * 10 + u64::from(b - b'0');
                if let Some(f) = frac.as_mut() {
                    *f += 1;
                }
            }
            b'.' if frac.is_none() => frac = Some(0),
            _ => return None,
        }
    }
    let k = frac.unwrap_or(0);
    if m > 1 << 53 || k >= POW10.len() {
        return None;
    }
    let v = m as f64 / POW10[k];
    Some(if neg { -v } else { v })
}

/// Parses a validated number token.
pub(crate) fn parse_number(tok: &[u8]) -> f64 {
    if let Some(x) = parse_plain_decimal(tok) {
        return x;
    }
    // A validated JSON number token is ASCII and valid Rust float syntax.
    std::str::from_utf8(tok)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

/// Checks a literal (`true`, `false`, `null`) at `i`; returns its end.
#[inline]
pub(crate) fn literal_end(buf: &[u8], i: usize, lit: &[u8]) -> Res<usize> {
    if buf.len() >= i + lit.len() && &buf[i..i + lit.len()] == lit {
        Ok(i + lit.len())
    } else {
        err(i, "invalid literal")
    }
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// SWAR: high bit set in (at least) the lowest byte of `w` equal to `b`. Bytes above a true
/// match may be flagged spuriously (borrow), so only the lowest flag is meaningful.
#[inline(always)]
fn eq_mask(w: u64, b: u8) -> u64 {
    let t = w ^ (LO * u64::from(b));
    t.wrapping_sub(LO) & !t & HI
}

#[inline(always)]
fn word(buf: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&buf[i..i + 8]);
    u64::from_le_bytes(a)
}

/// Skips string contents without validating them; `i` is just after the opening quote.
/// Returns the index just after the closing quote.
#[inline]
fn skip_string_fast(buf: &[u8], mut i: usize) -> Res<usize> {
    let n = buf.len();
    loop {
        while i + 8 <= n {
            let w = word(buf, i);
            let m = eq_mask(w, b'"') | eq_mask(w, b'\\');
            if m != 0 {
                i += (m.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        match buf.get(i) {
            Some(b'"') => return Ok(i + 1),
            Some(b'\\') => i += 2,
            Some(_) => i += 1,
            None => return err(n, "unterminated string"),
        }
    }
}

/// Skips the value starting at `i` (after whitespace); returns the index after it.
#[inline]
pub(crate) fn skip_value(buf: &[u8], i: usize) -> Res<usize> {
    match buf.get(i) {
        Some(b'"') => skip_string_fast(buf, i + 1),
        Some(b'{' | b'[') => skip_container(buf, i),
        Some(b't') => literal_end(buf, i, b"true"),
        Some(b'f') => literal_end(buf, i, b"false"),
        Some(b'n') => literal_end(buf, i, b"null"),
        Some(b'-' | b'0'..=b'9') => number_end(buf, i),
        Some(_) => err(i, "unexpected character"),
        None => err(i, "unexpected end of input"),
    }
}

/// Skips an object or array starting at `start` by tracking bracket depth and strings (64-byte
/// blocks from the start: whole values skipped here are mostly long, see [`skip_nested`]).
pub(crate) fn skip_container(buf: &[u8], start: usize) -> Res<usize> {
    skip_nested(buf, start, 0, 0)
}

/// Skips the rest of an object or array whose opening bracket has been read: `i` is anywhere
/// inside it at nesting level 1 (not inside a string). Returns the index after its closing
/// bracket. Such tails are mostly short: the first 64 bytes jump from structural character to
/// structural character (see [`skip_nested`]).
pub(crate) fn skip_rest(buf: &[u8], i: usize) -> Res<usize> {
    skip_nested(buf, i, 1, 64)
}

/// Exact per-byte equality: 0x80 in every byte of `w` equal to `b`, nothing elsewhere.
#[inline(always)]
fn eq_exact(w: u64, b: u8) -> u64 {
    let t = w ^ (LO * u64::from(b));
    !(((t & !HI).wrapping_add(!HI)) | t) & HI
}

/// Packs the 0x80-per-byte mask of one word into 8 bits (bit j = byte j): the multiplier has
/// bits 0, 7, .., 49, so flag 8j+7 times bit 7(7-j) lands on bit 56+j, and no two partial
/// products share a bit (no carries).
#[inline(always)]
fn pack(m: u64) -> u64 {
    m.wrapping_mul(0x0002_0408_1020_4081) >> 56
}

/// Bit masks over 64 bytes known to hold no backslash: (quotes, opening brackets, closing
/// brackets).
#[inline(always)]
fn masks64(block: &[u8]) -> (u64, u64, u64) {
    let (mut q, mut o, mut c) = (0u64, 0u64, 0u64);
    for k in 0..8 {
        let w = word(block, 8 * k);
        let x = w | (LO * 0x20);
        let sh = 8 * k as u32;
        q |= pack(eq_exact(w, b'"')) << sh;
        o |= pack(eq_exact(x, b'{')) << sh;
        c |= pack(eq_exact(x, b'}')) << sh;
    }
    (q, o, c)
}

/// Inclusive prefix XOR: bit k = XOR of bits 0..=k.
#[inline(always)]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

/// Skips until bracket depth (starting at `depth`, with `start` outside any string) returns
/// to zero; returns the index after that closing bracket.
///
/// 64-byte blocks are classified branch-free (SWAR): a prefix XOR of the quote mask marks the
/// bytes inside strings, brackets outside strings are counted with popcount, and only a block in
/// which the depth could reach zero is walked bit by bit. Blocks containing a backslash, and
/// the tail, take the byte-at-a-time path.
fn skip_nested(buf: &[u8], start: usize, depth: usize, jump: usize) -> Res<usize> {
    let n = buf.len();
    let mut i = start;
    let mut depth = depth as i64;
    // Short spans (the tail of a small object) are cheaper to jump through structural
    // character by structural character (eight bytes at a time between them, SWAR; `[`/`{` and
    // `]`/`}` found together by OR-ing 0x20 into every byte) than to classify in 64-byte
    // blocks: do that for the first `jump` bytes, at most two stops (enough for the
    // `,"z":0.0}` tails of coordinate objects; measured, more stops cost more than they save on
    // the tails of larger objects). Long spans are the other way round: the jumps mispredict
    // (citylots `properties`, 156 B: 110 ns with a 64-byte jump phase, 65 ns without). Strings
    // are skipped whole, so the block phase starts outside a string.
    let limit = (start + jump).min(n);
    let mut stops = 0;
    while i < limit && stops < 2 {
        stops += 1;
        while i + 8 <= n {
            let w = word(buf, i);
            let x = w | (LO * 0x20);
            let m = eq_mask(w, b'"') | eq_mask(x, b'{') | eq_mask(x, b'}');
            if m != 0 {
                i += (m.trailing_zeros() / 8) as usize;
                break;
            }
            i += 8;
        }
        match buf.get(i) {
            Some(b'"') => i = skip_string_fast(buf, i + 1)?,
            Some(b'{' | b'[') => {
                depth += 1;
                i += 1;
            }
            Some(b'}' | b']') => {
                depth -= 1;
                i += 1;
                if depth == 0 {
                    return Ok(i);
                }
            }
            Some(_) => i += 1,
            None => return err(n, "unterminated object or array"),
        }
    }
    let mut in_str = false;
    // Bytes before `clean_to` hold no backslash: found a window ahead at a time with `memchr`
    // (vectorised), so the block classifier need not look for escapes.
    let mut clean_to = i;
    while i + 64 <= n {
        if i + 64 > clean_to {
            let end = (i + 1024).min(n);
            clean_to = memchr::memchr(b'\\', &buf[i..end]).map_or(end, |p| i + p);
        }
        if i + 64 > clean_to {
            let end = i + 64;
            while i < end {
                if let Some(done) = scalar_step(buf, &mut i, &mut depth, &mut in_str) {
                    return Ok(done);
                }
            }
            continue;
        }
        let (q, o, c) = masks64(&buf[i..i + 64]);
        if o | c == 0 {
            // no brackets: only the string state carries over
            in_str ^= q.count_ones() & 1 == 1;
            i += 64;
            continue;
        }
        let mut inside = prefix_xor(q);
        if in_str {
            inside = !inside;
        }
        in_str = inside >> 63 == 1;
        let opens = o & !inside;
        let closes = c & !inside;
        if i64::from(closes.count_ones()) < depth {
            depth += i64::from(opens.count_ones()) - i64::from(closes.count_ones());
        } else {
            let mut m = opens | closes;
            while m != 0 {
                let b = m.trailing_zeros();
                if opens >> b & 1 == 1 {
                    depth += 1;
                } else {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(i + b as usize + 1);
                    }
                }
                m &= m - 1;
            }
        }
        i += 64;
    }
    while i < n {
        if let Some(done) = scalar_step(buf, &mut i, &mut depth, &mut in_str) {
            return Ok(done);
        }
    }
    err(n, "unterminated object or array")
}

/// One byte of the scalar skip; returns the end when the depth reaches zero.
#[inline(always)]
fn scalar_step(buf: &[u8], i: &mut usize, depth: &mut i64, in_str: &mut bool) -> Option<usize> {
    let b = buf[*i];
    if *in_str {
        match b {
            b'\\' => *i += 1,
            b'"' => *in_str = false,
            _ => {}
        }
    } else {
        match b {
            b'"' => *in_str = true,
            b'{' | b'[' => *depth += 1,
            b'}' | b']' => {
                *depth -= 1;
                if *depth == 0 {
                    return Some(*i + 1);
                }
            }
            _ => {}
        }
    }
    *i += 1;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte-at-a-time oracle for the block skip.
    fn skip_oracle(buf: &[u8], start: usize) -> Option<usize> {
        let (mut depth, mut in_str, mut i) = (0i64, false, start);
        while i < buf.len() {
            if let Some(d) = scalar_step(buf, &mut i, &mut depth, &mut in_str) {
                return Some(d);
            }
        }
        None
    }

    /// Valid JSON whose strings hold brackets, quotes-adjacent characters and escapes, at every
    /// alignment, in containers long enough for the block phase.
    #[test]
    fn block_skip_exact_on_tricky_strings() {
        let strings = [
            r#""{z[Z}|]|""#,
            r##""#tag""##,
            r##""a\"#\\""##,
            r#""zz{zz""#,
            r#""|]|}""#,
        ];
        for pad in 0..70 {
            for s in strings {
                let mut doc = String::from("[");
                doc.push_str(&" ".repeat(pad));
                for k in 0..12 {
                    doc.push_str(&format!(r#"{{"k{k}":{s},"n":[{k},{s}]}},"#));
                }
                doc.push_str(r#"{"z":"|"}]"#);
                doc.push_str(",1]");
                let buf = doc.as_bytes();
                assert_eq!(
                    skip_container(buf, 0).ok(),
                    skip_oracle(buf, 0),
                    "pad {pad} {s}"
                );
            }
        }
    }

    /// The fast decimal path gives exactly what the standard parser gives.
    #[test]
    fn plain_decimals_parse_exactly() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut toks: Vec<String> = [
            "0",
            "-0",
            "0.0",
            "-0.0",
            "1",
            "300",
            "300.0",
            "0.1",
            "0.3",
            "-122.41600944012424",
            "37.729900216217324",
            "9007199254740992",
            "9007199254740993",
            "0.0000000000000000000001",
            "123456789012345.6",
            "1.7976931348623157",
            "00.5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for _ in 0..20000 {
            let digits = 1 + next() % 17;
            let mut t: String = (0..digits)
                .map(|_| char::from(b'0' + (next() % 10) as u8))
                .collect();
            if next() % 3 > 0 {
                let at = (next() % digits) as usize;
                t.insert(at.max(1), '.');
            }
            if next() % 2 == 0 {
                t.insert(0, '-');
            }
            toks.push(t);
        }
        for t in toks {
            let want: f64 = t.parse().unwrap();
            let got = parse_number(t.as_bytes());
            assert_eq!(got.to_bits(), want.to_bits(), "{t}");
        }
    }

    #[test]
    fn pack_gathers_every_flag_pattern() {
        for bits in 0u64..256 {
            let m = (0..8).fold(0u64, |m, j| m | ((bits >> j & 1) << (8 * j + 7)));
            assert_eq!(pack(m), bits);
        }
    }

    #[test]
    fn block_skip_matches_oracle() {
        let pieces: &[&[u8]] = &[
            b"{",
            b"}",
            b"[",
            b"]",
            b"\"",
            b"\\\\",
            b"\\\"",
            b"x",
            b"12345678",
            b",",
            b":",
            b"\"]}\"",
            b"{\"x\":-122.42916360922355,\"y\":37.7299,\"z\":0.0}",
        ];
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..3000 {
            let mut doc = b"[".to_vec();
            let len = (seed % 200) as usize;
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                doc.extend_from_slice(pieces[(seed % pieces.len() as u64) as usize]);
            }
            doc.extend_from_slice(b"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]");
            let want = skip_oracle(&doc, 0);
            assert_eq!(
                skip_container(&doc, 0).ok(),
                want,
                "{}",
                String::from_utf8_lossy(&doc)
            );
        }
    }

    #[test]
    fn lexing() {
        assert_eq!(skip_value(br#"{"a":[1,{"b":"}"}]} x"#, 0).unwrap(), 19);
        assert_eq!(skip_value(br#""a\"b" "#, 0).unwrap(), 6);
        assert!(skip_value(br#"{"a":[1"#, 0).is_err());
        let long = br#"{"key_one":"a long string value \" with quote","k":[[1,2,3],{"x":"]}"}],"z":null} "#;
        assert_eq!(skip_value(long, 0).unwrap(), long.len() - 1);
        assert_eq!(skip_value(br#""0123456789\"0123456789"x"#, 0).unwrap(), 24);
        assert!(skip_value(br#""0123456789abcdefgh"#, 0).is_err());
        assert_eq!(string_end(b"abcdefghijklmn\"", 0).unwrap(), (14, false));
        assert_eq!(string_end(br#"abcdefgh\"ijklmn" "#, 0).unwrap(), (16, true));
        assert!(string_end(b"abcdefghij\x01klmn\"", 0).is_err());
        assert!(string_end(b"abc\x1fdefghijklmn\"", 0).is_err());
        assert!(string_end(b"abcdefghijklmn", 0).is_err());
        assert_eq!(
            string_end("\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\"".as_bytes(), 0).unwrap(),
            (10, false)
        );
        assert_eq!(number_end(b"-1.5e+3,", 0).unwrap(), 7);
        assert!(number_end(b"01", 0).is_ok_and(|e| e == 1));
        assert!(number_end(b"1.", 0).is_err());
        assert!(number_end(b"-", 0).is_err());
        let mut out = Vec::new();
        unescape(br"a\u00e9\n\ud83d\ude00", 0, &mut out).unwrap();
        assert_eq!(std::str::from_utf8(&out).unwrap(), "a\u{e9}\n\u{1F600}");
        assert!(unescape(br"\ud83d", 0, &mut out).is_err());
    }
}
