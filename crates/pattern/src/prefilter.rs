//! A cheap necessary-condition check run before the scan: can any positive condition of any
//! rule be satisfied by this event at all?
//!
//! Every sub-rule that has a positive predicate needs a leaf value, under the predicate's last
//! key, that satisfies one of its conditions. In an event without a single backslash, a key `K`
//! appears literally as `"K"` followed by optional whitespace and `:` (in JSON a string followed
//! by `:` is a key, and no string can contain an unescaped `"`), and a string value's raw bytes
//! are its value. `"K"` can also occur where it is no string (from the closing quote of one
//! string to the opening quote of the next, as `","` in `"x",","`), so every occurrence is
//! examined, overlapping ones included. So the prefilter finds every `"K"` for the last keys
//! of all indexed fields with a vectorised substring search and evaluates the scalar after it
//! against those fields' indexes. If no occurrence can satisfy anything, no rule matches and the scan is skipped.
//!
//! It is only an early "no": any doubt (a backslash anywhere, a value that is an array or an
//! object, a field with `anything-but`, something malformed next to a key) sends the event to
//! the full scan. Rule sets with a sub-rule made only of `exists: false` have no prefilter.
//! Searching whole events costs about as much as scanning them when most events pass, so the
//! matcher switches it off for a while when it rejects too few events (see `Scratch`).

use crate::index::FieldIndex;
use crate::json;
use memchr::memmem::Finder;

/// Key finders for all indexed fields.
#[derive(Debug)]
pub(crate) struct Prefilter {
    /// (finder of `"K"`, indexes of the fields whose path ends with key `K`).
    keys: Vec<(Finder<'static>, Vec<u32>)>,
}

impl Prefilter {
    /// `fields`: (last key of the field's path, field index).
    pub(crate) fn new(fields: impl IntoIterator<Item = (Vec<u8>, u32)>) -> Self {
        let mut keys: Vec<(Vec<u8>, Vec<u32>)> = Vec::new();
        for (key, f) in fields {
            match keys.iter_mut().find(|(k, _)| *k == key) {
                Some((_, fs)) => fs.push(f),
                None => keys.push((key, vec![f])),
            }
        }
        Prefilter {
            keys: keys
                .into_iter()
                .map(|(k, fs)| {
                    let mut needle = Vec::with_capacity(k.len() + 2);
                    needle.push(b'"');
                    needle.extend_from_slice(&k);
                    needle.push(b'"');
                    (Finder::new(&needle).into_owned(), fs)
                })
                .collect(),
        }
    }

    /// Number of distinct keys searched per event.
    pub(crate) fn keys(&self) -> usize {
        self.keys.len()
    }

    /// Whether no rule can match `ev` (certain); `false` means "scan it". `first` is the key
    /// to try first (the one that let the previous event through, as events of one stream tend
    /// to look alike); on return it is the key that let this one through, if any.
    pub(crate) fn rejects(
        &self,
        ev: &[u8],
        fields: &[FieldIndex],
        fold: &mut Vec<u8>,
        first: &mut usize,
    ) -> bool {
        // First, and over the whole event: its vector loads also bring in every cache line of
        // the event at once, which the key searches and a scan then find ready (measured: doing
        // this check last made equals-ignore-case ~20% slower).
        if memchr::memchr(b'\\', ev).is_some() {
            return false;
        }
        let n = self.keys.len();
        let start = if *first < n { *first } else { 0 };
        for k in (start..n).chain(0..start) {
            let (finder, fids) = &self.keys[k];
            if Self::possible(ev, finder, fids, fields, fold) {
                *first = k;
                return false;
            }
        }
        true
    }

