//! The Firehose API operations. Management writes are serialized by one async lock, carry an
//! `Expect` on the stream record, and commit their audit record in the same batch; the
//! in-memory mirror is updated after the commit. PutRecord / PutRecordBatch write one chunk per
//! call, concurrently (group commit), and are not audited (CloudTrail data events are off by
//! default on AWS too).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use base64::Engine;
use serde_json::{Map, Value, json};
use sluice_audit::{AuditEvent, AuditResource};
use sluice_core::{AwsError, CallContext, PrincipalKind};
use sluice_policy::{Context, Decision, Inputs, Request, ResourceKind, evaluate};
use sluice_store::{Batch, KeyRange, StoreError};

use crate::codec;
use crate::model::{
    self, ACCESS_KEY_LABEL, Destination, NS_BATCHES, NS_RECORDS, NS_STREAMS, StreamRecord,
};
use crate::{Core, SERVICE_PRINCIPAL, internal};

/// Largest total data of one PutRecordBatch call.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Most tags per stream.
const MAX_TAGS: usize = 50;
/// The one destination id of a stream.
pub const DESTINATION_ID: &str = "destinationId-000000000001";

const DESTINATION_KEYS: &[&str] = &[
    "S3DestinationConfiguration",
    "ExtendedS3DestinationConfiguration",
    "RedshiftDestinationConfiguration",
    "ElasticsearchDestinationConfiguration",
    "AmazonopensearchserviceDestinationConfiguration",
    "SplunkDestinationConfiguration",
    "HttpEndpointDestinationConfiguration",
    "AmazonOpenSearchServerlessDestinationConfiguration",
    "SnowflakeDestinationConfiguration",
    "IcebergDestinationConfiguration",
];

fn invalid(msg: impl Into<String>) -> AwsError {
    AwsError::client("InvalidArgumentException", msg)
}

fn not_found(core: &Core, name: &str) -> AwsError {
    AwsError::client(
        "ResourceNotFoundException",
        format!(
            "Firehose {name} under account {} not found.",
            core.cfg.account
        ),
    )
}

fn str_of<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn is_write(op: &str) -> bool {
    matches!(
        op,
        "CreateDeliveryStream"
            | "DeleteDeliveryStream"
            | "UpdateDestination"
            | "TagDeliveryStream"
            | "UntagDeliveryStream"
    )
}

/// What a management operation produced.
struct Out {
    resp: Value,
    batch: Batch,
    post: Vec<Post>,
}

enum Post {
    Upsert(Box<StreamRecord>),
    Remove(String),
}

pub(crate) async fn dispatch(
    core: &Arc<Core>,
    op: &str,
    ctx: &CallContext,
    input: Value,
) -> Result<Value, AwsError> {
    match op {
        "PutRecord" => return put_record(core, ctx, &input).await,
        "PutRecordBatch" => return put_record_batch(core, ctx, &input).await,
        _ => {}
    }
    let write = is_write(op);
    let _guard = if write {
        Some(core.write_lock.lock().await)
    } else {
        None
    };
    let name = str_of(&input, "DeliveryStreamName").map(str::to_string);
    let result = run(core, op, ctx, &input).await;
    let ev = AuditEvent {
        event_source: SERVICE_PRINCIPAL,
        event_name: op,
        request_parameters: match &name {
            Some(n) => json!({ "deliveryStreamName": n }),
            None => Value::Null,
        },
        resources: name
            .iter()
            .map(|n| AuditResource {
                kind: "AWS::KinesisFirehose::DeliveryStream".into(),
                arn: core.stream_arn(n),
            })
            .collect(),
        read_only: !write,
    };
    match result {
        Ok(out) => {
            let record = core.audit.record_for(ctx, ev, Ok(Value::Null));
            let batch = core.audit.append_to(out.batch, &record);
            match core.store.apply(batch).await {
                Ok(_) => {}
                Err(StoreError::Conflict) => {
                    return Err(AwsError::client(
                        "ConcurrentModificationException",
                        "Another request modified the delivery stream; retry the request.",
                    ));
                }
                Err(e) => return Err(internal(e)),
            }
            for p in out.post {
                match p {
                    Post::Upsert(s) => {
                        core.runtime(&s.uid);
                        let uid = s.uid.clone();
                        core.streams.write().insert(s.name.clone(), Arc::new(*s));
                        core.runtime(&uid).notify.notify_one();
                    }
                    Post::Remove(name) => {
                        let removed = core.streams.write().remove(&name);
                        if let Some(s) = removed {
                            let rt = core.runtimes.write().remove(&s.uid);
                            if let Some(rt) = rt {
                                rt.notify.notify_one();
                            }
                            purge(core, &s).await;
                        }
                    }
                }
            }
            core.wake.notify_one();
            Ok(out.resp)
        }
        Err(err) => {
            let record = core.audit.record_for(ctx, ev, Err(&err));
            core.audit.write(&record).await?;
            Err(err)
        }
    }
}

