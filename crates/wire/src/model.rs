//! The compact model files and their compiled form.
//!
//! # Model file format (`crates/wire/models/<service>.json`)
//!
//! Written by `tools/gen_models.py` from botocore's `service-2.json`; one JSON object:
//!
//! ```text
//! {
//! "metadata":{"apiVersion":..,"botocoreVersion":..,"errorMessageMember":"message"|"Message",
//!             "protocol":"json"|"query","service":"kms","jsonVersion":"1.1","targetPrefix":..,
//!             "endpointPrefix":..,"signingName":..,"serviceId":..},
//! "operations":{"<OperationName>":"<input shape name>"|null, ...},
//! "shapes":{
//! "<ShapeName>":{"type":"structure","members":{"<Member>":{"shape":"<ShapeName>",
//!                "sensitive"?:true,"idempotencyToken"?:true}},"required"?:[..],"sensitive"?:true,
//!                "union"?:true},
//! "<ShapeName>":{"type":"list","member":"<ShapeName>","min"?:n,"max"?:n},
//! "<ShapeName>":{"type":"map","key":"<ShapeName>","value":"<ShapeName>","min"?:n,"max"?:n},
//! "<ShapeName>":{"type":"string","min"?:n,"max"?:n,"pattern"?:"<java regex>","enum"?:[..]},
//! "<ShapeName>":{"type":"blob"|"integer"|"long"|"float"|"double","min"?:n,"max"?:n},
//! "<ShapeName>":{"type":"boolean"|"timestamp"},
//! ...}}
//! ```
//!
//! Only shapes reachable from operation inputs are kept; any shape may carry `"sensitive":true`.
//! `errorMessageMember` is derived from the service's exception shapes (`Message` for Secrets
//! Manager, `message` elsewhere). Keys are sorted and each shape is on its own line.
//!
//! # Compiled form
//!
//! A [`Service`] is parsed once per process (a `LazyLock` per service) into a vector of shapes
//! addressed by index, with member names pre-lowerCameled for error paths, enum sets and
//! compiled regexes. Operations share the shape vector through an `Arc`, so
//! [`Operation::validate`] needs nothing else.

use std::sync::Arc;

use serde_json::Value;

use crate::pattern::Pattern;

pub(crate) type ShapeId = u32;

