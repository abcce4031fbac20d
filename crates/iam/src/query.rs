//! The awsQuery protocol: form parameters in, XML out.
//!
//! Design constraints:
//! - **Input.** The server hands over the decoded form fields. [`to_json`] turns them into a JSON
//!   object shaped like the operation's input structure in botocore's model (the same models
//!   `sluice-wire` embeds: `crates/wire/models/{iam,sts}.json`), following botocore's query
//!   serializer: structure members `Prefix.Member`, lists `Prefix.member.N` (1-based, order by
//!   N), maps `Prefix.entry.N.key` / `Prefix.entry.N.value`, an empty list as `Prefix=`,
//!   booleans `true` / `false`, numbers in decimal. Unknown fields are ignored, as AWS does. The
//!   JSON is then validated with `sluice_wire::Operation::validate`, so constraint violations
//!   carry AWS's `N validation error(s) detected: ...` text; IAM and STS name that error
//!   `ValidationError` (400), which [`query_error`] maps.
//! - **Output.** [`Xml`] writes elements and escapes every text value (`& < > " '` and the
//!   line-break characters as character references, other control characters replaced with
//!   U+FFFD because XML 1.0 cannot carry them). [`success`] and [`error_body`] frame the result
//!   in AWS's envelopes.
//! - Policy documents travel URL-encoded inside XML, as AWS sends them ([`url_encode`]).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::{Map, Value};
use sluice_core::{AwsError, QueryResponse};

/// The IAM XML namespace.
pub const IAM_XMLNS: &str = "https://iam.amazonaws.com/doc/2010-05-08/";
/// The STS XML namespace.
pub const STS_XMLNS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// The shape types of one model, enough to shape form fields into JSON.
#[derive(Debug)]
pub struct ShapeTypes {
    shapes: Map<String, Value>,
    operations: Map<String, Value>,
}

