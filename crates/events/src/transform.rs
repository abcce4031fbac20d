//! Target input: `Input`, `InputPath` and `InputTransformer` (spec §3.5). Pure: no I/O.
//!
//! Paths use EventBridge's own dialect, not full JSONPath: `$` is the event, `.name` selects a
//! member (any characters but `.` and `[`, so `$.detail-type` works), `[n]` selects an array
//! element, `['name']` selects a member whose name contains dots. A path that does not resolve
//! yields no value.
//!
//! Templates: a placeholder is `<name>` where `name` is an `InputPathsMap` key or a reserved
//! variable (`aws.events.rule-arn`, `aws.events.rule-name`, `aws.events.event.ingestion-time`,
//! `aws.events.event`, `aws.events.event.json`). Other `<...>` text is literal. The renderer
//! tracks whether it is inside a JSON string literal of the template:
//! - outside a string (a JSON value position), a placeholder becomes the JSON text of its value
//!   (strings quoted and escaped, objects and arrays as JSON); a missing value becomes `null`;
//! - inside a string, it becomes the raw text (a string's characters without quotes or
//!   escaping, as AWS: "EventBridge doesn't escape values extracted by Input Path"; other
//!   values as JSON text); a missing value becomes empty.
//!
//! [`validate_template`] is what PutTargets checks: every placeholder defined, no placeholder
//! used as an object key, the two whole-event variables only in value positions, and paths and
//! names well formed.

use serde_json::Value;

/// The reserved variable names.
pub const RESERVED: [&str; 5] = [
    "aws.events.rule-arn",
    "aws.events.rule-name",
    "aws.events.event.ingestion-time",
    "aws.events.event",
    "aws.events.event.json",
];

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// An object member.
    Key(String),
    /// An array element.
    Index(usize),
}

/// Parses an EventBridge path (`$`, `$.detail.x`, `$.detail.list[0]`, `$['a.b']`).
pub fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    let rest = path
        .strip_prefix('$')
        .ok_or_else(|| format!("path {path:?} must start with $"))?;
    let b = rest.as_bytes();
    let mut steps = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'.' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && b[j] != b'.' && b[j] != b'[' {
                    j += 1;
                }
                if j == start {
                    return Err(format!("path {path:?} has an empty member name"));
                }
                steps.push(Step::Key(rest[start..j].to_string()));
                i = j;
            }
            b'[' => {
                let close = rest[i..]
                    .find(']')
                    .map(|k| i + k)
                    .ok_or_else(|| format!("path {path:?} has an unclosed ["))?;
                let inner = &rest[i + 1..close];
                if let Some(q) = inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
                    steps.push(Step::Key(q.to_string()));
                } else {
                    let n: usize = inner
                        .parse()
                        .map_err(|_| format!("path {path:?} has an invalid index [{inner}]"))?;
                    steps.push(Step::Index(n));
                }
                i = close + 1;
            }
            _ => return Err(format!("path {path:?} is not valid at offset {}", i + 1)),
        }
    }
    Ok(steps)
}

/// The value at `steps` in `v`, if any.
pub fn select<'v>(v: &'v Value, steps: &[Step]) -> Option<&'v Value> {
    let mut cur = v;
    for s in steps {
        cur = match (s, cur) {
            (Step::Key(k), Value::Object(m)) => m.get(k)?,
            (Step::Index(n), Value::Array(a)) => a.get(*n)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// How a target turns an event into its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSpec {
    /// The whole event.
    Event,
    /// A constant JSON text.
    Constant(String),
    /// The part of the event at a path.
    Path(String),
    /// A transformer: named paths and a template.
    Transformer {
        /// Name -> path.
        paths: Vec<(String, String)>,
        /// The template.
        template: String,
    },
}

/// Facts about the event being delivered that reserved variables name.
#[derive(Debug, Clone, Copy)]
pub struct Reserved<'a> {
    /// The rule's ARN.
    pub rule_arn: &'a str,
    /// The rule's name.
    pub rule_name: &'a str,
    /// Ingestion time, ISO 8601 (`2024-01-01T00:00:00Z`).
    pub ingestion_time: &'a str,
}