async fn run(
    core: &Arc<Core>,
    op: &str,
    ctx: &CallContext,
    input: &Value,
) -> Result<Out, AwsError> {
    match op {
        "CreateDeliveryStream" => create(core, ctx, input).await,
        "DescribeDeliveryStream" => describe(core, ctx, input),
        "ListDeliveryStreams" => list(core, ctx, input),
        "DeleteDeliveryStream" => delete(core, ctx, input).await,
        "UpdateDestination" => update_destination(core, ctx, input).await,
        "TagDeliveryStream" => tag(core, ctx, input).await,
        "UntagDeliveryStream" => untag(core, ctx, input).await,
        "ListTagsForDeliveryStream" => list_tags(core, ctx, input),
        "StartDeliveryStreamEncryption" | "StopDeliveryStreamEncryption" => {
            let name = str_of(input, "DeliveryStreamName").unwrap_or_default();
            core.authorize(ctx, &format!("firehose:{op}"), &core.stream_arn(name))?;
            Err(invalid(
                "sluice does not encrypt delivery streams with KMS keys (records are buffered \
                 in the server's store); see docs/specs/firehose.md.",
            ))
        }
        _ => Err(AwsError::client(
            "UnknownOperationException",
            format!("Operation {op} is not supported by sluice's Firehose."),
        )),
    }
}

impl Core {
    /// Authorizes `action` on `resource` with the caller's identity policies (root of the
    /// account is allowed unless explicitly denied).
    pub(crate) fn authorize(
        &self,
        ctx: &CallContext,
        action: &str,
        resource: &str,
    ) -> Result<(), AwsError> {
        let p = &ctx.principal;
        if p.kind == PrincipalKind::Root && p.account == self.cfg.account {
            return Ok(());
        }
        let identity = sluice_kms::IdentityPolicies::policies_for(&*self.iam, p);
        if identity.is_empty() && p.kind == PrincipalKind::Root {
            return Ok(());
        }
        let refs: Vec<&sluice_policy::Policy> = identity.iter().map(|x| x.as_ref()).collect();
        let mut context = Context::new();
        context.set_time(self.clock.now().unix_timestamp());
        if let Some(ip) = &ctx.source_ip {
            context.set("aws:SourceIp", ip.as_str());
        }
        let request = Request {
            principal: sluice_kms::policy_authz::principal_info(p),
            action,
            resource,
            context: &context,
        };
        let outcome = evaluate(
            &request,
            &Inputs {
                identity_policies: &refs,
                resource_policy: None,
                resource_account: &self.cfg.account,
                kind: ResourceKind::Generic,
            },
        );
        if outcome.decision == Decision::Allow {
            return Ok(());
        }
        let msg = outcome.denial_message(&request).unwrap_or_else(|| {
            format!(
                "User: {} is not authorized to perform: {action} on resource: {resource}",
                p.arn
            )
        });
        Err(AwsError::access_denied(msg))
    }

    fn stream(&self, name: &str) -> Result<Arc<StreamRecord>, AwsError> {
        self.streams
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| not_found(self, name))
    }

    fn seal_access_key(&self, arn: &str, key: &str) -> String {
        let label = format!("{ACCESS_KEY_LABEL}{arn}");
        base64::engine::general_purpose::STANDARD
            .encode(self.root.seal(label.as_bytes(), key.as_bytes()))
    }

    /// The configured access key of `s`, unsealed.
    pub(crate) fn access_key(&self, s: &StreamRecord) -> Option<zeroize::Zeroizing<String>> {
        let sealed = s.access_key_sealed.as_ref()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .ok()?;
        let label = format!("{ACCESS_KEY_LABEL}{}", s.arn);
        match self.root.open(label.as_bytes(), &bytes) {
            Ok(plain) => String::from_utf8(plain.to_vec())
                .ok()
                .map(zeroize::Zeroizing::new),
            Err(_) => {
                tracing::error!(stream = %s.name, "the stored access key does not unseal");
                None
            }
        }
    }

    /// Checks an endpoint URL against AWS's rule (https on port 443) or, when the operator
    /// allows http, the outbound policy.
    fn check_endpoint_url(&self, url: &str) -> Result<(), AwsError> {
        let policy = self.outbound.policy();
        if !policy.allow_http {
            let u = sluice_outbound::Url::parse(url).ok();
            let ok = u
                .as_ref()
                .is_some_and(|u| u.scheme() == "https" && u.port_or_known_default() == Some(443));
            if !ok {
                return Err(invalid(
                    "Only HTTPS endpoints on port 443 are supported (this server's outbound \
                     policy does not allow plain http or other ports).",
                ));
            }
        }
        policy
            .check_url(url)
            .map(|_| ())
            .map_err(|e| invalid(format!("The endpoint URL is not allowed: {}", e.message)))
    }
}