#[derive(Debug)]
pub(crate) struct Shape {
    pub(crate) name: Box<str>,
    pub(crate) sensitive: bool,
    pub(crate) kind: Kind,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Len {
    pub(crate) min: Option<u64>,
    pub(crate) max: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NumRange {
    pub(crate) min: Option<f64>,
    pub(crate) max: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumKind {
    Integer,
    Long,
    Float,
    Double,
}

#[derive(Debug)]
pub(crate) enum Kind {
    Structure {
        members: Box<[Member]>,
    },
    List {
        member: ShapeId,
        len: Len,
    },
    Map {
        key: ShapeId,
        value: ShapeId,
        len: Len,
    },
    String {
        len: Len,
        pattern: Option<Pattern>,
        enumeration: Option<Box<[Box<str>]>>,
    },
    Blob {
        len: Len,
    },
    Number {
        kind: NumKind,
        range: NumRange,
    },
    Boolean,
    Timestamp,
}

#[derive(Debug)]
pub(crate) struct Member {
    /// Wire name, e.g. `KeyId`.
    pub(crate) name: Box<str>,
    /// Name in validation messages, e.g. `keyId`.
    pub(crate) path: Box<str>,
    pub(crate) shape: ShapeId,
    pub(crate) required: bool,
    pub(crate) sensitive: bool,
    pub(crate) idempotency_token: bool,
}

/// One AWS service model (see the crate docs).
#[derive(Debug)]
pub struct Service {
    name: &'static str,
    api_version: Box<str>,
    protocol: Box<str>,
    json_version: Option<Box<str>>,
    target_prefix: Box<str>,
    signing_name: Box<str>,
    error_message_member: Box<str>,
    operations: Box<[Operation]>,
    shapes: Arc<[Shape]>,
}

/// One operation of a [`Service`].
#[derive(Debug)]
pub struct Operation {
    name: Box<str>,
    input: Option<ShapeId>,
    pub(crate) shapes: Arc<[Shape]>,
}

impl Service {
    /// Short service name as used by [`crate::service`], e.g. `kms`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The `X-Amz-Target` prefix (`TrentService` for KMS); empty for query-protocol services.
    pub fn target_prefix(&self) -> &str {
        &self.target_prefix
    }

    /// The member that carries an error's message in this service's error shapes:
    /// `Message` for Secrets Manager, `message` for the others.
    pub fn error_message_member(&self) -> &str {
        &self.error_message_member
    }

    /// API version, e.g. `2014-11-01`.
    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// Wire protocol from the model: `json` or `query`.
    pub fn protocol(&self) -> &str {
        &self.protocol
    }

    /// `jsonVersion` for JSON-protocol services (`1.1` for all services shipped here).
    pub fn json_version(&self) -> Option<&str> {
        self.json_version.as_deref()
    }

    /// SigV4 signing name (the model's `signingName`, else its `endpointPrefix`).
    pub fn signing_name(&self) -> &str {
        &self.signing_name
    }

    /// Looks an operation up by its exact name (`Encrypt`).
    pub fn operation(&self, name: &str) -> Option<&Operation> {
        self.operations
            .binary_search_by(|op| op.name.as_ref().cmp(name))
            .ok()
            .map(|i| &self.operations[i])
    }

    /// All operations, sorted by name.
    pub fn operations(&self) -> impl ExactSizeIterator<Item = &Operation> {
        self.operations.iter()
    }

    /// `(shape name, pattern)` for every `pattern` constraint reachable from an operation
    /// input that the `regex` crate cannot express and that is therefore not enforced.
    pub fn unenforced_patterns(&self) -> Vec<(&str, &str)> {
        self.shapes
            .iter()
            .filter_map(|s| match &s.kind {
                Kind::String {
                    pattern: Some(p), ..
                } if !p.is_enforced() => Some((s.name.as_ref(), p.source.as_ref())),
                _ => None,
            })
            .collect()
    }

    /// Parses a model file. Models are checked in and covered by tests, so a malformed model
    /// is a build defect and panics here (once, when the service is first used).
    pub(crate) fn load(name: &'static str, text: &str) -> Service {
        match Self::try_load(name, text) {
            Ok(s) => s,
            Err(e) => panic!("sluice-wire: embedded model {name} is invalid: {e}"),
        }
    }

    fn try_load(name: &'static str, text: &str) -> Result<Service, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let meta = doc.get("metadata").ok_or("no metadata")?;
        let meta_str = |k: &str| meta.get(k).and_then(Value::as_str).map(Box::<str>::from);
        let shapes_json = doc
            .get("shapes")
            .and_then(Value::as_object)
            .ok_or("no shapes")?;
        let mut names: Vec<&str> = shapes_json.keys().map(String::as_str).collect();
        names.sort_unstable();
        let id_of = |n: &str| -> Result<ShapeId, String> {
            names
                .binary_search(&n)
                .map(|i| i as ShapeId)
                .map_err(|_| format!("unknown shape {n}"))
        };
        let mut shapes = Vec::with_capacity(names.len());
        for &n in &names {
            let s = &shapes_json[n];
            shapes.push(compile_shape(n, s, &id_of)?);
        }
        let shapes: Arc<[Shape]> = shapes.into();
        let mut operations = Vec::new();
        for (op, input) in doc
            .get("operations")
            .and_then(Value::as_object)
            .ok_or("no operations")?
        {
            let input = match input.as_str() {
                Some(n) => Some(id_of(n)?),
                None => None,
            };
            operations.push(Operation {
                name: op.as_str().into(),
                input,
                shapes: shapes.clone(),
            });
        }
        operations.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Service {
            name,
            api_version: meta_str("apiVersion").unwrap_or_default(),
            protocol: meta_str("protocol").ok_or("no protocol")?,
            json_version: meta_str("jsonVersion"),
            target_prefix: meta_str("targetPrefix").unwrap_or_default(),
            signing_name: meta_str("signingName")
                .or_else(|| meta_str("endpointPrefix"))
                .unwrap_or_else(|| name.into()),
            error_message_member: meta_str("errorMessageMember")
                .unwrap_or_else(|| "message".into()),
            operations: operations.into(),
            shapes,
        })
    }
}

impl Operation {
    /// The operation name, e.g. `Encrypt`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The input shape name, if the operation takes input.
    pub fn input_shape(&self) -> Option<&str> {
        self.input.map(|i| self.shapes[i as usize].name.as_ref())
    }

    /// Top-level input members marked `idempotencyToken` (Secrets Manager's
    /// `ClientRequestToken`): SDKs fill them with a UUID when the caller omits them.
    pub fn idempotency_token_members(&self) -> impl Iterator<Item = &str> {
        let members: &[Member] = match self.input.map(|i| &self.shapes[i as usize].kind) {
            Some(Kind::Structure { members }) => members,
            _ => &[],
        };
        members
            .iter()
            .filter(|m| m.idempotency_token)
            .map(|m| m.name.as_ref())
    }

    pub(crate) fn input(&self) -> Option<ShapeId> {
        self.input
    }
}

fn lower_camel(name: &str) -> Box<str> {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) => {
            let mut s = String::with_capacity(name.len());
            s.extend(c.to_lowercase());
            s.push_str(chars.as_str());
            s.into()
        }
        None => "".into(),
    }
}