/// Whether `name` is a valid placeholder name.
fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')
}

/// A token of a template.
#[derive(Debug, PartialEq)]
enum Tok<'t> {
    Text(&'t str),
    Placeholder {
        name: &'t str,
        in_string: bool,
        as_key: bool,
    },
}

fn tokenize(t: &str) -> Vec<Tok<'_>> {
    let b = t.as_bytes();
    let mut out = Vec::new();
    let mut in_string = false;
    let mut lit = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if in_string && c == b'\\' {
            i += 2;
            continue;
        }
        if c == b'"' {
            in_string = !in_string;
            i += 1;
            continue;
        }
        if c == b'<' {
            let mut j = i + 1;
            while j < b.len() && is_name_char(b[j]) {
                j += 1;
            }
            if j > i + 1 && j < b.len() && b[j] == b'>' {
                if lit < i {
                    out.push(Tok::Text(&t[lit..i]));
                }
                let after = t[j + 1..].trim_start();
                out.push(Tok::Placeholder {
                    name: &t[i + 1..j],
                    in_string,
                    as_key: !in_string && after.starts_with(':'),
                });
                i = j + 1;
                lit = i;
                continue;
            }
        }
        i += 1;
    }
    if lit < b.len() {
        out.push(Tok::Text(&t[lit..]));
    }
    out
}

/// Checks an `InputTransformer` as PutTargets does.
pub fn validate_template(paths: &[(String, String)], template: &str) -> Result<(), String> {
    for (name, path) in paths {
        if name.to_ascii_uppercase().starts_with("AWS.") || RESERVED.contains(&name.as_str()) {
            return Err(format!("InputPathsMap name {name:?} is reserved"));
        }
        if name.is_empty()
            || !name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        {
            return Err(format!(
                "InputPathsMap name {name:?} must match [A-Za-z0-9_-]{{1,256}}"
            ));
        }
        parse_path(path).map_err(|e| format!("InputPathsMap {name:?}: {e}"))?;
    }
    for tok in tokenize(template) {
        if let Tok::Placeholder {
            name,
            in_string,
            as_key,
        } = tok
        {
            let defined = paths.iter().any(|(n, _)| n == name) || RESERVED.contains(&name);
            if !defined {
                return Err(format!(
                    "InputTemplate placeholder <{name}> is not defined in InputPathsMap"
                ));
            }
            if as_key {
                return Err(format!(
                    "InputTemplate placeholder <{name}> cannot be used as a JSON object key"
                ));
            }
            if in_string && (name == "aws.events.event" || name == "aws.events.event.json") {
                return Err(format!(
                    "InputTemplate placeholder <{name}> can only be used as a JSON value, not inside a string"
                ));
            }
        }
    }
    Ok(())
}