fn check_buffering(v: &Value, what: &str) -> Result<(), AwsError> {
    if let Some(h) = v.get("BufferingHints") {
        let size = h.get("SizeInMBs").is_some();
        let interval = h.get("IntervalInSeconds").is_some();
        if size != interval {
            return Err(invalid(format!(
                "{what}: BufferingHints must specify both SizeInMBs and IntervalInSeconds, or neither."
            )));
        }
    }
    Ok(())
}

fn check_s3(v: &Value, what: &str, allow_compression_other: bool) -> Result<(), AwsError> {
    let bucket = str_of(v, "BucketARN").unwrap_or_default();
    match model::bucket_of(bucket) {
        Some(b) if crate::objects::valid_bucket(b) => {}
        _ => {
            return Err(invalid(format!(
                "{what}: BucketARN {bucket} is not a valid S3 bucket ARN."
            )));
        }
    }
    if str_of(v, "RoleARN").is_none_or(str::is_empty) {
        return Err(invalid(format!("{what}: RoleARN is required.")));
    }
    check_buffering(v, what)?;
    match str_of(v, "CompressionFormat") {
        None | Some("UNCOMPRESSED") | Some("GZIP") => {}
        Some(other) if !allow_compression_other => {
            return Err(invalid(format!(
                "{what}: CompressionFormat {other} is not supported by sluice (UNCOMPRESSED or GZIP)."
            )));
        }
        Some(_) => {}
    }
    let now = time::OffsetDateTime::now_utc();
    let prefix = str_of(v, "Prefix").unwrap_or_default();
    let eop = str_of(v, "ErrorOutputPrefix");
    if codec::has_expressions(prefix) {
        codec::evaluate_prefix(prefix, now, None, "x")
            .map_err(|e| invalid(format!("{what}: Prefix: {e}")))?;
        if eop.is_none_or(str::is_empty) {
            return Err(invalid(format!(
                "{what}: ErrorOutputPrefix is required when Prefix contains expressions."
            )));
        }
    }
    if let Some(e) = eop
        && codec::has_expressions(e)
    {
        if !e.contains("!{firehose:error-output-type}") {
            return Err(invalid(format!(
                "{what}: ErrorOutputPrefix must contain !{{firehose:error-output-type}} when it uses expressions."
            )));
        }
        codec::evaluate_prefix(e, now, Some(codec::HTTP_ERROR_OUTPUT_TYPE), "x")
            .map_err(|err| invalid(format!("{what}: ErrorOutputPrefix: {err}")))?;
    }
    Ok(())
}

/// Validates an HTTP endpoint configuration (AccessKey already removed).
fn check_http(core: &Core, v: &Value) -> Result<(), AwsError> {
    let url = v["EndpointConfiguration"]["Url"]
        .as_str()
        .unwrap_or_default();
    core.check_endpoint_url(url)?;
    check_buffering(v, "HttpEndpointDestinationConfiguration")?;
    let s3 = v.get("S3Configuration").ok_or_else(|| {
        invalid("HttpEndpointDestinationConfiguration: S3Configuration is required.")
    })?;
    check_s3(s3, "S3Configuration", false)?;
    if let Some(sm) = v.get("SecretsManagerConfiguration")
        && sm.get("Enabled").and_then(Value::as_bool) == Some(true)
    {
        if str_of(sm, "SecretARN").is_none() {
            return Err(invalid(
                "SecretsManagerConfiguration: SecretARN is required when Enabled is true.",
            ));
        }
        if str_of(sm, "RoleARN").is_none() && str_of(v, "RoleARN").is_none() {
            return Err(invalid(
                "SecretsManagerConfiguration: a RoleARN (here or in the destination) is required \
                 to read the secret.",
            ));
        }
    }
    Ok(())
}

/// Removes `EndpointConfiguration.AccessKey` from `v`, returning it.
fn take_access_key(v: &mut Value) -> Option<String> {
    v.get_mut("EndpointConfiguration")
        .and_then(Value::as_object_mut)
        .and_then(|o| o.remove("AccessKey"))
        .and_then(|k| k.as_str().map(str::to_string))
}

