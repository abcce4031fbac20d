//! The EventBridge operations.
//!
//! Management operations are serialized by [`Core::write_lock`], authorized, and commit their
//! state change and audit record in one batch (the in-memory mirror is updated after the
//! commit). `PutEvents` takes no lock: it matches against the current matcher snapshot and
//! commits all the request's deliveries in one batch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use sluice_audit::{AuditEvent, AuditResource};
use sluice_core::{AwsError, CallContext, PrincipalKind};
use sluice_pattern::Pattern;
use sluice_store::{Batch, StoreError};

use crate::model::{
    BusRecord, NS_BUSES, NS_RULES, NS_SCHED, RetryPolicy, RuleRecord, TargetRecord, rule_key,
};
use crate::transform::{parse_path, validate_template};
use crate::{Core, EVENT_SOURCE, RuleId, internal};

const MAX_BUSES: usize = 100;
const MAX_RULES_PER_BUS: usize = 300;
const MAX_TARGETS_PER_RULE: usize = 5;
const MAX_TAGS: usize = 50;

pub(crate) fn not_found(msg: String) -> AwsError {
    AwsError::client("ResourceNotFoundException", msg)
}

pub(crate) fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

pub(crate) fn secs(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

fn tags_in(v: &Value) -> Result<BTreeMap<String, String>, AwsError> {
    let mut out = BTreeMap::new();
    if let Some(list) = v.get("Tags").and_then(Value::as_array) {
        for t in list {
            let (Some(k), Some(val)) = (s(t, "Key"), s(t, "Value")) else {
                return Err(AwsError::validation("Each tag needs a Key and a Value."));
            };
            out.insert(k.to_string(), val.to_string());
        }
    }
    if out.len() > MAX_TAGS {
        return Err(AwsError::client(
            "LimitExceededException",
            format!("A resource can have at most {MAX_TAGS} tags."),
        ));
    }
    Ok(out)
}

fn tags_out(t: &BTreeMap<String, String>) -> Value {
    Value::Array(
        t.iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect(),
    )
}

/// A change to the in-memory mirror, applied once the batch commits.
pub(crate) enum Post {
    Bus(String, Option<BusRecord>),
    Rule(RuleId, Option<RuleRecord>),
    Connection(String, Option<Box<crate::model::ConnectionRecord>>),
    ApiDestination(String, Option<crate::model::ApiDestinationRecord>),
}

pub(crate) struct Out {
    pub(crate) resp: Value,
    pub(crate) batch: Batch,
    pub(crate) post: Vec<Post>,
}

impl Out {
    pub(crate) fn read(resp: Value) -> Self {
        Self {
            resp,
            batch: Batch::new(),
            post: Vec::new(),
        }
    }
}

fn is_write(op: &str) -> bool {
    !matches!(
        op,
        "DescribeEventBus"
            | "ListEventBuses"
            | "DescribeRule"
            | "ListRules"
            | "ListRuleNamesByTarget"
            | "ListTargetsByRule"
            | "ListTagsForResource"
            | "TestEventPattern"
            | "DescribeConnection"
            | "ListConnections"
            | "DescribeApiDestination"
            | "ListApiDestinations"
    )
}

pub(crate) async fn dispatch(
    core: &Arc<Core>,
    op: &str,
    ctx: &CallContext,
    input: Value,
) -> Result<Value, AwsError> {
    if op == "PutEvents" {
        return put_events(core, ctx, &input).await;
    }
    let write = is_write(op);
    let _guard = if write {
        Some(core.write_lock.lock().await)
    } else {
        None
    };
    let mut resources = Vec::new();
    let result = run(core, op, ctx, &input, &mut resources).await;
    let ev = AuditEvent {
        event_source: EVENT_SOURCE,
        event_name: op,
        request_parameters: audit_params(&input),
        resources: resources
            .into_iter()
            .map(|arn: String| AuditResource {
                kind: if arn.contains(":rule/") {
                    "AWS::Events::Rule".into()
                } else if arn.contains(":connection/") {
                    "AWS::Events::Connection".into()
                } else if arn.contains(":api-destination/") {
                    "AWS::Events::ApiDestination".into()
                } else {
                    "AWS::Events::EventBus".into()
                },
                arn,
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
                        "The resource was modified concurrently; retry the request.",
                    ));
                }
                Err(e) => return Err(internal(e)),
            }
            for p in out.post {
                match p {
                    Post::Bus(name, Some(b)) => {
                        core.matchers
                            .write()
                            .entry(name.clone())
                            .or_insert_with(|| Arc::new(sluice_pattern::Matcher::new()));
                        core.buses.write().insert(name, Arc::new(b));
                    }
                    Post::Bus(name, None) => {
                        core.buses.write().remove(&name);
                        core.matchers.write().remove(&name);
                    }
                    Post::Rule(key, r) => core.install_rule(r, &key),
                    Post::Connection(name, c) => core.conns.install_connection(name, c.map(|c| *c)),
                    Post::ApiDestination(name, d) => core.conns.install_api_destination(name, d),
                }
            }
            Ok(out.resp)
        }
        Err(err) => {
            let record = core.audit.record_for(ctx, ev, Err(&err));
            core.audit.write(&record).await?;
            Err(err)
        }
    }
}

/// Request parameters for the audit record: everything but event payloads, policies and
/// credentials (connection secrets are replaced by `HIDDEN_DUE_TO_SECURITY_REASONS`, as
/// CloudTrail does).
fn audit_params(input: &Value) -> Value {
    let mut v = input.clone();
    if let Value::Object(m) = &mut v {
        m.remove("Event");
        m.remove("Policy");
        if let Some(a) = m.get_mut("AuthParameters") {
            crate::connections::redact_auth_parameters(a);
        }
    }
    v
}