fn load(text: &str) -> ShapeTypes {
    let doc: Value = serde_json::from_str(text).expect("embedded model is JSON");
    let get = |k: &str| {
        doc.get(k)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    ShapeTypes {
        shapes: get("shapes"),
        operations: get("operations"),
    }
}

/// The IAM model's shape types.
pub static IAM_SHAPES: LazyLock<ShapeTypes> =
    LazyLock::new(|| load(include_str!("../../wire/models/iam.json")));
/// The STS model's shape types.
pub static STS_SHAPES: LazyLock<ShapeTypes> =
    LazyLock::new(|| load(include_str!("../../wire/models/sts.json")));

/// A tree of form fields split at `.`.
#[derive(Debug, Default)]
struct Node {
    value: Option<String>,
    children: BTreeMap<String, Node>,
}

impl Node {
    fn insert(&mut self, path: &[&str], value: String) {
        match path.split_first() {
            None => self.value = Some(value),
            Some((head, rest)) => self
                .children
                .entry((*head).to_string())
                .or_default()
                .insert(rest, value),
        }
    }
}

fn malformed(msg: String) -> AwsError {
    AwsError::client("ValidationError", msg)
}

impl ShapeTypes {
    /// Whether the model has operation `op`.
    pub fn has_operation(&self, op: &str) -> bool {
        self.operations.contains_key(op)
    }

    fn convert(&self, shape: &str, node: &Node, path: &str) -> Result<Option<Value>, AwsError> {
        let Some(s) = self.shapes.get(shape) else {
            return Ok(None);
        };
        let ty = s.get("type").and_then(Value::as_str).unwrap_or("string");
        match ty {
            "structure" => {
                let mut out = Map::new();
                if let Some(members) = s.get("members").and_then(Value::as_object) {
                    for (name, m) in members {
                        let Some(child) = node.children.get(name) else {
                            continue;
                        };
                        let Some(ms) = m.get("shape").and_then(Value::as_str) else {
                            continue;
                        };
                        let p = if path.is_empty() {
                            name.clone()
                        } else {
                            format!("{path}.{name}")
                        };
                        if let Some(v) = self.convert(ms, child, &p)? {
                            out.insert(name.clone(), v);
                        }
                    }
                }
                Ok(Some(Value::Object(out)))
            }
            "list" => {
                let member = s.get("member").and_then(Value::as_str).unwrap_or("");
                let Some(items) = node.children.get("member") else {
                    // `Prefix=` with no members: an empty list.
                    return Ok(node.value.as_ref().map(|_| Value::Array(Vec::new())));
                };
                let mut numbered = Vec::new();
                for (k, child) in &items.children {
                    let n: u32 = k.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        malformed(format!("Invalid list index {path}.member.{k}."))
                    })?;
                    numbered.push((n, child));
                }
                numbered.sort_by_key(|(n, _)| *n);
                let mut out = Vec::new();
                for (n, child) in numbered {
                    if let Some(v) = self.convert(member, child, &format!("{path}.member.{n}"))? {
                        out.push(v);
                    }
                }
                Ok(Some(Value::Array(out)))
            }
            "map" => {
                let kshape = s.get("key").and_then(Value::as_str).unwrap_or("");
                let vshape = s.get("value").and_then(Value::as_str).unwrap_or("");
                let mut out = Map::new();
                if let Some(entries) = node.children.get("entry") {
                    for (k, e) in &entries.children {
                        let p = format!("{path}.entry.{k}");
                        let key = match e.children.get("key") {
                            Some(kn) => self.convert(kshape, kn, &p)?,
                            None => None,
                        };
                        let Some(Value::String(key)) = key else {
                            return Err(malformed(format!("Missing key in {p}.")));
                        };
                        let val = match e.children.get("value") {
                            Some(vn) => self.convert(vshape, vn, &p)?,
                            None => None,
                        };
                        out.insert(key, val.unwrap_or(Value::Null));
                    }
                }
                Ok(Some(Value::Object(out)))
            }
            _ => {
                let Some(text) = &node.value else {
                    return Ok(None);
                };
                let v = match ty {
                    "integer" | "long" => {
                        Value::from(text.trim().parse::<i64>().map_err(|_| {
                            malformed(format!("Invalid value for {path}: expected an integer."))
                        })?)
                    }
                    "float" | "double" => {
                        let f: f64 = text.trim().parse().map_err(|_| {
                            malformed(format!("Invalid value for {path}: expected a number."))
                        })?;
                        serde_json::Number::from_f64(f)
                            .map(Value::Number)
                            .ok_or_else(|| malformed(format!("Invalid value for {path}.")))?
                    }
                    "boolean" => match text.as_str() {
                        "true" => Value::Bool(true),
                        "false" => Value::Bool(false),
                        _ => {
                            return Err(malformed(format!(
                                "Invalid value for {path}: expected true or false."
                            )));
                        }
                    },
                    _ => Value::String(text.clone()),
                };
                Ok(Some(v))
            }
        }
    }
}

/// The `Action` of a request and its input as JSON, validated against the model of `service`
/// (`iam` or `sts`). Errors: `MissingAction` / `InvalidAction` / `ValidationError`.
pub fn to_json(
    service: &str,
    types: &ShapeTypes,
    params: &[(String, String)],
) -> Result<(String, Value), AwsError> {
    let action = params
        .iter()
        .find(|(k, _)| k == "Action")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| AwsError::client("MissingAction", "Missing Action"))?;
    let model = sluice_wire::service(service).ok_or_else(AwsError::internal)?;
    let op = model
        .operation(&action)
        .filter(|_| types.has_operation(&action))
        .ok_or_else(|| {
            AwsError::client(
                "InvalidAction",
                format!(
                    "Could not find operation {} for version {}",
                    truncate(&action, 64),
                    model.api_version()
                ),
            )
        })?;
    let mut root = Node::default();
    for (k, v) in params {
        if k == "Action" || k == "Version" {
            continue;
        }
        let path: Vec<&str> = k.split('.').collect();
        root.insert(&path, v.clone());
    }
    let input = match op.input_shape() {
        Some(shape) => types
            .convert(shape, &root, "")?
            .unwrap_or_else(|| Value::Object(Map::new())),
        None => Value::Object(Map::new()),
    };
    op.validate(&input).map_err(query_error)?;
    Ok((action, input))
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(n).collect()
}