fn len_of(s: &Value) -> Len {
    Len {
        min: s.get("min").and_then(Value::as_u64),
        max: s.get("max").and_then(Value::as_u64),
    }
}

fn compile_shape(
    name: &str,
    s: &Value,
    id_of: &dyn Fn(&str) -> Result<ShapeId, String>,
) -> Result<Shape, String> {
    let ty = s
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{name}: no type"))?;
    let shape_ref = |k: &str| -> Result<ShapeId, String> {
        id_of(
            s.get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{name}: no {k}"))?,
        )
    };
    let num = |kind| Kind::Number {
        kind,
        range: NumRange {
            min: s.get("min").and_then(Value::as_f64),
            max: s.get("max").and_then(Value::as_f64),
        },
    };
    let kind = match ty {
        "structure" => {
            let required: Vec<&str> = s
                .get("required")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let mut members = Vec::new();
            if let Some(ms) = s.get("members").and_then(Value::as_object) {
                for (mname, m) in ms {
                    let flag = |k: &str| m.get(k).and_then(Value::as_bool).unwrap_or(false);
                    members.push(Member {
                        name: mname.as_str().into(),
                        path: lower_camel(mname),
                        shape: id_of(
                            m.get("shape")
                                .and_then(Value::as_str)
                                .ok_or_else(|| format!("{name}.{mname}: no shape"))?,
                        )?,
                        required: required.contains(&mname.as_str()),
                        sensitive: flag("sensitive"),
                        idempotency_token: flag("idempotencyToken"),
                    });
                }
            }
            members.sort_by(|a, b| a.name.cmp(&b.name));
            Kind::Structure {
                members: members.into(),
            }
        }
        "list" => Kind::List {
            member: shape_ref("member")?,
            len: len_of(s),
        },
        "map" => Kind::Map {
            key: shape_ref("key")?,
            value: shape_ref("value")?,
            len: len_of(s),
        },
        "string" => Kind::String {
            len: len_of(s),
            pattern: s.get("pattern").and_then(Value::as_str).map(Pattern::new),
            enumeration: s.get("enum").and_then(Value::as_array).map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(Box::<str>::from)
                    .collect()
            }),
        },
        "blob" => Kind::Blob { len: len_of(s) },
        "integer" => num(NumKind::Integer),
        "long" => num(NumKind::Long),
        "float" => num(NumKind::Float),
        "double" => num(NumKind::Double),
        "boolean" => Kind::Boolean,
        "timestamp" => Kind::Timestamp,
        other => return Err(format!("{name}: unsupported type {other}")),
    };
    Ok(Shape {
        name: name.into(),
        sensitive: s.get("sensitive").and_then(Value::as_bool).unwrap_or(false),
        kind,
    })
}