async fn run(
    core: &Arc<Core>,
    op: &str,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
) -> Result<Out, AwsError> {
    match op {
        "CreateEventBus" => create_bus(core, ctx, input, res),
        "DescribeEventBus" => describe_bus(core, ctx, input, res),
        "UpdateEventBus" => update_bus(core, ctx, input, res),
        "DeleteEventBus" => delete_bus(core, ctx, input, res),
        "ListEventBuses" => list_buses(core, ctx, input),
        "PutRule" => put_rule(core, ctx, input, res),
        "DescribeRule" => describe_rule(core, ctx, input, res),
        "DeleteRule" => delete_rule(core, ctx, input, res),
        "ListRules" => list_rules(core, ctx, input),
        "EnableRule" => set_state(core, ctx, input, res, "ENABLED"),
        "DisableRule" => set_state(core, ctx, input, res, "DISABLED"),
        "ListRuleNamesByTarget" => rule_names_by_target(core, ctx, input),
        "PutTargets" => put_targets(core, ctx, input, res),
        "RemoveTargets" => remove_targets(core, ctx, input, res),
        "ListTargetsByRule" => list_targets(core, ctx, input, res),
        "TestEventPattern" => test_event_pattern(input),
        "TagResource" => tag_resource(core, ctx, input, res, true),
        "UntagResource" => tag_resource(core, ctx, input, res, false),
        "ListTagsForResource" => list_tags(core, ctx, input, res),
        "PutPermission" => put_permission(core, ctx, input, res),
        "RemovePermission" => remove_permission(core, ctx, input, res),
        "CreateConnection" => crate::connections::create(core, ctx, input, res).await,
        "DescribeConnection" => crate::connections::describe(core, ctx, input, res),
        "UpdateConnection" => crate::connections::update(core, ctx, input, res).await,
        "DeleteConnection" => crate::connections::delete(core, ctx, input, res).await,
        "ListConnections" => crate::connections::list(core, ctx, input),
        "DeauthorizeConnection" => crate::connections::deauthorize(core, ctx, input, res).await,
        "CreateApiDestination" => crate::apidest::create(core, ctx, input, res),
        "DescribeApiDestination" => crate::apidest::describe(core, ctx, input, res),
        "UpdateApiDestination" => crate::apidest::update(core, ctx, input, res),
        "DeleteApiDestination" => crate::apidest::delete(core, ctx, input, res),
        "ListApiDestinations" => crate::apidest::list(core, ctx, input),
        _ => Err(AwsError::client(
            "UnknownOperationException",
            format!("The EventBridge operation {op} is not supported by sluice."),
        )),
    }
}

fn account_action(core: &Core, ctx: &CallContext, action: &str) -> Result<(), AwsError> {
    let resource = format!(
        "arn:aws:events:{}:{}:event-bus/*",
        core.cfg.region, core.cfg.account
    );
    core.authorize(ctx, action, &resource, None)
}

fn bus_put(batch: Batch, b: &BusRecord) -> Result<Batch, AwsError> {
    Ok(batch.put(
        NS_BUSES,
        b.name.as_bytes().to_vec(),
        serde_json::to_vec(b).map_err(internal)?,
    ))
}

fn rule_put(batch: Batch, r: &RuleRecord) -> Result<Batch, AwsError> {
    Ok(batch.put(
        NS_RULES,
        rule_key(&r.bus, &r.name),
        serde_json::to_vec(r).map_err(internal)?,
    ))
}

fn create_bus(
    core: &Core,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
) -> Result<Out, AwsError> {
    let name = s(input, "Name").unwrap_or_default();
    let arn = core.bus_arn(name);
    res.push(arn.clone());
    let tags = tags_in(input)?;
    core.authorize(ctx, "events:CreateEventBus", &arn, None)?;
    if input.get("EventSourceName").is_some() {
        return Err(AwsError::validation(
            "Partner event sources are not supported by sluice.",
        ));
    }
    if input.get("DeadLetterConfig").is_some() {
        return Err(AwsError::validation(
            "DeadLetterConfig needs an SQS queue, and sluice has no SQS; use the dead-letter store (sluice dlq).",
        ));
    }
    if input.get("KmsKeyIdentifier").is_some() {
        return Err(AwsError::validation(
            "KmsKeyIdentifier is not supported by sluice: events are stored in the sluice store.",
        ));
    }
    if name.contains('/') || name.is_empty() {
        return Err(AwsError::validation(format!(
            "Event bus name {name} is not valid."
        )));
    }
    {
        let buses = core.buses.read();
        if buses.contains_key(name) {
            return Err(AwsError::client(
                "ResourceAlreadyExistsException",
                format!("Event bus {name} already exists."),
            ));
        }
        if buses.len() >= MAX_BUSES {
            return Err(AwsError::client(
                "LimitExceededException",
                format!("The account has reached its limit of {MAX_BUSES} event buses."),
            ));
        }
    }
    let now = core.clock.now_millis();
    let b = BusRecord {
        v: 1,
        name: name.to_string(),
        arn: arn.clone(),
        description: s(input, "Description").map(str::to_string),
        policy: None,
        tags,
        created_ms: now,
        modified_ms: now,
    };
    let batch = bus_put(
        Batch::new().expect(NS_BUSES, name.as_bytes().to_vec(), None),
        &b,
    )?;
    let mut resp = json!({"EventBusArn": arn});
    if let Some(d) = &b.description {
        resp["Description"] = json!(d);
    }
    Ok(Out {
        resp,
        batch,
        post: vec![Post::Bus(name.to_string(), Some(b))],
    })
}

fn bus_json(b: &BusRecord) -> Value {
    let mut v = json!({
        "Name": b.name,
        "Arn": b.arn,
        "CreationTime": secs(b.created_ms),
        "LastModifiedTime": secs(b.modified_ms),
    });
    if let Some(d) = &b.description {
        v["Description"] = json!(d);
    }
    if let Some(p) = &b.policy {
        v["Policy"] = json!(p);
    }
    v
}

