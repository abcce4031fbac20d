//! The `sluice pattern` subcommand functions: exit codes, output shapes, file arguments.

use sluice_pattern::cli::{run_match, run_test};
use std::io::Write;

fn test(p: &str, e: &str) -> (i32, String) {
    let mut out = Vec::new();
    let code = run_test(p, e, &mut out);
    (code, String::from_utf8(out).unwrap())
}

fn temp(name: &str, data: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-pattern-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

#[test]
fn test_subcommand_exit_codes_and_reasons() {
    let (code, out) = test(r#"{"source":["aws.ec2"]}"#, r#"{"source":"aws.ec2"}"#);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("match\n"), "{out}");

    let (code, out) = test(
        r#"{"detail":{"state":[{"prefix":"run"}]}}"#,
        r#"{"detail":{"state":"stopped"}}"#,
    );
    assert_eq!(code, 1);
    assert!(
        out.starts_with("no match\n")
            && out.contains("detail.state")
            && out.contains("\"stopped\""),
        "{out}"
    );

    let (code, out) = test(r#"{"a":[]}"#, r#"{"a":1}"#);
    assert_eq!(code, 2);
    assert!(
        out.contains("invalid pattern") && out.contains("empty arrays"),
        "{out}"
    );

    let (code, out) = test(r#"{"a":["x"]}"#, r#"{"a":"#);
    assert_eq!(code, 2);
    assert!(out.contains("invalid event"), "{out}");

    let (code, _) = test(r#"{"a":["x"]}"#, r#"["x"]"#);
    assert_eq!(code, 2);

    let p = temp("pattern.json", br#"{"n":[{"numeric":[">",1]}]}"#);
    let e = temp("event.json", br#"{"n":3.0e2}"#);
    let (code, out) = test(&format!("@{}", p.display()), &format!("@{}", e.display()));
    assert_eq!(code, 0, "{out}");
    let (code, _) = test("@/nonexistent/pattern.json", "{}");
    assert_eq!(code, 2);
}

#[test]
fn match_subcommand_counts() {
    let rules = temp(
        "rules.json",
        br#"{"ec2": {"source":["aws.ec2"]}, "big": [{"n":[{"numeric":[">",10]}]}, {"source":["aws.s3"]}], "none": {"x":["y"]}}"#,
    );
    let lines = "{\"source\":\"aws.ec2\",\"n\":1}\n{\"source\":\"aws.s3\",\"n\":1}\n\n{\"source\":\"aws.ec2\",\"n\":50}\r\n";
    let plain = temp("events.jsonl", lines.as_bytes());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(lines.as_bytes()).unwrap();
    let gzipped = temp("events.jsonl.gz", &gz.finish().unwrap());

    for events in [&plain, &gzipped] {
        let mut out = Vec::new();
        assert_eq!(run_match(&rules, events, true, &mut out).unwrap(), 0);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["counts"],
            serde_json::json!({"ec2": 2, "big": 2, "none": 0})
        );
        assert_eq!(v["events"], 3);
        assert!(v["events_per_second"].as_f64().unwrap() >= 0.0);
    }
    let mut out = Vec::new();
    run_match(&rules, &plain, false, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("ec2: 2\n") && text.contains("big: 2\n") && text.contains("events: 3\n"),
        "{text}"
    );

    let bad_rules = temp("bad-rules.json", br#"{"r": {"a": "x"}}"#);
    assert!(
        run_match(&bad_rules, &plain, false, &mut Vec::new())
            .unwrap_err()
            .contains("invalid pattern")
    );
    let bad_events = temp(
        "bad-events.jsonl",
        b"{\"source\":\"aws.ec2\"}\n{\"source\":\n",
    );
    let err = run_match(&rules, &bad_events, false, &mut Vec::new()).unwrap_err();
    assert!(err.contains("line 2"), "{err}");
}