/// The text of `v` inside a template string: a string's characters, else its JSON.
fn raw_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders the input a target receives for `event` (the event's JSON text and value).
pub fn transform(spec: &InputSpec, event_text: &str, event: &Value, r: &Reserved<'_>) -> String {
    match spec {
        InputSpec::Event => event_text.to_string(),
        InputSpec::Constant(c) => c.clone(),
        InputSpec::Path(p) => match parse_path(p).ok().and_then(|s| select(event, &s)) {
            Some(v) => v.to_string(),
            None => "null".to_string(),
        },
        InputSpec::Transformer { paths, template } => {
            let mut vars: Vec<(&str, Option<&Value>)> = Vec::with_capacity(paths.len());
            for (name, path) in paths {
                let v = parse_path(path).ok().and_then(|s| select(event, &s));
                vars.push((name.as_str(), v));
            }
            let mut out = String::with_capacity(template.len() + 64);
            for tok in tokenize(template) {
                match tok {
                    Tok::Text(t) => out.push_str(t),
                    Tok::Placeholder {
                        name, in_string, ..
                    } => render_var(&mut out, name, in_string, &vars, event_text, event, r),
                }
            }
            out
        }
    }
}

fn render_var(
    out: &mut String,
    name: &str,
    in_string: bool,
    vars: &[(&str, Option<&Value>)],
    event_text: &str,
    event: &Value,
    r: &Reserved<'_>,
) {
    let plain = |out: &mut String, s: &str| {
        if in_string {
            out.push_str(s);
        } else {
            out.push_str(&Value::String(s.to_string()).to_string());
        }
    };
    match name {
        "aws.events.rule-arn" => plain(out, r.rule_arn),
        "aws.events.rule-name" => plain(out, r.rule_name),
        "aws.events.event.ingestion-time" => plain(out, r.ingestion_time),
        "aws.events.event.json" => out.push_str(event_text),
        "aws.events.event" => {
            let mut e = event.clone();
            if let Value::Object(m) = &mut e {
                m.remove("detail");
            }
            out.push_str(&e.to_string());
        }
        _ => {
            let v = vars.iter().find(|(n, _)| *n == name).and_then(|(_, v)| *v);
            match (v, in_string) {
                (Some(v), true) => out.push_str(&raw_text(v)),
                (Some(v), false) => out.push_str(&v.to_string()),
                (None, true) => {}
                (None, false) => out.push_str("null"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev() -> (String, Value) {
        let v = json!({
            "version": "0", "id": "e-1", "detail-type": "Order Placed", "source": "shop",
            "account": "123456789012", "time": "2024-01-01T00:00:00Z", "region": "us-east-1",
            "resources": ["arn:x"],
            "detail": {"order": {"id": 42, "items": ["a", "b"], "note": "say \"hi\""},
                       "status": "NEW", "a.b": true, "nothing": null}
        });
        (v.to_string(), v)
    }

    fn r() -> Reserved<'static> {
        Reserved {
            rule_arn: "arn:aws:events:us-east-1:123456789012:rule/r1",
            rule_name: "r1",
            ingestion_time: "2024-01-01T00:00:01Z",
        }
    }

    fn tr(paths: &[(&str, &str)], template: &str) -> String {
        let (t, v) = ev();
        let paths: Vec<(String, String)> = paths
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        validate_template(&paths, template).unwrap();
        transform(
            &InputSpec::Transformer {
                paths,
                template: template.into(),
            },
            &t,
            &v,
            &r(),
        )
    }

    #[test]
    fn paths_parse_in_eventbridge_dialect() {
        assert_eq!(parse_path("$").unwrap(), vec![]);
        assert_eq!(
            parse_path("$.detail-type").unwrap(),
            vec![Step::Key("detail-type".into())]
        );
        assert_eq!(
            parse_path("$.detail.items[1].x").unwrap(),
            vec![
                Step::Key("detail".into()),
                Step::Key("items".into()),
                Step::Index(1),
                Step::Key("x".into())
            ]
        );
        assert_eq!(
            parse_path("$.detail['a.b']").unwrap(),
            vec![Step::Key("detail".into()), Step::Key("a.b".into())]
        );
        assert!(parse_path("detail").is_err());
        assert!(parse_path("$..x").is_err());
        assert!(parse_path("$.x[").is_err());
        assert!(parse_path("$.x[a]").is_err());
        assert!(parse_path("$x").is_err());
    }

    #[test]
    fn input_path_selects_or_gives_null() {
        let (t, v) = ev();
        let p = |p: &str| transform(&InputSpec::Path(p.into()), &t, &v, &r());
        assert_eq!(p("$.detail.status"), "\"NEW\"");
        assert_eq!(p("$.detail-type"), "\"Order Placed\"");
        assert_eq!(p("$.detail.order.items[1]"), "\"b\"");
        assert_eq!(p("$.detail.order.id"), "42");
        assert_eq!(p("$.detail['a.b']"), "true");
        assert_eq!(p("$.detail.missing"), "null");
        assert_eq!(p("$.detail.order.items[5]"), "null");
        assert_eq!(p("$"), t);
    }

    #[test]
    fn constant_and_whole_event() {
        let (t, v) = ev();
        assert_eq!(
            transform(&InputSpec::Constant("{\"k\":1}".into()), &t, &v, &r()),
            "{\"k\":1}"
        );
        assert_eq!(transform(&InputSpec::Event, &t, &v, &r()), t);
    }

    #[test]
    fn json_template_value_positions_are_json() {
        let out = tr(
            &[
                ("s", "$.detail.status"),
                ("o", "$.detail.order"),
                ("n", "$.detail.order.id"),
                ("m", "$.detail.missing"),
                ("z", "$.detail.nothing"),
            ],
            r#"{"status": <s>, "order": <o>, "id": <n>, "missing": <m>, "z": <z>}"#,
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["status"], "NEW");
        assert_eq!(v["order"]["items"][0], "a");
        assert_eq!(v["id"], 42);
        assert_eq!(v["missing"], Value::Null);
        assert_eq!(v["z"], Value::Null);
    }

    #[test]
    fn placeholders_in_strings_are_raw_and_unescaped() {
        let out = tr(
            &[
                ("s", "$.detail.status"),
                ("note", "$.detail.order.note"),
                ("n", "$.detail.order.id"),
                ("m", "$.nope"),
            ],
            r#"{"msg": "order <n> is <s><m>", "note": "<note>"}"#,
        );
        // No escaping: the note's quotes break out of the string, as on AWS.
        assert_eq!(out, r#"{"msg": "order 42 is NEW", "note": "say "hi""}"#);
    }

    #[test]
    fn string_template() {
        let out = tr(
            &[("s", "$.detail.status"), ("t", "$.detail-type")],
            r#""<t> is <s>""#,
        );
        assert_eq!(out, r#""Order Placed is NEW""#);
    }

    #[test]
    fn reserved_variables() {
        let out = tr(
            &[],
            r#"{"arn": <aws.events.rule-arn>, "name": "rule <aws.events.rule-name>", "at": <aws.events.event.ingestion-time>, "e": <aws.events.event>, "full": <aws.events.event.json>}"#,
        );
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["arn"], "arn:aws:events:us-east-1:123456789012:rule/r1");
        assert_eq!(v["name"], "rule r1");
        assert_eq!(v["at"], "2024-01-01T00:00:01Z");
        assert_eq!(v["e"]["id"], "e-1");
        assert!(v["e"].get("detail").is_none());
        assert_eq!(v["full"]["detail"]["status"], "NEW");
    }

    #[test]
    fn non_placeholders_are_literal_and_escapes_respected() {
        let out = tr(
            &[("s", "$.detail.status")],
            r#"{"a": "x < y > z", "b": "q\"<s>", "c": <s>}"#,
        );
        assert_eq!(out, r#"{"a": "x < y > z", "b": "q\"NEW", "c": "NEW"}"#);
    }

    #[test]
    fn validation_rejects_what_aws_rejects() {
        let p = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert!(
            validate_template(&p(&[]), "{\"a\": <undefined>}")
                .unwrap_err()
                .contains("not defined")
        );
        assert!(
            validate_template(&p(&[("k", "$.a")]), "{<k>: 1}")
                .unwrap_err()
                .contains("key")
        );
        assert!(
            validate_template(&p(&[("AWS.x", "$.a")]), "1")
                .unwrap_err()
                .contains("reserved")
        );
        assert!(validate_template(&p(&[("aws.events.rule-arn", "$.a")]), "1").is_err());
        assert!(validate_template(&p(&[("k", "detail")]), "<k>").is_err());
        assert!(validate_template(&p(&[("bad name", "$.a")]), "1").is_err());
        assert!(validate_template(&p(&[]), "\"x <aws.events.event> y\"").is_err());
        assert!(validate_template(&p(&[]), "{\"e\": <aws.events.event.json>}").is_ok());
    }
}