fn tags_from(input: &Value) -> Result<Vec<(String, String)>, AwsError> {
    Ok(input
        .get("Tags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| {
                    Some((
                        str_of(t, "Key")?.to_string(),
                        str_of(t, "Value").unwrap_or_default().to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default())
}

fn check_ttl_tag(tags: &std::collections::BTreeMap<String, String>) -> Result<(), AwsError> {
    if let Some(v) = tags.get(model::SECRET_TTL_TAG)
        && v.trim().parse::<u64>().is_err()
    {
        return Err(invalid(format!(
            "Tag {} must be a whole number of seconds.",
            model::SECRET_TTL_TAG
        )));
    }
    Ok(())
}

async fn create(core: &Arc<Core>, ctx: &CallContext, input: &Value) -> Result<Out, AwsError> {
    let name = str_of(input, "DeliveryStreamName")
        .unwrap_or_default()
        .to_string();
    let arn = core.stream_arn(&name);
    core.authorize(ctx, "firehose:CreateDeliveryStream", &arn)?;
    let kind = str_of(input, "DeliveryStreamType").unwrap_or("DirectPut");
    if kind != "DirectPut" {
        return Err(invalid(format!(
            "DeliveryStreamType {kind} is not supported by sluice; use DirectPut."
        )));
    }
    let present: Vec<&str> = DESTINATION_KEYS
        .iter()
        .copied()
        .filter(|k| input.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
    if present.len() != 1 {
        return Err(invalid(
            "Exactly one destination configuration must be specified.",
        ));
    }
    let mut access_key_sealed = None;
    let destination = match present[0] {
        "HttpEndpointDestinationConfiguration" => {
            let mut v = input[present[0]].clone();
            let key = take_access_key(&mut v);
            check_http(core, &v)?;
            access_key_sealed = key.map(|k| core.seal_access_key(&arn, &k));
            Destination::Http(v)
        }
        "ExtendedS3DestinationConfiguration" | "S3DestinationConfiguration" => {
            let v = input[present[0]].clone();
            check_s3(&v, present[0], false)?;
            Destination::S3(v)
        }
        other => {
            return Err(invalid(format!(
                "{other} is not supported by sluice (HTTP endpoint and ExtendedS3 destinations are)."
            )));
        }
    };
    let tags = tags_from(input)?;
    if tags.len() > MAX_TAGS {
        return Err(AwsError::client(
            "LimitExceededException",
            "A delivery stream can have at most 50 tags.",
        ));
    }
    let tags: std::collections::BTreeMap<String, String> = tags.into_iter().collect();
    check_ttl_tag(&tags)?;
    if core.streams.read().contains_key(&name) {
        return Err(AwsError::client(
            "ResourceInUseException",
            format!(
                "Firehose {name} under accountId {} already exists",
                core.cfg.account
            ),
        ));
    }
    let now = core.clock.now_millis();
    let rec = StreamRecord {
        v: 1,
        name: name.clone(),
        arn: arn.clone(),
        uid: hex::encode(uuid::Uuid::new_v4().as_bytes()),
        status: "CREATING".into(),
        failure: None,
        stream_type: "DirectPut".into(),
        version: 1,
        created_ms: now,
        updated_ms: now,
        tags,
        destination,
        access_key_sealed,
        encryption: input
            .get("DeliveryStreamEncryptionConfigurationInput")
            .cloned(),
    };
    let batch = Batch::new()
        .expect(NS_STREAMS, name.as_bytes().to_vec(), None)
        .put(
            NS_STREAMS,
            name.as_bytes().to_vec(),
            serde_json::to_vec(&rec).map_err(internal)?,
        );
    Ok(Out {
        resp: json!({ "DeliveryStreamARN": arn }),
        batch,
        post: vec![Post::Upsert(Box::new(rec))],
    })
}

fn secs(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

fn or_default(v: &Value, key: &str, default: Value) -> Value {
    match v.get(key) {
        Some(x) if !x.is_null() => x.clone(),
        _ => default,
    }
}

fn buffering(v: &Value) -> Value {
    or_default(
        v,
        "BufferingHints",
        json!({"SizeInMBs": 5, "IntervalInSeconds": 300}),
    )
}

fn s3_description(v: &Value) -> Value {
    let mut d = Map::new();
    for k in ["RoleARN", "BucketARN", "Prefix", "ErrorOutputPrefix"] {
        if let Some(x) = v.get(k) {
            d.insert(k.into(), x.clone());
        }
    }
    d.insert("BufferingHints".into(), buffering(v));
    d.insert(
        "CompressionFormat".into(),
        or_default(v, "CompressionFormat", json!("UNCOMPRESSED")),
    );
    d.insert(
        "EncryptionConfiguration".into(),
        or_default(
            v,
            "EncryptionConfiguration",
            json!({"NoEncryptionConfig": "NoEncryption"}),
        ),
    );
    d.insert(
        "CloudWatchLoggingOptions".into(),
        or_default(v, "CloudWatchLoggingOptions", json!({"Enabled": false})),
    );
    Value::Object(d)
}

/// The DeliveryStreamDescription of `s` (never the access key).
pub(crate) fn description(core: &Core, s: &StreamRecord) -> Value {
    let dest = match &s.destination {
        Destination::Http(v) => {
            let ep = &v["EndpointConfiguration"];
            let mut e = Map::new();
            for k in ["Url", "Name"] {
                if let Some(x) = ep.get(k) {
                    e.insert(k.into(), x.clone());
                }
            }
            let mut d = Map::new();
            d.insert("EndpointConfiguration".into(), Value::Object(e));
            d.insert("BufferingHints".into(), buffering(v));
            d.insert(
                "CloudWatchLoggingOptions".into(),
                or_default(v, "CloudWatchLoggingOptions", json!({"Enabled": false})),
            );
            d.insert(
                "RequestConfiguration".into(),
                or_default(
                    v,
                    "RequestConfiguration",
                    json!({"ContentEncoding": "NONE"}),
                ),
            );
            for k in [
                "ProcessingConfiguration",
                "RoleARN",
                "SecretsManagerConfiguration",
            ] {
                if let Some(x) = v.get(k) {
                    d.insert(k.into(), x.clone());
                }
            }
            d.insert(
                "RetryOptions".into(),
                or_default(v, "RetryOptions", json!({"DurationInSeconds": 300})),
            );
            d.insert(
                "S3BackupMode".into(),
                or_default(v, "S3BackupMode", json!("FailedDataOnly")),
            );
            d.insert(
                "S3DestinationDescription".into(),
                s3_description(&v["S3Configuration"]),
            );
            json!({"DestinationId": DESTINATION_ID, "HttpEndpointDestinationDescription": d})
        }
        Destination::S3(v) => {
            let mut d = match s3_description(v) {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            d.insert(
                "S3BackupMode".into(),
                or_default(v, "S3BackupMode", json!("Disabled")),
            );
            for k in ["ProcessingConfiguration", "FileExtension", "CustomTimeZone"] {
                if let Some(x) = v.get(k) {
                    d.insert(k.into(), x.clone());
                }
            }
            json!({
                "DestinationId": DESTINATION_ID,
                "ExtendedS3DestinationDescription": d,
                "S3DestinationDescription": s3_description(v),
            })
        }
    };
    let mut out = json!({
        "DeliveryStreamName": s.name,
        "DeliveryStreamARN": s.arn,
        "DeliveryStreamStatus": s.status,
        "DeliveryStreamType": s.stream_type,
        "VersionId": s.version.to_string(),
        "CreateTimestamp": secs(s.created_ms),
        "Destinations": [dest],
        "HasMoreDestinations": false,
        "DeliveryStreamEncryptionConfiguration": {"Status": "DISABLED"},
    });
    if s.version > 1 {
        out["LastUpdateTimestamp"] = secs(s.updated_ms);
    }
    if let Some(f) = &s.failure {
        out["FailureDescription"] = json!({"Type": "UNKNOWN_ERROR", "Details": f});
    } else if let Some(rt) = core.runtimes.read().get(&s.uid)
        && let Some(e) = rt.last_error.lock().as_ref()
    {
        out["FailureDescription"] = json!({
            "Type": "UNKNOWN_ERROR",
            "Details": format!("Delivery failed: {}: {}", e.code, e.message),
        });
    }
    out
}

fn describe(core: &Arc<Core>, ctx: &CallContext, input: &Value) -> Result<Out, AwsError> {
    let name = str_of(input, "DeliveryStreamName").unwrap_or_default();
    core.authorize(
        ctx,
        "firehose:DescribeDeliveryStream",
        &core.stream_arn(name),
    )?;
    let s = core.stream(name)?;
    Ok(Out {
        resp: json!({ "DeliveryStreamDescription": description(core, &s) }),
        batch: Batch::new(),
        post: vec![],
    })
}

fn list(core: &Arc<Core>, ctx: &CallContext, input: &Value) -> Result<Out, AwsError> {
    core.authorize(ctx, "firehose:ListDeliveryStreams", "*")?;
    let limit = input.get("Limit").and_then(Value::as_u64).unwrap_or(10) as usize;
    let after = str_of(input, "ExclusiveStartDeliveryStreamName");
    let kind = str_of(input, "DeliveryStreamType");
    let mut names: Vec<String> = core
        .streams
        .read()
        .values()
        .filter(|s| kind.is_none_or(|k| k == s.stream_type))
        .map(|s| s.name.clone())
        .filter(|n| after.is_none_or(|a| n.as_str() > a))
        .collect();
    names.sort();
    let more = names.len() > limit;
    names.truncate(limit);
    Ok(Out {
        resp: json!({"DeliveryStreamNames": names, "HasMoreDeliveryStreams": more}),
        batch: Batch::new(),
        post: vec![],
    })
}

async fn delete(core: &Arc<Core>, ctx: &CallContext, input: &Value) -> Result<Out, AwsError> {
    let name = str_of(input, "DeliveryStreamName").unwrap_or_default();
    core.authorize(ctx, "firehose:DeleteDeliveryStream", &core.stream_arn(name))?;
    let s = core.stream(name)?;
    let cur = core
        .store
        .get(NS_STREAMS, name.as_bytes())
        .await
        .map_err(internal)?
        .ok_or_else(|| not_found(core, name))?;
    let uid = s.uid_bytes();
    let batch = Batch::new()
        .expect(NS_STREAMS, name.as_bytes().to_vec(), Some(cur.version))
        .delete(NS_STREAMS, name.as_bytes().to_vec())
        .delete(NS_BATCHES, uid.to_vec());
    Ok(Out {
        resp: json!({}),
        batch,
        post: vec![Post::Remove(name.to_string())],
    })
}

/// Deletes the buffered records of a deleted stream.
async fn purge(core: &Core, s: &StreamRecord) {
    let uid = s.uid_bytes();
    loop {
        let page = match core
            .store
            .scan(NS_RECORDS, KeyRange::prefix(&uid), 500, false)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(stream = %s.name, error = %e, "could not purge a deleted stream's records");
                return;
            }
        };
        if page.is_empty() {
            return;
        }
        let mut b = Batch::new();
        for (k, _) in &page {
            b = b.delete(NS_RECORDS, k.clone());
        }
        if core.store.apply(b).await.is_err() {
            return;
        }
    }
}

/// Merges `update` into `base` (objects recursively; everything else replaced).
fn merge(base: &mut Value, update: &Value) {
    match (base, update) {
        (Value::Object(b), Value::Object(u)) => {
            for (k, v) in u {
                if v.is_null() {
                    continue;
                }
                match b.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, u) => *b = u.clone(),
    }
}

async fn update_destination(
    core: &Arc<Core>,
    ctx: &CallContext,
    input: &Value,
) -> Result<Out, AwsError> {
    let name = str_of(input, "DeliveryStreamName").unwrap_or_default();
    core.authorize(ctx, "firehose:UpdateDestination", &core.stream_arn(name))?;
    let s = core.stream(name)?;
    let want = str_of(input, "CurrentDeliveryStreamVersionId").unwrap_or_default();
    if want != s.version.to_string() {
        return Err(AwsError::client(
            "ConcurrentModificationException",
            format!(
                "Cannot update firehose: {name} since the current version id: {} and specified \
                 version id: {want} do not match",
                s.version
            ),
        ));
    }
    if str_of(input, "DestinationId") != Some(DESTINATION_ID) {
        return Err(invalid(format!(
            "Destination Id {} not found.",
            str_of(input, "DestinationId").unwrap_or_default()
        )));
    }
    if s.status != "ACTIVE" {
        return Err(AwsError::client(
            "ResourceInUseException",
            format!("Firehose {name} is not ACTIVE (status {}).", s.status),
        ));
    }
    let mut rec = (*s).clone();
    let http_update = input.get("HttpEndpointDestinationUpdate");
    let s3_update = input
        .get("ExtendedS3DestinationUpdate")
        .or_else(|| input.get("S3DestinationUpdate"));
    let others = DESTINATION_KEYS.iter().any(|k| {
        let u = k.replace("Configuration", "Update");
        !matches!(
            u.as_str(),
            "HttpEndpointDestinationUpdate" | "ExtendedS3DestinationUpdate" | "S3DestinationUpdate"
        ) && input.get(&u).is_some()
    });
    match (&mut rec.destination, http_update, s3_update) {
        (Destination::Http(cfg), Some(u), None) if !others => {
            let mut u = u.clone();
            let key = take_access_key(&mut u);
            if let Some(obj) = u.as_object_mut()
                && let Some(s3u) = obj.remove("S3Update")
            {
                let mut s3 = cfg["S3Configuration"].clone();
                merge(&mut s3, &s3u);
                cfg["S3Configuration"] = s3;
            }
            if let Some(sm) = u.get("SecretsManagerConfiguration").cloned() {
                cfg["SecretsManagerConfiguration"] = sm;
                if let Some(o) = u.as_object_mut() {
                    o.remove("SecretsManagerConfiguration");
                }
            }
            merge(cfg, &u);
            check_http(core, cfg)?;
            if let Some(k) = key {
                rec.access_key_sealed = Some(core.seal_access_key(&rec.arn, &k));
            }
        }
        (Destination::S3(cfg), None, Some(u)) if !others => {
            let mut u = u.clone();
            if let Some(o) = u.as_object_mut() {
                o.remove("S3BackupUpdate");
            }
            merge(cfg, &u);
            check_s3(cfg, "ExtendedS3DestinationUpdate", false)?;
        }
        _ => {
            return Err(invalid(
                "sluice updates a destination only with an update of its own kind \
                 (HttpEndpointDestinationUpdate or ExtendedS3DestinationUpdate); it does not \
                 change a stream's destination type.",
            ));
        }
    }
    rec.version += 1;
    rec.updated_ms = core.clock.now_millis();
    write_stream(core, rec, json!({})).await
}

/// A management write of `rec` over its current stored version.
async fn write_stream(core: &Core, rec: StreamRecord, resp: Value) -> Result<Out, AwsError> {
    let cur = core
        .store
        .get(NS_STREAMS, rec.name.as_bytes())
        .await
        .map_err(internal)?
        .ok_or_else(|| not_found(core, &rec.name))?;
    let batch = Batch::new()
        .expect(NS_STREAMS, rec.name.as_bytes().to_vec(), Some(cur.version))
        .put(
            NS_STREAMS,
            rec.name.as_bytes().to_vec(),
            serde_json::to_vec(&rec).map_err(internal)?,
        );
    Ok(Out {
        resp,
        batch,
        post: vec![Post::Upsert(Box::new(rec))],
    })
}

async fn tag(core: &Arc<Core>, ctx: &CallContext, input: &Value) -> Result<Out, AwsError> {
    let name = str_of(input, "DeliveryStreamName").unwrap_or_default();
    core.authorize(ctx, "firehose:TagDeliveryStream", &core.stream_arn(name))?;
    let s = core.stream(name)?;
    let mut rec = (*s).clone();
    for (k, v) in tags_from(input)? {
        rec.tags.insert(k, v);
    }
    if rec.tags.len() > MAX_TAGS {
        return Err(AwsError::client(
            "LimitExceededException",
            "A delivery stream can have at most 50 tags.",
        ));
    }
    check_ttl_tag(&rec.tags)?;
    write_stream(core, rec, json!({})).await
}

async fn untag(core: &Arc<Core>, ctx: &CallContext, input: &Value) -> Result<Out, AwsError> {
    let name = str_of(input, "DeliveryStreamName").unwrap_or_default();
    core.authorize(ctx, "firehose:UntagDeliveryStream", &core.stream_arn(name))?;
    let s = core.stream(name)?;
    let mut rec = (*s).clone();
    if let Some(keys) = input.get("TagKeys").and_then(Value::as_array) {
        for k in keys.iter().filter_map(Value::as_str) {
            rec.tags.remove(k);
        }
    }
    write_stream(core, rec, json!({})).await
}

fn list_tags(core: &Arc<Core>, ctx: &CallContext, input: &Value) -> Result<Out, AwsError> {
    let name = str_of(input, "DeliveryStreamName").unwrap_or_default();
    core.authorize(
        ctx,
        "firehose:ListTagsForDeliveryStream",
        &core.stream_arn(name),
    )?;
    let s = core.stream(name)?;
    let limit = input.get("Limit").and_then(Value::as_u64).unwrap_or(50) as usize;
    let after = str_of(input, "ExclusiveStartTagKey");
    let all: Vec<(&String, &String)> = s
        .tags
        .iter()
        .filter(|(k, _)| after.is_none_or(|a| k.as_str() > a))
        .collect();
    let more = all.len() > limit;
    let tags: Vec<Value> = all
        .into_iter()
        .take(limit)
        .map(|(k, v)| json!({"Key": k, "Value": v}))
        .collect();
    Ok(Out {
        resp: json!({"Tags": tags, "HasMoreTags": more}),
        batch: Batch::new(),
        post: vec![],
    })
}

/// The stream a Put* call may write to.
fn active_stream(core: &Core, name: &str) -> Result<Arc<StreamRecord>, AwsError> {
    let s = core.stream(name)?;
    if s.status != "ACTIVE" {
        return Err(AwsError::client(
            "ResourceNotFoundException",
            format!(
                "Firehose {name} under account {} is not ACTIVE (status {}).",
                core.cfg.account, s.status
            ),
        ));
    }
    Ok(s)
}

impl Core {
    /// Commits `records` as one chunk of stream `s` (durably) and returns the chunk's sequence.
    /// `extra` ops are committed in the same batch.
    pub(crate) async fn append_records(
        &self,
        s: &StreamRecord,
        records: &[&[u8]],
        extra: Batch,
    ) -> Result<u64, AwsError> {
        let (seq, batch, bytes) = self.chunk_batch(s, records, extra);
        self.store.apply(batch).await.map_err(internal)?;
        self.note_appended(s, records.len() as u64, bytes);
        Ok(seq)
    }

    /// Commits a chunk built by the caller (its arrival time is set now) as the next chunk of
    /// stream `s`, durably, with the `extra` ops; returns its sequence.
    pub(crate) async fn append_chunk(
        &self,
        s: &StreamRecord,
        chunk: model::ChunkBuilder,
        extra: Batch,
    ) -> Result<u64, AwsError> {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let (records, bytes) = (u64::from(chunk.records()), chunk.data_bytes());
        let chunk = chunk.finish(self.clock.now_millis());
        let batch = extra.put(NS_RECORDS, model::record_key(&s.uid_bytes(), seq), chunk);
        self.store.apply(batch).await.map_err(internal)?;
        self.note_appended(s, records, bytes);
        Ok(seq)
    }

    /// The batch that appends `records` as a chunk (and its sequence and byte count).
    pub(crate) fn chunk_batch(
        &self,
        s: &StreamRecord,
        records: &[&[u8]],
        extra: Batch,
    ) -> (u64, Batch, u64) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let now = self.clock.now_millis();
        let chunk = model::encode_chunk(now, records.iter().copied());
        let bytes: u64 = records.iter().map(|r| r.len() as u64).sum();
        let batch = extra.put(NS_RECORDS, model::record_key(&s.uid_bytes(), seq), chunk);
        (seq, batch, bytes)
    }

    /// Accounts for a committed chunk and wakes the stream's delivery task if it should flush.
    pub(crate) fn note_appended(&self, s: &StreamRecord, records: u64, bytes: u64) {
        let now = self.clock.now_millis();
        let rt = self.runtime(&s.uid);
        {
            let mut b = rt.buffered.lock();
            b.records += records;
            b.bytes += bytes;
            b.oldest_ms = Some(b.oldest_ms.map_or(now, |o| o.min(now)));
        }
        self.metrics
            .incoming_records
            .fetch_add(records, Ordering::Relaxed);
        self.metrics
            .incoming_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        rt.notify.notify_one();
    }
}

pub(crate) fn record_id(seq: u64, i: usize) -> String {
    format!("{seq:020}{i:06}")
}

fn decode_data(r: &Value) -> Result<Vec<u8>, AwsError> {
    let s = r.get("Data").and_then(Value::as_str).unwrap_or_default();
    sluice_wire::decode_blob(s)
}

async fn put_record(core: &Arc<Core>, ctx: &CallContext, input: &Value) -> Result<Value, AwsError> {
    let name = str_of(input, "DeliveryStreamName").unwrap_or_default();
    core.authorize(ctx, "firehose:PutRecord", &core.stream_arn(name))?;
    let s = active_stream(core, name)?;
    let data = decode_data(&input["Record"])?;
    let seq = core.append_records(&s, &[&data], Batch::new()).await?;
    Ok(json!({"RecordId": record_id(seq, 0), "Encrypted": false}))
}

async fn put_record_batch(
    core: &Arc<Core>,
    ctx: &CallContext,
    input: &Value,
) -> Result<Value, AwsError> {
    let name = str_of(input, "DeliveryStreamName").unwrap_or_default();
    core.authorize(ctx, "firehose:PutRecordBatch", &core.stream_arn(name))?;
    let s = active_stream(core, name)?;
    let data = batch_records(input)?;
    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let seq = core.append_records(&s, &refs, Batch::new()).await?;
    let responses: Vec<Value> = (0..refs.len())
        .map(|i| json!({"RecordId": record_id(seq, i)}))
        .collect();
    Ok(json!({"FailedPutCount": 0, "Encrypted": false, "RequestResponses": responses}))
}

/// The decoded records of a validated PutRecordBatch input (the generic path).
pub(crate) fn batch_records(input: &Value) -> Result<Vec<Vec<u8>>, AwsError> {
    let recs: &[Value] = input
        .get("Records")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if recs.is_empty() || recs.len() > 500 {
        return Err(invalid("Records must hold between 1 and 500 records."));
    }
    let mut data = Vec::with_capacity(recs.len());
    let mut total = 0usize;
    for r in recs {
        let d = decode_data(r)?;
        total += d.len();
        if total > MAX_BATCH_BYTES {
            return Err(invalid(format!(
                "The records of a PutRecordBatch request total more than {MAX_BATCH_BYTES} bytes."
            )));
        }
        data.push(d);
    }
    Ok(data)
}

/// PutRecordBatch from the raw body through [`crate::ingest`]'s decoder, or `None` when the
/// decoder declines the body (the caller then takes the generic path, which produces the
/// errors). The checks after decoding come in the generic path's order: authorization, the
/// stream, then the durable commit; the answer is the generic path's, byte for byte.
pub(crate) async fn put_record_batch_raw(
    core: &Arc<Core>,
    ctx: &CallContext,
    body: &[u8],
) -> Option<Result<Vec<u8>, AwsError>> {
    let d = crate::ingest::decode_put_record_batch(body)?;
    Some(
        async {
            core.authorize(ctx, "firehose:PutRecordBatch", &core.stream_arn(d.stream))?;
            let s = active_stream(core, d.stream)?;
            let n = d.chunk.records() as usize;
            let seq = core.append_chunk(&s, d.chunk, Batch::new()).await?;
            Ok(batch_response(seq, n))
        }
        .await,
    )
}

/// The PutRecordBatch answer for `n` records committed as chunk `seq`, written directly (the
/// bytes `serde_json` makes of the generic path's value: members in sorted order).
pub(crate) fn batch_response(seq: u64, n: usize) -> Vec<u8> {
    use std::io::Write;
    const HEAD: &[u8] = br#"{"Encrypted":false,"FailedPutCount":0,"RequestResponses":["#;
    let mut out = Vec::with_capacity(HEAD.len() + n * 42 + 2);
    out.extend_from_slice(HEAD);
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        // `record_id`'s format, without a String per record.
        let _ = write!(out, r#"{{"RecordId":"{seq:020}{i:06}"}}"#);
    }
    out.extend_from_slice(b"]}");
    out
}