/// Maps errors of the JSON validator to the awsQuery services' names.
pub fn query_error(e: AwsError) -> AwsError {
    match e.code.as_ref() {
        "ValidationException" | "SerializationException" => {
            AwsError::client("ValidationError", e.message)
        }
        _ => e,
    }
}

/// Escapes `s` as XML text or attribute content.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#xD;"),
            '\n' => out.push_str("&#xA;"),
            '\t' => out.push_str("&#x9;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a policy document as AWS returns it (RFC 3986 unreserved kept).
pub fn url_encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// A small XML writer; every text goes through [`escape`].
#[derive(Debug, Default, Clone)]
pub struct Xml {
    buf: String,
}

impl Xml {
    /// An empty document fragment.
    pub fn new() -> Self {
        Self::default()
    }

    /// `<tag>`.
    pub fn open(&mut self, tag: &str) -> &mut Self {
        self.buf.push('<');
        self.buf.push_str(tag);
        self.buf.push('>');
        self
    }

    /// `</tag>`.
    pub fn close(&mut self, tag: &str) -> &mut Self {
        self.buf.push_str("</");
        self.buf.push_str(tag);
        self.buf.push('>');
        self
    }

    /// `<tag>escaped text</tag>`.
    pub fn leaf(&mut self, tag: &str, text: &str) -> &mut Self {
        self.open(tag);
        self.buf.push_str(&escape(text));
        self.close(tag)
    }

    /// Escaped text content.
    pub fn text(&mut self, text: &str) -> &mut Self {
        self.buf.push_str(&escape(text));
        self
    }

    /// A leaf only when `text` is present.
    pub fn opt(&mut self, tag: &str, text: Option<&str>) -> &mut Self {
        if let Some(t) = text {
            self.leaf(tag, t);
        }
        self
    }

    /// `<tag>` + `f` + `</tag>`.
    pub fn elem(&mut self, tag: &str, f: impl FnOnce(&mut Xml)) -> &mut Self {
        self.open(tag);
        f(self);
        self.close(tag)
    }

    /// `<tag><member>..</member>...</tag>` for each item.
    pub fn members<T>(
        &mut self,
        tag: &str,
        items: impl IntoIterator<Item = T>,
        mut f: impl FnMut(&mut Xml, T),
    ) -> &mut Self {
        self.open(tag);
        for it in items {
            self.open("member");
            f(self, it);
            self.close("member");
        }
        self.close(tag)
    }

    /// The text written so far.
    pub fn as_str(&self) -> &str {
        &self.buf
    }

    /// The text.
    pub fn into_string(self) -> String {
        self.buf
    }
}

/// `<{op}Response xmlns=..><{op}Result>{result}</{op}Result><ResponseMetadata>..` (the
/// `Result` element is left out when `result` is `None`, as for operations without output).
pub fn success(xmlns: &str, op: &str, result: Option<&str>, request_id: &str) -> QueryResponse {
    let mut body = format!(r#"<{op}Response xmlns="{xmlns}">"#);
    if let Some(r) = result {
        body.push_str(&format!("<{op}Result>{r}</{op}Result>"));
    }
    body.push_str(&format!(
        "<ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{op}Response>",
        escape(request_id)
    ));
    QueryResponse { status: 200, body }
}

/// AWS's `<ErrorResponse>` for `err`.
pub fn error_body(xmlns: &str, err: &AwsError, request_id: &str) -> QueryResponse {
    let kind = if err.status >= 500 {
        "Receiver"
    } else {
        "Sender"
    };
    let body = format!(
        r#"<ErrorResponse xmlns="{xmlns}"><Error><Type>{kind}</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>"#,
        escape(&err.code),
        escape(&err.message),
        escape(request_id)
    );
    QueryResponse {
        status: err.status,
        body,
    }
}

/// Reads a string member of a JSON input.
pub fn s<'a>(input: &'a Value, name: &str) -> Option<&'a str> {
    input.get(name).and_then(Value::as_str)
}