fn describe_bus(
    core: &Core,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
) -> Result<Out, AwsError> {
    let name = core.bus_name(s(input, "Name"))?;
    let arn = core.bus_arn(name);
    res.push(arn.clone());
    let b = core.bus(name);
    core.authorize(ctx, "events:DescribeEventBus", &arn, b.as_deref().ok())?;
    let b = b?;
    Ok(Out::read(bus_json(&b)))
}

fn update_bus(
    core: &Core,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
) -> Result<Out, AwsError> {
    let name = core.bus_name(s(input, "Name"))?;
    let arn = core.bus_arn(name);
    res.push(arn.clone());
    let b = core.bus(name);
    core.authorize(ctx, "events:UpdateEventBus", &arn, b.as_deref().ok())?;
    let mut b = (*b?).clone();
    if input.get("DeadLetterConfig").is_some() || input.get("KmsKeyIdentifier").is_some() {
        return Err(AwsError::validation(
            "DeadLetterConfig and KmsKeyIdentifier are not supported by sluice.",
        ));
    }
    if let Some(d) = s(input, "Description") {
        b.description = Some(d.to_string());
    }
    b.modified_ms = core.clock.now_millis();
    let batch = bus_put(Batch::new(), &b)?;
    let mut resp = json!({"Arn": b.arn, "Name": b.name});
    if let Some(d) = &b.description {
        resp["Description"] = json!(d);
    }
    Ok(Out {
        resp,
        batch,
        post: vec![Post::Bus(b.name.clone(), Some(b))],
    })
}

fn delete_bus(
    core: &Core,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
) -> Result<Out, AwsError> {
    let name = s(input, "Name").unwrap_or_default();
    let arn = core.bus_arn(name);
    res.push(arn.clone());
    let b = core.bus(name).ok();
    core.authorize(ctx, "events:DeleteEventBus", &arn, b.as_deref())?;
    if name == "default" {
        return Err(AwsError::validation("Cannot delete event bus default."));
    }
    let Some(_) = b else {
        // AWS answers success for a bus that does not exist.
        return Ok(Out::read(json!({})));
    };
    let mut batch = Batch::new().delete(NS_BUSES, name.as_bytes().to_vec());
    let mut post = vec![Post::Bus(name.to_string(), None)];
    for ((bus, rule), r) in core.rules.read().iter() {
        if bus == name {
            batch = batch
                .delete(NS_RULES, rule_key(bus, rule))
                .delete(NS_SCHED, r.arn.as_bytes().to_vec());
            post.push(Post::Rule((bus.clone(), rule.clone()), None));
        }
    }
    Ok(Out {
        resp: json!({}),
        batch,
        post,
    })
}

/// Sorted names after the NextToken, at most `Limit` (default 100), and the next token.
pub(crate) fn page<T: Clone>(
    mut items: Vec<(String, T)>,
    input: &Value,
) -> Result<(Vec<T>, Option<String>), AwsError> {
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let limit = input
        .get("Limit")
        .and_then(Value::as_u64)
        .unwrap_or(100)
        .clamp(1, 100) as usize;
    let start = match s(input, "NextToken") {
        Some(t) => items.partition_point(|(n, _)| n.as_str() < t),
        None => 0,
    };
    let rest = &items[start.min(items.len())..];
    let next = rest.get(limit).map(|(n, _)| n.clone());
    Ok((
        rest.iter().take(limit).map(|(_, t)| t.clone()).collect(),
        next,
    ))
}

pub(crate) fn with_token(mut v: Value, next: Option<String>) -> Value {
    if let Some(t) = next {
        v["NextToken"] = json!(t);
    }
    v
}

fn list_buses(core: &Core, ctx: &CallContext, input: &Value) -> Result<Out, AwsError> {
    account_action(core, ctx, "events:ListEventBuses")?;
    let prefix = s(input, "NamePrefix").unwrap_or("");
    let items: Vec<(String, Value)> = core
        .buses
        .read()
        .values()
        .filter(|b| b.name.starts_with(prefix))
        .map(|b| (b.name.clone(), bus_json(b)))
        .collect();
    let (list, next) = page(items, input)?;
    Ok(Out::read(with_token(json!({"EventBuses": list}), next)))
}