    /// Whether some occurrence of the finder's key in `ev` could satisfy one of `fids`.
    fn possible(
        ev: &[u8],
        finder: &Finder<'_>,
        fids: &[u32],
        fields: &[FieldIndex],
        fold: &mut Vec<u8>,
    ) -> bool {
        let after = finder.needle().len();
        // Overlapping occurrences too: `"K"` can also appear across the end of one string and
        // the start of the next (`"x",","` holds `","`), and that false occurrence overlaps the
        // real key that follows it; a non-overlapping search would skip the real key.
        let mut from = 0;
        while let Some(off) = finder.find(&ev[from..]) {
            let pos = from + off;
            from = pos + 1;
            let mut i = json::skip_ws(ev, pos + after);
            match ev.get(i) {
                Some(b':') => {}
                // a string value, not a key
                Some(b',' | b']' | b'}') => continue,
                // malformed next to a key: let the scan report it
                _ => return true,
            }
            i = json::skip_ws(ev, i + 1);
            let possible = match ev.get(i) {
                Some(b'"') => match memchr::memchr(b'"', &ev[i + 1..]) {
                    Some(len) => {
                        let raw = &ev[i + 1..i + 1 + len];
                        raw.iter().any(|&b| b < 0x20)
                            || fids
                                .iter()
                                .any(|&f| fields[f as usize].could_match_str(raw, fold))
                    }
                    None => true,
                },
                Some(b'-' | b'0'..=b'9') => match json::number_end(ev, i) {
                    Ok(e) => fids
                        .iter()
                        .any(|&f| fields[f as usize].could_match_num(&ev[i..e])),
                    Err(_) => true,
                },
                Some(&b) if matches!(b, b't' | b'f' | b'n') => {
                    let (lit, text): (Option<bool>, &[u8]) = match b {
                        b't' => (Some(true), b"true"),
                        b'f' => (Some(false), b"false"),
                        _ => (None, b"null"),
                    };
                    json::literal_end(ev, i, text).is_err()
                        || fids
                            .iter()
                            .any(|&f| fields[f as usize].could_match_literal(lit))
                }
                _ => true,
            };
            if possible {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use crate::{Matcher, Pattern, matches_value};

    /// The prefilter only ever says "no" when the reference semantics say no: tricky layouts
    /// (whitespace, keys that also occur as values, the key at other paths, array
    /// and object values, escapes, literals, malformed input next to a key).
    #[test]
    fn agrees_with_reference_on_tricky_events() {
        let patterns = [
            r#"{"p":{"s":[{"prefix":"AC"}]}}"#,
            r#"{"p":{"s":[{"suffix":"ON"}]}}"#,
            r#"{"p":{"t":[{"equals-ignore-case":"st"}]}}"#,
            r#"{"q":[1.5, true, null]}"#,
            r#"{"p":{"s":["x y"]}, "r":[{"numeric":[">", 3]}]}"#,
        ];
        let events = [
            r#"{"p":{"s":"ACME"}}"#,
            r#"{"p" : { "s" :  "ACME" } }"#,
            r#"{"p":{"s":"BX","x":"s"},"s":"ACME"}"#,
            r#"{"s":"ACME","p":{"s":"BX"}}"#,
            r#"{"p":{"s":["B","ACME"]}}"#,
            r#"{"p":[{"s":"ACME"}]}"#,
            r#"{"p":{"s":"\u0041CME"}}"#,
            r#"{"p":{"\u0073":"ACME"}}"#,
            r#"{"p":{"s":"xACx"}}"#,
            r#"{"p":{"s":"MASON"}}"#,
            r#"{"p":{"t":"ST"}}"#,
            r#"{"p":{"t":"sT "}}"#,
            r#"{"q":1.50}"#,
            r#"{"q":15e-1}"#,
            r#"{"q":true}"#,
            r#"{"q":null}"#,
            r#"{"q":false}"#,
            r#"{"q":"1.5"}"#,
            r#"{"p":{"s":"x y"},"r":4}"#,
            r#"{"p":{"s":"x y"},"r":3}"#,
            r#"{"a":"p","b":["s","q"],"c":{"x":"s"}}"#,
            r#"{"p":{"s":{"s":"ACME"}}}"#,
        ];
        let m = Matcher::<usize>::new();
        let parsed: Vec<Pattern> = patterns
            .iter()
            .map(|p| Pattern::parse(p).unwrap())
            .collect();
        m.add_patterns(patterns.iter().copied().enumerate())
            .unwrap();
        // Twice the prefilter window, so the check runs on every event at least once.
        for _ in 0..2 {
            for ev in events.iter().cycle().take(2 * 64) {
                let v: serde_json::Value = serde_json::from_str(ev).unwrap();
                let want: Vec<usize> = (0..parsed.len())
                    .filter(|&i| matches_value(&parsed[i], &v))
                    .collect();
                let mut got = m.matches_for_event(ev.as_bytes()).unwrap();
                got.sort_unstable();
                assert_eq!(got, want, "{ev}");
            }
        }
        // Malformed right after a referenced key: still reported.
        for bad in [
            &br#"{"p":{"s" "ACME"}}"#[..],
            br#"{"q":01}"#,
            br#"{"q":tru}"#,
        ] {
            assert!(
                m.matches_for_event(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
