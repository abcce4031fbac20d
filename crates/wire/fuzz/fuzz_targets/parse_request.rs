//! Fuzzes `sluice_wire::parse_request` over every JSON operation of every shipped model.
//!
//! Input layout: byte 0 picks the target (an operation, or a few malformed targets), byte 1
//! picks the content type, the rest is the body. Beyond "no panic", it checks the invariants
//! the server relies on: only the three framing/validation error codes, status 400, a
//! well-formed `N validation error(s) detected` header, and that a success returns an object.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

static TARGETS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut out = vec![
        String::new(),
        "TrentService".into(),
        "TrentService.".into(),
        ".Encrypt".into(),
        "Nope.Encrypt".into(),
    ];
    for name in sluice_wire::SERVICE_NAMES {
        let svc = sluice_wire::service(name).unwrap();
        if svc.protocol() == "json" {
            for op in svc.operations() {
                out.push(format!("{}.{}", svc.target_prefix(), op.name()));
            }
        }
    }
    out
});

const CONTENT_TYPES: &[Option<&str>] = &[
    Some("application/x-amz-json-1.1"),
    Some("application/x-amz-json-1.0"),
    Some("application/json"),
    None,
];

fuzz_target!(|data: &[u8]| {
    let (Some(&t), Some(&c)) = (data.first(), data.get(1)) else {
        return;
    };
    let body = &data[2..];
    let target = &TARGETS[t as usize % TARGETS.len()];
    // Mostly the right content type, so the body gets parsed.
    let ct = if c < 0xF0 {
        CONTENT_TYPES[0]
    } else {
        CONTENT_TYPES[c as usize % CONTENT_TYPES.len()]
    };
    let target = if t == 0xFF {
        None
    } else {
        Some(target.as_str())
    };
    match sluice_wire::parse_request(ct, target, body) {
        Ok((svc, op, value)) => {
            assert!(value.is_object());
            assert!(svc.operation(op.name()).is_some());
            let err = sluice_core::AwsError::validation("x");
            let _ =
                serde_json::from_slice::<serde_json::Value>(&sluice_wire::error_body(svc, &err))
                    .expect("error body is JSON");
        }
        Err(e) => {
            assert_eq!(e.status, 400);
            match e.code.as_ref() {
                "UnknownOperationException" | "SerializationException" => {}
                "ValidationException" => {
                    let n: usize = e.message.split(' ').next().unwrap().parse().unwrap();
                    assert!((1..=sluice_wire::MAX_REPORTED).contains(&n));
                }
                other => panic!("unexpected code {other}"),
            }
        }
    }
});