/// Reads a list of strings member.
pub fn strings(input: &Value, name: &str) -> Vec<String> {
    input
        .get(name)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn lists_structures_and_scalars_follow_botocore() {
        let (op, v) = to_json(
            "iam",
            &IAM_SHAPES,
            &p(&[
                ("Action", "CreateUser"),
                ("Version", "2010-05-08"),
                ("UserName", "bob"),
                ("Tags.member.2.Key", "b"),
                ("Tags.member.2.Value", "2"),
                ("Tags.member.1.Key", "a"),
                ("Tags.member.1.Value", "1"),
                ("Unknown", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(op, "CreateUser");
        assert_eq!(
            v,
            serde_json::json!({"UserName":"bob","Tags":[{"Key":"a","Value":"1"},{"Key":"b","Value":"2"}]})
        );
        let (_, v) = to_json(
            "iam",
            &IAM_SHAPES,
            &p(&[
                ("Action", "SimulatePrincipalPolicy"),
                ("PolicySourceArn", "arn:aws:iam::123456789012:user/bob"),
                ("ActionNames.member.1", "s3:GetObject"),
                ("ContextEntries.member.1.ContextKeyName", "aws:SourceIp"),
                ("ContextEntries.member.1.ContextKeyType", "ip"),
                (
                    "ContextEntries.member.1.ContextKeyValues.member.1",
                    "10.0.0.1",
                ),
                ("MaxItems", "10"),
            ]),
        )
        .unwrap();
        assert_eq!(v["MaxItems"], 10);
        assert_eq!(
            v["ContextEntries"][0]["ContextKeyValues"],
            serde_json::json!(["10.0.0.1"])
        );
        let (_, v) = to_json(
            "iam",
            &IAM_SHAPES,
            &p(&[
                ("Action", "ListPolicies"),
                ("OnlyAttached", "true"),
                ("Scope", "Local"),
            ]),
        )
        .unwrap();
        assert_eq!(v["OnlyAttached"], true);
        // An empty list.
        let (_, v) = to_json(
            "iam",
            &IAM_SHAPES,
            &p(&[("Action", "UntagRole"), ("RoleName", "r"), ("TagKeys", "")]),
        )
        .unwrap();
        assert_eq!(v["TagKeys"], serde_json::json!([]));
    }

    #[test]
    fn maps_decode_from_entries() {
        let t = load(
            r#"{"operations":{},"shapes":{"In":{"type":"structure","members":{"M":{"shape":"Map"},"N":{"shape":"Num"}}},"Map":{"type":"map","key":"S","value":"S"},"S":{"type":"string"},"Num":{"type":"integer"}}}"#,
        );
        let mut root = Node::default();
        for (k, v) in [
            ("M.entry.1.key", "a"),
            ("M.entry.1.value", "1"),
            ("M.entry.2.key", "b&"),
            ("M.entry.2.value", "2"),
            ("N", "7"),
        ] {
            root.insert(&k.split('.').collect::<Vec<_>>(), v.to_string());
        }
        assert_eq!(
            t.convert("In", &root, "").unwrap().unwrap(),
            serde_json::json!({"M": {"a": "1", "b&": "2"}, "N": 7})
        );
        let mut bad = Node::default();
        bad.insert(&["M", "entry", "1", "value"], "v".into());
        assert_eq!(
            t.convert("In", &bad, "").unwrap_err().code,
            "ValidationError"
        );
    }

    #[test]
    fn validation_errors_use_aws_texts_and_names() {
        let e = to_json(
            "iam",
            &IAM_SHAPES,
            &p(&[("Action", "CreateUser"), ("UserName", "bad name!")]),
        )
        .unwrap_err();
        assert_eq!(e.code, "ValidationError");
        assert_eq!(e.status, 400);
        assert!(e.message.starts_with("1 validation error detected: Value 'bad name!' at 'userName' failed to satisfy constraint: Member must satisfy regular expression pattern"), "{}", e.message);
        let e = to_json("iam", &IAM_SHAPES, &p(&[("Action", "CreateUser")])).unwrap_err();
        assert_eq!(e.code, "ValidationError");
        assert!(e.message.contains("userName"), "{}", e.message);
        let e = to_json(
            "iam",
            &IAM_SHAPES,
            &p(&[("Action", "ListUsers"), ("MaxItems", "many")]),
        )
        .unwrap_err();
        assert_eq!(e.code, "ValidationError");
        let e = to_json("iam", &IAM_SHAPES, &p(&[("Action", "FlyToTheMoon")])).unwrap_err();
        assert_eq!(e.code, "InvalidAction");
        let e = to_json("iam", &IAM_SHAPES, &p(&[("UserName", "x")])).unwrap_err();
        assert_eq!(e.code, "MissingAction");
        let e = to_json(
            "sts",
            &STS_SHAPES,
            &p(&[
                ("Action", "AssumeRole"),
                ("RoleArn", "arn:aws:iam::123456789012:role/r"),
                ("RoleSessionName", "s"),
                ("DurationSeconds", "60"),
            ]),
        )
        .unwrap_err();
        assert_eq!(e.code, "ValidationError");
        assert!(e.message.contains("durationSeconds"), "{}", e.message);
        let e = to_json(
            "iam",
            &IAM_SHAPES,
            &p(&[("Action", "ListUsers"), ("Tags.member.x.Key", "a")]),
        );
        assert!(e.is_ok(), "unknown members are ignored");
        let e = to_json(
            "iam",
            &IAM_SHAPES,
            &p(&[
                ("Action", "CreateUser"),
                ("UserName", "u"),
                ("Tags.member.x.Key", "a"),
            ]),
        )
        .unwrap_err();
        assert_eq!(e.code, "ValidationError");
    }

    #[test]
    fn xml_escapes_every_value() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&apos;&amp;&apos;&lt;/a&gt;"
        );
        assert_eq!(escape("a\r\nb\tc\u{1}"), "a&#xD;&#xA;b&#x9;c\u{FFFD}");
        assert_eq!(escape("plain ü"), "plain ü");
        let mut x = Xml::new();
        x.elem("User", |x| {
            x.leaf("UserName", "a<b>&c");
            x.opt("Path", None);
            x.members("Tags", [("k&", "v<")], |x, (k, v)| {
                x.leaf("Key", k).leaf("Value", v);
            });
        });
        assert_eq!(
            x.as_str(),
            "<User><UserName>a&lt;b&gt;&amp;c</UserName><Tags><member><Key>k&amp;</Key><Value>v&lt;</Value></member></Tags></User>"
        );
    }

    #[test]
    fn envelopes_match_aws() {
        let r = success(IAM_XMLNS, "GetUser", Some("<User/>"), "rid");
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body,
            r#"<GetUserResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><GetUserResult><User/></GetUserResult><ResponseMetadata><RequestId>rid</RequestId></ResponseMetadata></GetUserResponse>"#
        );
        let r = success(IAM_XMLNS, "DeleteUser", None, "rid");
        assert!(r.body.starts_with("<DeleteUserResponse"));
        assert!(!r.body.contains("DeleteUserResult"));
        let e = AwsError::with_status(
            "NoSuchEntity",
            404,
            "The user with name <x> cannot be found.",
        );
        let r = error_body(IAM_XMLNS, &e, "r&1");
        assert_eq!(r.status, 404);
        assert_eq!(
            r.body,
            r#"<ErrorResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><Error><Type>Sender</Type><Code>NoSuchEntity</Code><Message>The user with name &lt;x&gt; cannot be found.</Message></Error><RequestId>r&amp;1</RequestId></ErrorResponse>"#
        );
        let r = error_body(STS_XMLNS, &AwsError::internal(), "r");
        assert!(r.body.contains("<Type>Receiver</Type>"));
    }

    #[test]
    fn policy_documents_are_url_encoded() {
        assert_eq!(
            url_encode(r#"{"Version": "2012-10-17"}"#),
            "%7B%22Version%22%3A%20%222012-10-17%22%7D"
        );
        assert_eq!(url_encode("a-b_c.d~e"), "a-b_c.d~e");
    }
}