fn put_rule(
    core: &Core,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
) -> Result<Out, AwsError> {
    let name = s(input, "Name").unwrap_or_default();
    let bus = core.bus_name(s(input, "EventBusName"))?;
    let arn = core.rule_arn(bus, name);
    res.push(arn.clone());
    let b = core.bus(bus);
    let tags = tags_in(input)?;
    core.authorize(ctx, "events:PutRule", &arn, b.as_deref().ok())?;
    b?;
    let pattern = s(input, "EventPattern");
    let schedule = s(input, "ScheduleExpression");
    if pattern.is_none() && schedule.is_none() {
        return Err(AwsError::validation(
            "Parameter(s) ScheduleExpression or EventPattern must be specified.",
        ));
    }
    if let Some(p) = pattern {
        Pattern::parse(p)
            .map_err(|e| AwsError::client("InvalidEventPatternException", e.to_string()))?;
    }
    if let Some(e) = schedule {
        if bus != "default" {
            return Err(AwsError::validation(
                "ScheduleExpression is supported only on the default event bus.",
            ));
        }
        crate::schedule::parse(e)?;
    }
    let existing = core.rule(bus, name).ok();
    if existing.is_none()
        && core.rules.read().keys().filter(|(b, _)| b == bus).count() >= MAX_RULES_PER_BUS
    {
        return Err(AwsError::client(
            "LimitExceededException",
            format!("The event bus {bus} has reached its limit of {MAX_RULES_PER_BUS} rules."),
        ));
    }
    let state = s(input, "State").unwrap_or("ENABLED").to_string();
    let r = match &existing {
        Some(old) => {
            let mut r = (**old).clone();
            r.pattern = pattern.map(str::to_string);
            r.schedule = schedule.map(str::to_string);
            if input.get("State").is_some() {
                r.state = state;
            }
            r.description = s(input, "Description").map(str::to_string);
            r.role_arn = s(input, "RoleArn").map(str::to_string);
            r.tags.extend(tags);
            r
        }
        None => RuleRecord {
            v: 1,
            name: name.to_string(),
            bus: bus.to_string(),
            arn: arn.clone(),
            pattern: pattern.map(str::to_string),
            schedule: schedule.map(str::to_string),
            state,
            description: s(input, "Description").map(str::to_string),
            role_arn: s(input, "RoleArn").map(str::to_string),
            tags,
            targets: Vec::new(),
            created_ms: core.clock.now_millis(),
        },
    };
    let mut batch = rule_put(Batch::new(), &r)?;
    if existing.as_ref().map(|o| &o.schedule) != Some(&r.schedule) {
        // A new or changed schedule counts its periods from now.
        batch = batch.delete(NS_SCHED, arn.as_bytes().to_vec());
    }
    Ok(Out {
        resp: json!({"RuleArn": arn}),
        batch,
        post: vec![Post::Rule((bus.to_string(), name.to_string()), Some(r))],
    })
}

fn rule_json(core: &Core, r: &RuleRecord) -> Value {
    let mut v = json!({
        "Name": r.name,
        "Arn": r.arn,
        "State": r.state,
        "EventBusName": r.bus,
    });
    if let Some(p) = &r.pattern {
        v["EventPattern"] = json!(p);
    }
    if let Some(e) = &r.schedule {
        v["ScheduleExpression"] = json!(e);
    }
    if let Some(d) = &r.description {
        v["Description"] = json!(d);
    }
    if let Some(x) = &r.role_arn {
        v["RoleArn"] = json!(x);
    }
    let _ = core;
    v
}

fn describe_rule(
    core: &Core,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
) -> Result<Out, AwsError> {
    let name = s(input, "Name").unwrap_or_default();
    let bus = core.bus_name(s(input, "EventBusName"))?;
    let arn = core.rule_arn(bus, name);
    res.push(arn.clone());
    core.authorize(
        ctx,
        "events:DescribeRule",
        &arn,
        core.bus(bus).ok().as_deref(),
    )?;
    let r = core.rule(bus, name)?;
    let mut v = rule_json(core, &r);
    v["CreatedBy"] = json!(core.cfg.account);
    Ok(Out::read(v))
}

fn delete_rule(
    core: &Core,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
) -> Result<Out, AwsError> {
    let name = s(input, "Name").unwrap_or_default();
    let bus = core.bus_name(s(input, "EventBusName"))?;
    let arn = core.rule_arn(bus, name);
    res.push(arn.clone());
    core.authorize(
        ctx,
        "events:DeleteRule",
        &arn,
        core.bus(bus).ok().as_deref(),
    )?;
    let Ok(r) = core.rule(bus, name) else {
        return Ok(Out::read(json!({})));
    };
    if !r.targets.is_empty() {
        return Err(AwsError::validation(
            "Rule can't be deleted since it has targets.",
        ));
    }
    let batch = Batch::new()
        .delete(NS_RULES, rule_key(bus, name))
        .delete(NS_SCHED, arn.as_bytes().to_vec());
    Ok(Out {
        resp: json!({}),
        batch,
        post: vec![Post::Rule((bus.to_string(), name.to_string()), None)],
    })
}

fn list_rules(core: &Core, ctx: &CallContext, input: &Value) -> Result<Out, AwsError> {
    let bus = core.bus_name(s(input, "EventBusName"))?;
    let b = core.bus(bus);
    core.authorize(
        ctx,
        "events:ListRules",
        &core.bus_arn(bus),
        b.as_deref().ok(),
    )?;
    b?;
    let prefix = s(input, "NamePrefix").unwrap_or("");
    let items: Vec<(String, Value)> = core
        .rules
        .read()
        .values()
        .filter(|r| r.bus == bus && r.name.starts_with(prefix))
        .map(|r| (r.name.clone(), rule_json(core, r)))
        .collect();
    let (list, next) = page(items, input)?;
    Ok(Out::read(with_token(json!({"Rules": list}), next)))
}

fn set_state(
    core: &Core,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
    state: &str,
) -> Result<Out, AwsError> {
    let name = s(input, "Name").unwrap_or_default();
    let bus = core.bus_name(s(input, "EventBusName"))?;
    let arn = core.rule_arn(bus, name);
    res.push(arn.clone());
    let action = if state == "ENABLED" {
        "events:EnableRule"
    } else {
        "events:DisableRule"
    };
    core.authorize(ctx, action, &arn, core.bus(bus).ok().as_deref())?;
    let mut r = (*core.rule(bus, name)?).clone();
    r.state = state.to_string();
    let batch = rule_put(Batch::new(), &r)?;
    Ok(Out {
        resp: json!({}),
        batch,
        post: vec![Post::Rule((bus.to_string(), name.to_string()), Some(r))],
    })
}

fn rule_names_by_target(core: &Core, ctx: &CallContext, input: &Value) -> Result<Out, AwsError> {
    let bus = core.bus_name(s(input, "EventBusName"))?;
    let b = core.bus(bus);
    core.authorize(
        ctx,
        "events:ListRuleNamesByTarget",
        &core.bus_arn(bus),
        b.as_deref().ok(),
    )?;
    b?;
    let target = s(input, "TargetArn").unwrap_or_default();
    let items: Vec<(String, String)> = core
        .rules
        .read()
        .values()
        .filter(|r| r.bus == bus && r.targets.iter().any(|t| t.arn == target))
        .map(|r| (r.name.clone(), r.name.clone()))
        .collect();
    let (list, next) = page(items, input)?;
    Ok(Out::read(with_token(json!({"RuleNames": list}), next)))
}

