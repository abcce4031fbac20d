//! Differential tests of the PutRecordBatch fast path against the generic path (`sluice_wire`
//! parsing and validation, then `ops::batch_records`): whatever the fast path accepts, the
//! generic path accepts with the same stream name and the same records; the usual forms are
//! accepted by both; nothing panics.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use proptest::prelude::*;
use serde_json::Value;

use super::decode_put_record_batch;
use crate::model::decode_chunk;

/// The generic path's outcome: the stream name and records, or the error code.
fn generic(body: &[u8]) -> Result<(String, Vec<Vec<u8>>), String> {
    let (_, _, input) = sluice_wire::parse_request(
        Some("application/x-amz-json-1.1"),
        Some("Firehose_20150804.PutRecordBatch"),
        body,
    )
    .map_err(|e| e.code.to_string())?;
    let name = input["DeliveryStreamName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let records = crate::ops::batch_records(&input).map_err(|e| e.code.to_string())?;
    Ok((name, records))
}

/// The fast path's outcome, decoded back from the chunk.
fn fast(body: &[u8]) -> Option<(String, Vec<Vec<u8>>)> {
    let d = decode_put_record_batch(body)?;
    let name = d.stream.to_string();
    let chunk = d.chunk.finish(1);
    let records = decode_chunk(&chunk)
        .expect("the fast path builds valid chunks")
        .records
        .iter()
        .map(|r| r.to_vec())
        .collect();
    Some((name, records))
}

/// The property every body must have: the fast path accepts only what the generic path
/// accepts, with the same result.
fn check_sound(body: &[u8]) -> Result<(), TestCaseError> {
    if let Some(f) = fast(body) {
        let g = generic(body);
        prop_assert_eq!(
            g.as_ref().ok(),
            Some(&f),
            "fast path accepted {:?}, generic path says {:?}",
            String::from_utf8_lossy(&body[..body.len().min(300)]),
            g.as_ref().err()
        );
    }
    Ok(())
}

/// A body in the usual form, with the given whitespace between tokens.
fn body_of(name: &str, data: &[String], ws: &str, records_first: bool) -> String {
    let recs: Vec<String> = data
        .iter()
        .map(|d| format!("{{{ws}\"Data\"{ws}:{ws}\"{d}\"{ws}}}"))
        .collect();
    let records = format!(
        "\"Records\"{ws}:{ws}[{ws}{}{ws}]",
        recs.join(&format!(",{ws}"))
    );
    let stream = format!("\"DeliveryStreamName\"{ws}:{ws}\"{name}\"");
    let (a, b) = if records_first {
        (records, stream)
    } else {
        (stream, records)
    };
    format!("{ws}{{{ws}{a}{ws},{ws}{b}{ws}}}{ws}")
}

fn encode(bytes: &[u8], padded: bool) -> String {
    if padded {
        STANDARD.encode(bytes)
    } else {
        STANDARD_NO_PAD.encode(bytes)
    }
}

#[test]
fn the_usual_body_is_decoded_into_a_chunk() {
    let data: Vec<String> = (0..500u32)
        .map(|i| STANDARD.encode(vec![i as u8; 1024]))
        .collect();
    let body = serde_json::json!({
        "DeliveryStreamName": "bench",
        "Records": data.iter().map(|d| serde_json::json!({"Data": d})).collect::<Vec<Value>>(),
    })
    .to_string();
    let f = fast(body.as_bytes()).expect("the usual form takes the fast path");
    assert_eq!(f.0, "bench");
    assert_eq!(f.1.len(), 500);
    assert_eq!(f.1[7], vec![7u8; 1024]);
    assert_eq!(Ok(f), generic(body.as_bytes()));
}

#[test]
fn edge_cases_agree_with_the_generic_path() {
    let data_cases = [
        "",
        "QQ==",
        "QQ",
        "QQ=",
        "QQ===",
        "Q",
        "Q===",
        "QUI=",
        "QUI",
        "QUJD",
        "QR==",
        "QR",
        "QUJ=",
        "=",
        "==",
        "QQ=A",
        "QUJD=",
        "QU=D",
        "QUJD\\n",
        "QU D",
        "QUJD\\u0041",
        "é",
        "QUJDRA==",
        "QUJDRA",
        "QUJDRA=",
        "_-==",
    ];
    for d in data_cases {
        let body = format!(r#"{{"DeliveryStreamName":"s","Records":[{{"Data":"{d}"}}]}}"#);
        let (f, g) = (fast(body.as_bytes()), generic(body.as_bytes()));
        if let Some(f) = &f {
            assert_eq!(g.as_ref(), Ok(f), "data {d:?}");
        }
        // Padding and alphabet are the only differences between these bodies: whatever the
        // generic path accepts, the fast path does too.
        if !d.contains('\\') {
            assert_eq!(f.is_some(), g.is_ok(), "data {d:?}: generic {g:?}");
        }
    }
    let bodies = [
        "",
        "{}",
        "[]",
        "null",
        r#"{"DeliveryStreamName":"s"}"#,
        r#"{"Records":[{"Data":"QQ=="}]}"#,
        r#"{"DeliveryStreamName":"s","Records":[]}"#,
        r#"{"DeliveryStreamName":"s","Records":null}"#,
        r#"{"DeliveryStreamName":"s","Records":[null]}"#,
        r#"{"DeliveryStreamName":"s","Records":[{}]}"#,
        r#"{"DeliveryStreamName":"s","Records":[{"Data":null}]}"#,
        r#"{"DeliveryStreamName":"s","Records":[{"Data":"QQ==","Data":"QQ=="}]}"#,
        r#"{"DeliveryStreamName":"s","Records":[{"Data":"QQ==","X":1}]}"#,
        r#"{"DeliveryStreamName":"s","Records":[{"Data":1}]}"#,
        r#"{"DeliveryStreamName":"s","Records":{"Data":"QQ=="}}"#,
        r#"{"DeliveryStreamName":"s","DeliveryStreamName":"t","Records":[{"Data":"QQ=="}]}"#,
        r#"{"DeliveryStreamName":"","Records":[{"Data":"QQ=="}]}"#,
        r#"{"DeliveryStreamName":"a b","Records":[{"Data":"QQ=="}]}"#,
        r#"{"DeliveryStreamName":"a\u0062","Records":[{"Data":"QQ=="}]}"#,
        r#"{"DeliveryStreamName":1,"Records":[{"Data":"QQ=="}]}"#,
        r#"{"DeliveryStreamName":"s","Records":[{"Data":"QQ=="}],"Other":true}"#,
        r#"{"DeliveryStreamName":"s","Records":[{"Data":"QQ=="}]} x"#,
        r#"{"DeliveryStreamName":"s","Records":[{"Data":"QQ=="}]}}"#,
        r#"{"DeliveryStreamName":"s","Records":[{"Data":"QQ=="},]}"#,
        r#"{"DeliveryStreamName":"s","Records":[{"Data":"QQ=="}],}"#,
        r#"{"DeliveryStreamName":"s","Records":[{"Data":"QQ=="}]"#,
        r#"{"DeliveryStreamName":"s","Records":[{"Data":"QQ=="#,
        r#"{"DeliveryStreamName":"s""Records":[{"Data":"QQ=="}]}"#,
        "{\"DeliveryStreamName\":\"s\",\"Records\":[{\"Data\":\"QQ==\"}]}\u{0}",
        "\u{feff}{\"DeliveryStreamName\":\"s\",\"Records\":[{\"Data\":\"QQ==\"}]}",
    ];
    for b in bodies {
        check_sound(b.as_bytes()).unwrap();
    }
    assert!(fast(br#" {"Records" : [ {"Data":"QQ=="} ] , "DeliveryStreamName":"s"} "#).is_some());
    let name64 = "n".repeat(64);
    let ok = format!(r#"{{"DeliveryStreamName":"{name64}","Records":[{{"Data":""}}]}}"#);
    assert!(fast(ok.as_bytes()).is_some());
    let long = format!(r#"{{"DeliveryStreamName":"{name64}x","Records":[{{"Data":""}}]}}"#);
    assert!(fast(long.as_bytes()).is_none() && generic(long.as_bytes()).is_err());
}

#[test]
fn limits_are_the_generic_paths() {
    let rec = |n: usize| STANDARD.encode(vec![b'r'; n]);
    // 500 records pass, 501 do not.
    for (count, ok) in [(500usize, true), (501, false)] {
        let data = vec![rec(1); count];
        let body = body_of("s", &data, "", false);
        assert_eq!(fast(body.as_bytes()).is_some(), ok, "{count} records");
        assert_eq!(generic(body.as_bytes()).is_ok(), ok, "{count} records");
    }
    // A record of 1,024,000 bytes passes, one more byte does not.
    for (n, ok) in [(1_024_000usize, true), (1_024_001, false)] {
        let body = body_of("s", &[rec(n)], "", false);
        assert_eq!(fast(body.as_bytes()).is_some(), ok, "record of {n} bytes");
        assert_eq!(generic(body.as_bytes()).is_ok(), ok, "record of {n} bytes");
    }
    // 4 MiB in total pass, one byte more does not (InvalidArgumentException on the generic
    // path, after authorization).
    let big = rec(1_000_000);
    let four_mib = 4 * 1024 * 1024;
    let mut data = vec![big.clone(); 4];
    data.push(rec(four_mib - 4_000_000));
    let body = body_of("s", &data, "", false);
    assert!(fast(body.as_bytes()).is_some());
    assert!(generic(body.as_bytes()).is_ok());
    data.push(rec(1));
    let body = body_of("s", &data, "", false);
    assert!(fast(body.as_bytes()).is_none());
    assert_eq!(
        generic(body.as_bytes()).unwrap_err(),
        "InvalidArgumentException"
    );
}

#[test]
fn the_response_is_the_generic_paths_bytes() {
    for n in [1usize, 2, 500] {
        let responses: Vec<Value> = (0..n)
            .map(|i| serde_json::json!({"RecordId": crate::ops::record_id(12345, i)}))
            .collect();
        let generic = serde_json::to_vec(&serde_json::json!({
            "FailedPutCount": 0, "Encrypted": false, "RequestResponses": responses
        }))
        .unwrap();
        assert_eq!(crate::ops::batch_response(12345, n), generic);
    }
}

/// A stream name: usually valid, sometimes empty, too long or with other characters.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-zA-Z0-9_.-]{1,64}",
        1 => "[a-zA-Z0-9_.-]{0,70}",
        1 => "[a-z /é\\\\\"]{1,5}",
    ]
}

/// Record data as it appears in the body: base64 of random bytes, padded or not, sometimes
/// damaged.
fn data() -> impl Strategy<Value = String> {
    let clean = (proptest::collection::vec(any::<u8>(), 0..40), any::<bool>())
        .prop_map(|(b, padded)| encode(&b, padded));
    prop_oneof![
        8 => clean.clone(),
        2 => (clean, any::<prop::sample::Index>(), "[=A-Za-z0-9+/_ -]{1,3}").prop_map(
            |(s, at, junk)| {
                let mut s = s;
                let i = if s.is_empty() { 0 } else { at.index(s.len() + 1) };
                let i = (0..=i).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                s.insert_str(i, &junk);
                s
            }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Usual-form bodies: both paths agree on accepting them and on what they hold.
    #[test]
    fn usual_bodies_agree(
        name in name(),
        data in proptest::collection::vec(data(), 0..8),
        ws in "[ \t\r\n]{0,2}",
        records_first in any::<bool>(),
    ) {
        let body = body_of(&name, &data, &ws, records_first);
        let (f, g) = (fast(body.as_bytes()), generic(body.as_bytes()));
        match (&f, &g) {
            (Some(f), Ok(g)) => prop_assert_eq!(f, g),
            (Some(f), Err(e)) => prop_assert!(false, "fast path accepted {f:?}, generic {e}"),
            // The fast path declines only what it cannot hold: names outside the usual
            // characters (which the generic path may or may not accept).
            (None, Ok(_)) => prop_assert!(
                name.bytes().any(|c| !(c.is_ascii_alphanumeric() || b"_.-".contains(&c))),
                "fast path declined a valid usual body: {body}"
            ),
            (None, Err(_)) => {}
        }
    }

    /// Damaged bodies (bytes replaced, inserted or removed): whatever the fast path still
    /// accepts, the generic path accepts with the same result.
    #[test]
    fn damaged_bodies_are_never_accepted_differently(
        name in name(),
        data in proptest::collection::vec(data(), 1..4),
        edits in proptest::collection::vec(
            (any::<prop::sample::Index>(), 0u8..3, prop::sample::select(
                b"\"\\{}[],: \t=AZaz09+/-_.nul\x00\x7f\xc3\xa9e1".to_vec())),
            1..4,
        ),
    ) {
        let mut body = body_of(&name, &data, "", false).into_bytes();
        for (at, kind, byte) in edits {
            let i = at.index(body.len() + 1);
            match kind {
                0 if i < body.len() => body[i] = byte,
                1 => body.insert(i, byte),
                _ if i < body.len() => { body.remove(i); }
                _ => {}
            }
        }
        check_sound(&body)?;
    }

    /// Arbitrary bytes never panic and are never accepted differently.
    #[test]
    fn arbitrary_bytes_are_safe(body in proptest::collection::vec(any::<u8>(), 0..200)) {
        check_sound(&body)?;
    }
}