/// Parses and checks one PutTargets entry; `Err` is (ErrorCode, ErrorMessage).
fn parse_target(core: &Core, t: &Value) -> Result<TargetRecord, (&'static str, String)> {
    let v = |m: String| ("ValidationException", m);
    let id = s(t, "Id").unwrap_or_default().to_string();
    let arn = s(t, "Arn").unwrap_or_default().to_string();
    if t.get("DeadLetterConfig").is_some() {
        return Err(v(
            "DeadLetterConfig needs an SQS queue, and sluice has no SQS. Events that exhaust their retries are kept in sluice's dead-letter store (sluice dlq list / redrive)."
                .into(),
        ));
    }
    let input = s(t, "Input").map(str::to_string);
    let input_path = s(t, "InputPath").map(str::to_string);
    let transformer = t.get("InputTransformer");
    let given = [input.is_some(), input_path.is_some(), transformer.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if given > 1 {
        return Err(v(
            "Only one of Input, InputPath, or InputTransformer can be specified.".into(),
        ));
    }
    if let Some(i) = &input
        && serde_json::from_str::<Value>(i).is_err()
    {
        return Err(v("Input is not valid JSON text.".into()));
    }
    if let Some(p) = &input_path {
        parse_path(p).map_err(|e| v(format!("InputPath is not valid: {e}.")))?;
    }
    let transformer = match transformer {
        Some(x) => {
            let template = s(x, "InputTemplate").unwrap_or_default().to_string();
            let mut paths: Vec<(String, String)> = x
                .get("InputPathsMap")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, p)| (k.clone(), p.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            paths.sort();
            if paths.len() > 100 {
                return Err(v("InputPathsMap can have at most 100 entries.".into()));
            }
            validate_template(&paths, &template)
                .map_err(|e| v(format!("InputTransformer is not valid: {e}.")))?;
            Some((paths, template))
        }
        None => None,
    };
    let (retry, retry_explicit) = match t.get("RetryPolicy") {
        Some(rp) => {
            let d = RetryPolicy::default();
            let a = rp
                .get("MaximumRetryAttempts")
                .and_then(Value::as_u64)
                .unwrap_or(d.max_attempts as u64);
            let age = rp
                .get("MaximumEventAgeInSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(d.max_age_secs as u64);
            if a > 185 {
                return Err(v("MaximumRetryAttempts must be between 0 and 185.".into()));
            }
            if !(60..=86_400).contains(&age) {
                return Err(v(
                    "MaximumEventAgeInSeconds must be between 60 and 86400.".into()
                ));
            }
            (
                RetryPolicy {
                    max_attempts: a as u32,
                    max_age_secs: age as u32,
                },
                true,
            )
        }
        None => (RetryPolicy::default(), false),
    };
    let rec = TargetRecord {
        id,
        arn,
        role_arn: s(t, "RoleArn").map(str::to_string),
        input,
        input_path,
        transformer,
        retry,
        retry_explicit,
        http: parse_http(t),
    };
    let Some(kind) = core.target_for(&rec.arn) else {
        return Err(v(format!(
            "Target {} is not a kind of target sluice can deliver to (supported: event buses of this account and region).",
            rec.arn
        )));
    };
    kind.validate(core, &rec).map_err(v)?;
    Ok(rec)
}

fn parse_http(t: &Value) -> Option<crate::model::TargetHttp> {
    let h = t.get("HttpParameters")?;
    let map = |k: &str| -> BTreeMap<String, String> {
        h.get(k)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    };
    Some(crate::model::TargetHttp {
        path: h
            .get("PathParameterValues")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        headers: map("HeaderParameters"),
        query: map("QueryStringParameters"),
    })
}

fn put_targets(
    core: &Core,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
) -> Result<Out, AwsError> {
    let name = s(input, "Rule").unwrap_or_default();
    let bus = core.bus_name(s(input, "EventBusName"))?;
    let arn = core.rule_arn(bus, name);
    res.push(arn.clone());
    core.authorize(
        ctx,
        "events:PutTargets",
        &arn,
        core.bus(bus).ok().as_deref(),
    )?;
    let mut r = (*core.rule(bus, name)?).clone();
    let mut failed = Vec::new();
    let mut accepted: Vec<TargetRecord> = Vec::new();
    let empty = Vec::new();
    let entries = input
        .get("Targets")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for t in entries {
        let id = s(t, "Id").unwrap_or_default();
        if accepted.iter().any(|a| a.id == id) {
            failed.push(json!({"TargetId": id, "ErrorCode": "ValidationException",
                "ErrorMessage": format!("Target id {id} appears more than once in the request.")}));
            continue;
        }
        match parse_target(core, t) {
            Ok(rec) => accepted.push(rec),
            Err((code, msg)) => {
                failed.push(json!({"TargetId": id, "ErrorCode": code, "ErrorMessage": msg}))
            }
        }
    }
    let mut merged = r.targets.clone();
    for t in &accepted {
        match merged.iter_mut().find(|x| x.id == t.id) {
            Some(x) => *x = t.clone(),
            None => merged.push(t.clone()),
        }
    }
    if merged.len() > MAX_TARGETS_PER_RULE {
        return Err(AwsError::client(
            "LimitExceededException",
            format!(
                "The requested resource exceeds the maximum number allowed: a rule can have at most {MAX_TARGETS_PER_RULE} targets."
            ),
        ));
    }
    let resp = json!({"FailedEntryCount": failed.len(), "FailedEntries": failed});
    if accepted.is_empty() {
        return Ok(Out::read(resp));
    }
    r.targets = merged;
    let batch = rule_put(Batch::new(), &r)?;
    Ok(Out {
        resp,
        batch,
        post: vec![Post::Rule((bus.to_string(), name.to_string()), Some(r))],
    })
}

fn remove_targets(
    core: &Core,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
) -> Result<Out, AwsError> {
    let name = s(input, "Rule").unwrap_or_default();
    let bus = core.bus_name(s(input, "EventBusName"))?;
    let arn = core.rule_arn(bus, name);
    res.push(arn.clone());
    core.authorize(
        ctx,
        "events:RemoveTargets",
        &arn,
        core.bus(bus).ok().as_deref(),
    )?;
    let mut r = (*core.rule(bus, name)?).clone();
    let ids: Vec<&str> = input
        .get("Ids")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let before = r.targets.len();
    r.targets.retain(|t| !ids.contains(&t.id.as_str()));
    let resp = json!({"FailedEntryCount": 0, "FailedEntries": []});
    if r.targets.len() == before {
        return Ok(Out::read(resp));
    }
    let batch = rule_put(Batch::new(), &r)?;
    Ok(Out {
        resp,
        batch,
        post: vec![Post::Rule((bus.to_string(), name.to_string()), Some(r))],
    })
}

fn target_json(t: &TargetRecord) -> Value {
    let mut v = json!({"Id": t.id, "Arn": t.arn});
    if let Some(x) = &t.role_arn {
        v["RoleArn"] = json!(x);
    }
    if let Some(x) = &t.input {
        v["Input"] = json!(x);
    }
    if let Some(x) = &t.input_path {
        v["InputPath"] = json!(x);
    }
    if let Some((paths, template)) = &t.transformer {
        let m: serde_json::Map<String, Value> =
            paths.iter().map(|(k, p)| (k.clone(), json!(p))).collect();
        v["InputTransformer"] = json!({"InputPathsMap": m, "InputTemplate": template});
    }
    if let Some(h) = &t.http {
        v["HttpParameters"] = json!({
            "PathParameterValues": h.path,
            "HeaderParameters": h.headers,
            "QueryStringParameters": h.query,
        });
    }
    if t.retry_explicit {
        v["RetryPolicy"] = json!({
            "MaximumRetryAttempts": t.retry.max_attempts,
            "MaximumEventAgeInSeconds": t.retry.max_age_secs,
        });
    }
    v
}

fn list_targets(
    core: &Core,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
) -> Result<Out, AwsError> {
    let name = s(input, "Rule").unwrap_or_default();
    let bus = core.bus_name(s(input, "EventBusName"))?;
    let arn = core.rule_arn(bus, name);
    res.push(arn.clone());
    core.authorize(
        ctx,
        "events:ListTargetsByRule",
        &arn,
        core.bus(bus).ok().as_deref(),
    )?;
    let r = core.rule(bus, name)?;
    let items: Vec<(String, Value)> = r
        .targets
        .iter()
        .map(|t| (t.id.clone(), target_json(t)))
        .collect();
    let (list, next) = page(items, input)?;
    Ok(Out::read(with_token(json!({"Targets": list}), next)))
}

fn test_event_pattern(input: &Value) -> Result<Out, AwsError> {
    let p = s(input, "EventPattern").unwrap_or_default();
    let e = s(input, "Event").unwrap_or_default();
    let pattern = Pattern::parse(p)
        .map_err(|e| AwsError::client("InvalidEventPatternException", e.to_string()))?;
    let event: Value = serde_json::from_str(e)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| {
            AwsError::validation("Parameter Event is not valid: it must be a JSON object.")
        })?;
    for field in ["id", "account", "source", "time", "region", "detail-type"] {
        if event.get(field).is_none() {
            return Err(AwsError::validation(format!(
                "Parameter Event is not valid: the field {field} is required."
            )));
        }
    }
    let v = sluice_pattern::explain(&pattern, &event);
    Ok(Out::read(json!({"Result": v.matched})))
}

/// The bus and (for a rule) rule name an events ARN names.
fn resource_of(core: &Core, arn: &str) -> Result<(String, Option<String>), AwsError> {
    let prefix = format!("arn:aws:events:{}:{}:", core.cfg.region, core.cfg.account);
    let rest = arn
        .strip_prefix(prefix.as_str())
        .ok_or_else(|| not_found(format!("Resource {arn} does not exist.")))?;
    if let Some(b) = rest.strip_prefix("event-bus/") {
        return Ok((b.to_string(), None));
    }
    if let Some(r) = rest.strip_prefix("rule/") {
        return Ok(match r.split_once('/') {
            Some((b, n)) => (b.to_string(), Some(n.to_string())),
            None => ("default".to_string(), Some(r.to_string())),
        });
    }
    Err(not_found(format!("Resource {arn} does not exist.")))
}

fn tag_resource(
    core: &Core,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
    add: bool,
) -> Result<Out, AwsError> {
    let arn = s(input, "ResourceARN").unwrap_or_default();
    res.push(arn.to_string());
    let (bus, rule) = resource_of(core, arn)?;
    let action = if add {
        "events:TagResource"
    } else {
        "events:UntagResource"
    };
    let b = core.bus(&bus);
    core.authorize(ctx, action, arn, b.as_deref().ok())?;
    let edit = |tags: &mut BTreeMap<String, String>| -> Result<(), AwsError> {
        if add {
            tags.extend(tags_in(input)?);
            if tags.len() > MAX_TAGS {
                return Err(AwsError::client(
                    "LimitExceededException",
                    format!("A resource can have at most {MAX_TAGS} tags."),
                ));
            }
        } else if let Some(keys) = input.get("TagKeys").and_then(Value::as_array) {
            for k in keys.iter().filter_map(Value::as_str) {
                tags.remove(k);
            }
        }
        Ok(())
    };
    match rule {
        None => {
            let mut b = (*b?).clone();
            edit(&mut b.tags)?;
            let batch = bus_put(Batch::new(), &b)?;
            Ok(Out {
                resp: json!({}),
                batch,
                post: vec![Post::Bus(bus, Some(b))],
            })
        }
        Some(name) => {
            let mut r = (*core.rule(&bus, &name)?).clone();
            edit(&mut r.tags)?;
            let batch = rule_put(Batch::new(), &r)?;
            Ok(Out {
                resp: json!({}),
                batch,
                post: vec![Post::Rule((bus, name), Some(r))],
            })
        }
    }
}

fn list_tags(
    core: &Core,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
) -> Result<Out, AwsError> {
    let arn = s(input, "ResourceARN").unwrap_or_default();
    res.push(arn.to_string());
    let (bus, rule) = resource_of(core, arn)?;
    let b = core.bus(&bus);
    core.authorize(ctx, "events:ListTagsForResource", arn, b.as_deref().ok())?;
    let tags = match rule {
        None => b?.tags.clone(),
        Some(name) => core.rule(&bus, &name)?.tags.clone(),
    };
    Ok(Out::read(json!({"Tags": tags_out(&tags)})))
}

fn policy_doc(b: &BusRecord) -> Result<Value, AwsError> {
    match &b.policy {
        Some(p) => serde_json::from_str(p).map_err(internal),
        None => Ok(json!({"Version": "2012-10-17", "Statement": []})),
    }
}

fn put_permission(
    core: &Core,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
) -> Result<Out, AwsError> {
    let bus = core.bus_name(s(input, "EventBusName"))?;
    let arn = core.bus_arn(bus);
    res.push(arn.clone());
    let b = core.bus(bus);
    core.authorize(ctx, "events:PutPermission", &arn, b.as_deref().ok())?;
    let mut b = (*b?).clone();
    let text = if let Some(p) = s(input, "Policy") {
        sluice_policy::Policy::parse_resource_policy(p)
            .map_err(|e| AwsError::validation(format!("The policy is not valid: {e}")))?;
        p.to_string()
    } else {
        let (Some(sid), Some(principal)) = (s(input, "StatementId"), s(input, "Principal")) else {
            return Err(AwsError::validation(
                "Parameters StatementId and Principal are required unless Policy is given.",
            ));
        };
        let action = s(input, "Action").unwrap_or("events:PutEvents");
        if action != "events:PutEvents" {
            return Err(AwsError::validation(
                "Provided value in parameter 'action' is not supported.",
            ));
        }
        let principal_json = if principal == "*" {
            json!("*")
        } else if principal.len() == 12 && principal.bytes().all(|c| c.is_ascii_digit()) {
            json!({"AWS": format!("arn:aws:iam::{principal}:root")})
        } else {
            return Err(AwsError::validation(
                "Principal must be an account id (12 digits) or *.",
            ));
        };
        let mut stmt = json!({
            "Sid": sid, "Effect": "Allow", "Principal": principal_json,
            "Action": action, "Resource": arn,
        });
        if let Some(c) = input.get("Condition") {
            let (Some(ty), Some(key), Some(val)) = (s(c, "Type"), s(c, "Key"), s(c, "Value"))
            else {
                return Err(AwsError::validation("Condition needs Type, Key and Value."));
            };
            if principal != "*" {
                return Err(AwsError::validation(
                    "A Condition can only be used with Principal *.",
                ));
            }
            stmt["Condition"] = json!({ ty: { format!("aws:{key}"): val } });
        }
        let mut doc = policy_doc(&b)?;
        let list = doc["Statement"]
            .as_array_mut()
            .ok_or_else(|| internal("stored policy without a Statement list"))?;
        if list
            .iter()
            .any(|x| x.get("Sid").and_then(Value::as_str) == Some(sid))
        {
            return Err(AwsError::client(
                "ResourceAlreadyExistsException",
                format!("Statement with StatementId {sid} already exists."),
            ));
        }
        list.push(stmt);
        let text = doc.to_string();
        sluice_policy::Policy::parse_resource_policy(&text)
            .map_err(|e| AwsError::validation(format!("The resulting policy is not valid: {e}")))?;
        text
    };
    b.policy = Some(text);
    b.modified_ms = core.clock.now_millis();
    let batch = bus_put(Batch::new(), &b)?;
    Ok(Out {
        resp: json!({}),
        batch,
        post: vec![Post::Bus(b.name.clone(), Some(b))],
    })
}

fn remove_permission(
    core: &Core,
    ctx: &CallContext,
    input: &Value,
    res: &mut Vec<String>,
) -> Result<Out, AwsError> {
    let bus = core.bus_name(s(input, "EventBusName"))?;
    let arn = core.bus_arn(bus);
    res.push(arn.clone());
    let b = core.bus(bus);
    core.authorize(ctx, "events:RemovePermission", &arn, b.as_deref().ok())?;
    let mut b = (*b?).clone();
    let all = input
        .get("RemoveAllPermissions")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if all {
        b.policy = None;
    } else {
        let sid = s(input, "StatementId").ok_or_else(|| {
            AwsError::validation("StatementId is required unless RemoveAllPermissions is true.")
        })?;
        let mut doc = policy_doc(&b)?;
        let list = doc["Statement"]
            .as_array_mut()
            .ok_or_else(|| internal("stored policy without a Statement list"))?;
        let before = list.len();
        list.retain(|x| x.get("Sid").and_then(Value::as_str) != Some(sid));
        if list.len() == before {
            return Err(not_found(format!(
                "Statement with the provided id {sid} does not exist."
            )));
        }
        b.policy = if list.is_empty() {
            None
        } else {
            Some(doc.to_string())
        };
    }
    b.modified_ms = core.clock.now_millis();
    let batch = bus_put(Batch::new(), &b)?;
    Ok(Out {
        resp: json!({}),
        batch,
        post: vec![Post::Bus(b.name.clone(), Some(b))],
    })
}

/// AWS's entry size: UTF-8 bytes of Source, DetailType, Detail and Resources, + 14 with Time.
fn entry_size(e: &Value) -> usize {
    let mut n = 0;
    for k in ["Source", "DetailType", "Detail"] {
        n += s(e, k).map_or(0, str::len);
    }
    if let Some(r) = e.get("Resources").and_then(Value::as_array) {
        n += r
            .iter()
            .filter_map(Value::as_str)
            .map(str::len)
            .sum::<usize>();
    }
    if e.get("Time").is_some() {
        n += 14;
    }
    n
}

async fn put_events(core: &Arc<Core>, ctx: &CallContext, input: &Value) -> Result<Value, AwsError> {
    let empty = Vec::new();
    let entries = input
        .get("Entries")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    if entries.is_empty() || entries.len() > 10 {
        return Err(AwsError::validation(
            "1 validation error detected: Value at 'entries' failed to satisfy constraint: Member must have length between 1 and 10",
        ));
    }
    if input.get("EndpointId").is_some() {
        return Err(AwsError::validation(
            "Global endpoints (EndpointId) are not supported by sluice.",
        ));
    }
    let total: usize = entries.iter().map(entry_size).sum();
    if total > core.cfg.max_entry_bytes {
        return Err(AwsError::validation(format!(
            "Total size of the entries in the request is over the limit of {} bytes.",
            core.cfg.max_entry_bytes
        )));
    }
    let complete = |e: &Value| {
        ["Source", "DetailType", "Detail"]
            .iter()
            .all(|k| s(e, k).is_some())
    };
    if !entries.iter().any(complete) {
        return Err(AwsError::validation(
            "Parameters Source, DetailType and Detail are required in at least one entry.",
        ));
    }
    let now = core.clock.now_millis();
    let root =
        ctx.principal.kind == PrincipalKind::Root && ctx.principal.account == core.cfg.account;
    let mut results: Vec<Value> = Vec::with_capacity(entries.len());
    let mut deliveries = Vec::new();
    let mut accepted = 0u64;
    for e in entries {
        let r = one_entry(core, ctx, e, now, root);
        match r {
            Ok((id, mut d)) => {
                accepted += 1;
                deliveries.append(&mut d);
                results.push(json!({"EventId": id}));
            }
            Err((code, msg)) => results.push(json!({"ErrorCode": code, "ErrorMessage": msg})),
        }
    }
    if !deliveries.is_empty() {
        let (batch, queued) = core.enqueue_new(Batch::new(), deliveries)?;
        if let Err(e) = Core::commit_new(core, batch, queued).await {
            tracing::error!(error = %e, "PutEvents commit failed");
            for r in results.iter_mut() {
                if r.get("EventId").is_some() {
                    *r = json!({"ErrorCode": "InternalFailure",
                        "ErrorMessage": "The event could not be stored; retry."});
                }
            }
            accepted = 0;
        }
    }
    core.metrics
        .put_events_entries
        .fetch_add(accepted, Ordering::Relaxed);
    let failed = results
        .iter()
        .filter(|r| r.get("ErrorCode").is_some())
        .count();
    Ok(json!({"FailedEntryCount": failed, "Entries": results}))
}

type EntryResult = Result<(String, Vec<crate::model::DeliveryRecord>), (&'static str, String)>;

fn one_entry(core: &Core, ctx: &CallContext, e: &Value, now: i64, root: bool) -> EntryResult {
    let (Some(source), Some(detail_type), Some(detail)) =
        (s(e, "Source"), s(e, "DetailType"), s(e, "Detail"))
    else {
        let missing: Vec<&str> = ["Source", "DetailType", "Detail"]
            .into_iter()
            .filter(|k| s(e, k).is_none())
            .collect();
        return Err((
            "InvalidArgument",
            format!("Parameter(s) {} must be specified.", missing.join(", ")),
        ));
    };
    let bus = core.bus_name(s(e, "EventBusName")).map_err(|_| {
        (
            "InvalidArgument",
            "Parameter EventBusName is not valid.".to_string(),
        )
    })?;
    let b = core.bus(bus).map_err(|_| {
        (
            "InvalidArgument",
            format!("Event bus {bus} does not exist."),
        )
    })?;
    if let Err(err) = core.authorize(ctx, "events:PutEvents", &b.arn, Some(&b)) {
        return Err(("AccessDeniedException", err.message));
    }
    if source.starts_with("aws.") && !(root && core.cfg.allow_aws_sources) {
        return Err((
            "NotAuthorizedForSourceException",
            "Not authorized for the source.".to_string(),
        ));
    }
    if detail_type.chars().count() > 128 {
        return Err((
            "InvalidArgument",
            "Parameter DetailType is not valid: longer than 128 characters.".to_string(),
        ));
    }
    let ok_detail = detail.trim_start().starts_with('{')
        && serde_json::from_str::<serde::de::IgnoredAny>(detail).is_ok();
    if !ok_detail {
        return Err(("MalformedDetail", "Detail is malformed.".to_string()));
    }
    let resources: Vec<String> = e
        .get("Resources")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let time_ms = match e.get("Time").and_then(Value::as_f64) {
        Some(t) => (t * 1000.0) as i64,
        None => now,
    };
    let id = uuid::Uuid::new_v4().to_string();
    let text = core.envelope(&id, detail_type, source, time_ms, &resources, detail);
    let d = core
        .route(bus, &id, &text, now, 0)
        .map_err(|_| ("MalformedDetail", "Detail is malformed.".to_string()))?;
    Ok((id, d))
}
