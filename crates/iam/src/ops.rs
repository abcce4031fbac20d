//! The IAM operations: users, access keys, roles, inline and managed policies, attachments,
//! service-linked roles and tags.
//!
//! Every operation runs after [`Iam::authorize`] allowed `iam:<Operation>` on the resource
//! [`Iam::resource_for`] names. Writes hold the writer lock from their check to the index
//! update (see the crate docs).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sluice_core::{AwsError, CallContext, PrincipalKind};
use sluice_store::Batch;

use crate::errors::*;
use crate::model::*;
use crate::query::{Xml, s, strings, url_encode};
use crate::{Call, Iam, KeyEntry, Out, PolicyEntry, compile_identity, compile_trust, rfc3339};

/// Access keys per user.
const KEYS_PER_USER: usize = 2;
/// Managed policies per user or role.
const MANAGED_PER_ENTITY: usize = 10;
/// Tags per entity.
const TAGS_PER_ENTITY: usize = 50;

fn no_user(name: &str) -> AwsError {
    no_such_entity(format!("The user with name {name} cannot be found."))
}

fn no_role(name: &str) -> AwsError {
    no_such_entity(format!("The role with name {name} cannot be found."))
}

fn no_policy(arn: &str) -> AwsError {
    no_such_entity(format!("Policy {arn} does not exist or is not attachable."))
}

fn tags_of(input: &Value) -> Vec<Tag> {
    input
        .get("Tags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|t| Tag {
                    key: s(t, "Key").unwrap_or_default().to_string(),
                    value: s(t, "Value").unwrap_or_default().to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn merge_tags(existing: &mut Vec<Tag>, new: Vec<Tag>) -> Result<(), AwsError> {
    for t in new {
        match existing.iter_mut().find(|e| e.key == t.key) {
            Some(e) => e.value = t.value,
            None => existing.push(t),
        }
    }
    if existing.len() > TAGS_PER_ENTITY {
        return Err(limit(format!(
            "Cannot exceed quota for TagsPerEntity: {TAGS_PER_ENTITY}"
        )));
    }
    Ok(())
}

fn tags_xml(x: &mut Xml, tags: &[Tag]) {
    if !tags.is_empty() {
        x.members("Tags", tags, |x, t| {
            x.leaf("Key", &t.key).leaf("Value", &t.value);
        });
    }
}

pub(crate) fn user_xml(x: &mut Xml, u: &UserRecord) {
    x.leaf("Path", &u.path)
        .leaf("UserName", &u.name)
        .leaf("UserId", &u.id)
        .leaf("Arn", &u.arn)
        .leaf("CreateDate", &u.created);
    tags_xml(x, &u.tags);
}

pub(crate) fn role_xml(x: &mut Xml, r: &RoleRecord) {
    x.leaf("Path", &r.path)
        .leaf("RoleName", &r.name)
        .leaf("RoleId", &r.id)
        .leaf("Arn", &r.arn)
        .leaf("CreateDate", &r.created)
        .leaf("AssumeRolePolicyDocument", &url_encode(&r.trust))
        .opt("Description", r.description.as_deref())
        .leaf("MaxSessionDuration", &r.max_session.to_string());
    tags_xml(x, &r.tags);
}

fn policy_xml(x: &mut Xml, p: &PolicyRecord, attachments: usize) {
    x.leaf("PolicyName", &p.name)
        .leaf("PolicyId", &p.id)
        .leaf("Arn", &p.arn)
        .leaf("Path", &p.path)
        .leaf("DefaultVersionId", "v1")
        .leaf("AttachmentCount", &attachments.to_string())
        .leaf("PermissionsBoundaryUsageCount", "0")
        .leaf("IsAttachable", "true")
        .opt("Description", p.description.as_deref())
        .leaf("CreateDate", &p.created)
        .leaf("UpdateDate", &p.created);
    tags_xml(x, &p.tags);
}

/// One page of `items` (sorted by key) after `Marker`, at most `MaxItems` (default 100), and
/// the marker of the next page.
fn page<T>(mut items: Vec<(String, T)>, input: &Value) -> (Vec<T>, Option<String>) {
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let max = input
        .get("MaxItems")
        .and_then(Value::as_u64)
        .unwrap_or(100)
        .clamp(1, 1000) as usize;
    if let Some(m) = s(input, "Marker") {
        items.retain(|(k, _)| k.as_str() > m);
    }
    let truncated = items.len() > max;
    items.truncate(max);
    let next = if truncated {
        items.last().map(|(k, _)| k.clone())
    } else {
        None
    };
    (items.into_iter().map(|(_, v)| v).collect(), next)
}

fn truncation(x: &mut Xml, next: Option<String>) {
    match next {
        Some(m) => {
            x.leaf("IsTruncated", "true").leaf("Marker", &m);
        }
        None => {
            x.leaf("IsTruncated", "false");
        }
    }
}

fn path_of(input: &Value) -> String {
    s(input, "Path").unwrap_or("/").to_string()
}

fn under_prefix(path: &str, input: &Value) -> bool {
    path.starts_with(s(input, "PathPrefix").unwrap_or("/"))
}

/// Which inline-policy owner an operation addresses.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Owner {
    User,
    Role,
}

impl Iam {
    /// The IAM action and resource ARN an operation is authorized on, and the CloudTrail
    /// resource type; `None` for an operation sluice does not serve.
    pub(crate) fn resource_for(
        &self,
        op: &str,
        ctx: &CallContext,
        input: &Value,
    ) -> Option<(String, String, &'static str)> {
        let acct = &self.cfg.account;
        let st = self.state.read();
        let user = |name: Option<&str>| -> String {
            let name = match name {
                Some(n) => n.to_string(),
                None => match ctx.principal.kind {
                    PrincipalKind::IamUser => role_name_of(&ctx.principal.arn).to_string(),
                    _ => return ctx.principal.arn.clone(),
                },
            };
            match st.users.get(&name.to_ascii_lowercase()) {
                Some(u) => u.rec.arn.clone(),
                None => self.user_arn("/", &name),
            }
        };
        let role = |name: &str| -> String {
            match st.roles.get(&name.to_ascii_lowercase()) {
                Some(r) => r.rec.arn.clone(),
                None => self.role_arn("/", name),
            }
        };
        let (res, kind) = match op {
            "CreateUser" => (
                self.user_arn(&path_of(input), s(input, "UserName")?),
                "AWS::IAM::User",
            ),
            "GetUser"
            | "DeleteUser"
            | "PutUserPolicy"
            | "GetUserPolicy"
            | "DeleteUserPolicy"
            | "ListUserPolicies"
            | "AttachUserPolicy"
            | "DetachUserPolicy"
            | "ListAttachedUserPolicies"
            | "CreateAccessKey"
            | "DeleteAccessKey"
            | "UpdateAccessKey"
            | "ListAccessKeys" => (user(s(input, "UserName")), "AWS::IAM::User"),
            "ListUsers" => (format!("arn:aws:iam::{acct}:user/"), "AWS::IAM::User"),
            "CreateRole" => (
                self.role_arn(&path_of(input), s(input, "RoleName")?),
                "AWS::IAM::Role",
            ),
            "GetRole"
            | "DeleteRole"
            | "UpdateAssumeRolePolicy"
            | "PutRolePolicy"
            | "GetRolePolicy"
            | "DeleteRolePolicy"
            | "ListRolePolicies"
            | "AttachRolePolicy"
            | "DetachRolePolicy"
            | "ListAttachedRolePolicies"
            | "TagRole"
            | "UntagRole" => (role(s(input, "RoleName")?), "AWS::IAM::Role"),
            "ListRoles" => (format!("arn:aws:iam::{acct}:role/"), "AWS::IAM::Role"),
            "CreateServiceLinkedRole" => {
                let (name, path) =
                    service_linked_name(s(input, "AWSServiceName")?, s(input, "CustomSuffix"));
                (self.role_arn(&path, &name), "AWS::IAM::Role")
            }
            "CreatePolicy" => (
                self.policy_arn(&path_of(input), s(input, "PolicyName")?),
                "AWS::IAM::Policy",
            ),
            "GetPolicy" | "GetPolicyVersion" | "DeletePolicy" => {
                (s(input, "PolicyArn")?.to_string(), "AWS::IAM::Policy")
            }
            "ListPolicies" => (format!("arn:aws:iam::{acct}:policy/"), "AWS::IAM::Policy"),
            "SimulatePrincipalPolicy" => {
                (s(input, "PolicySourceArn")?.to_string(), "AWS::IAM::Policy")
            }
            "SimulateCustomPolicy" => ("*".to_string(), "AWS::IAM::Policy"),
            _ => return None,
        };
        Some((format!("iam:{op}"), res, kind))
    }

    /// Runs an authorized IAM operation.
    pub(crate) async fn call_iam(&self, call: &Call<'_>) -> Result<Out, AwsError> {
        let (ctx, input) = (call.ctx, call.input);
        match call.op {
            "CreateUser" => self.create_user(call).await,
            "GetUser" => self.get_user(ctx, input),
            "DeleteUser" => self.delete_user(call).await,
            "ListUsers" => self.list_users(input),
            "CreateAccessKey" => self.create_access_key(call).await,
            "DeleteAccessKey" => self.delete_access_key(call).await,
            "UpdateAccessKey" => self.update_access_key(call).await,
            "ListAccessKeys" => self.list_access_keys(ctx, input),
            "CreateRole" => self.create_role(call).await,
            "GetRole" => self.get_role(input),
            "DeleteRole" => self.delete_role(call).await,
            "ListRoles" => self.list_roles(input),
            "UpdateAssumeRolePolicy" => self.update_trust(call).await,
            "PutRolePolicy" => self.put_inline(call, Owner::Role).await,
            "GetRolePolicy" => self.get_inline(Owner::Role, input),
            "DeleteRolePolicy" => self.delete_inline(call, Owner::Role).await,
            "ListRolePolicies" => self.list_inline(Owner::Role, input),
            "PutUserPolicy" => self.put_inline(call, Owner::User).await,
            "GetUserPolicy" => self.get_inline(Owner::User, input),
            "DeleteUserPolicy" => self.delete_inline(call, Owner::User).await,
            "ListUserPolicies" => self.list_inline(Owner::User, input),
            "CreatePolicy" => self.create_policy(call).await,
            "GetPolicy" => self.get_policy(input),
            "GetPolicyVersion" => self.get_policy_version(input),
            "DeletePolicy" => self.delete_policy(call).await,
            "ListPolicies" => self.list_policies(input),
            "AttachRolePolicy" => self.attach(call, Owner::Role, true).await,
            "DetachRolePolicy" => self.attach(call, Owner::Role, false).await,
            "ListAttachedRolePolicies" => self.list_attached(Owner::Role, input),
            "AttachUserPolicy" => self.attach(call, Owner::User, true).await,
            "DetachUserPolicy" => self.attach(call, Owner::User, false).await,
            "ListAttachedUserPolicies" => self.list_attached(Owner::User, input),
            "CreateServiceLinkedRole" => self.create_service_linked_role(call).await,
            "TagRole" => self.tag_role(call, true).await,
            "UntagRole" => self.tag_role(call, false).await,
            "SimulatePrincipalPolicy" => self.simulate_principal(ctx, input),
            "SimulateCustomPolicy" => self.simulate_custom(ctx, input),
            op => Err(AwsError::client(
                "InvalidAction",
                format!("Could not find operation {op} for version 2010-05-08"),
            )),
        }
    }

    // ---- users ----

    async fn create_user(&self, call: &Call<'_>) -> Result<Out, AwsError> {
        let input = call.input;
        let name = s(input, "UserName").unwrap_or_default();
        let path = path_of(input);
        let _w = self.writer.lock().await;
        if self
            .state
            .read()
            .users
            .contains_key(&name.to_ascii_lowercase())
        {
            return Err(already_exists(format!(
                "User with name {name} already exists."
            )));
        }
        let mut tags = Vec::new();
        merge_tags(&mut tags, tags_of(input))?;
        let rec = UserRecord {
            v: 1,
            name: name.to_string(),
            arn: self.user_arn(&path, name),
            path,
            id: new_id("AIDA", 21),
            created: rfc3339(self.now()),
            tags,
            inline: BTreeMap::new(),
            attached: Vec::new(),
        };
        let audit = json!({"user": {"userName": rec.name, "userId": rec.id, "arn": rec.arn}});
        self.save_user(call, rec.clone(), audit).await?;
        let mut x = Xml::new();
        x.elem("User", |x| user_xml(x, &rec));
        Ok(Out::xml(x))
    }

    /// The user an operation addresses: `UserName`, or the calling user.
    fn target_user(&self, ctx: &CallContext, input: &Value) -> Result<UserRecord, AwsError> {
        let st = self.state.read();
        match s(input, "UserName") {
            Some(n) => st
                .users
                .get(&n.to_ascii_lowercase())
                .map(|u| u.rec.clone())
                .ok_or_else(|| no_user(n)),
            None => match st.user_of(&ctx.principal) {
                Some(u) => Ok(u.rec.clone()),
                None => Err(validation(
                    "Must specify userName when calling with non-User credentials",
                )),
            },
        }
    }

    fn get_user(&self, ctx: &CallContext, input: &Value) -> Result<Out, AwsError> {
        let mut x = Xml::new();
        if s(input, "UserName").is_none() && ctx.principal.kind == PrincipalKind::Root {
            let created = rfc3339(time::OffsetDateTime::UNIX_EPOCH);
            x.elem("User", |x| {
                x.leaf("UserId", &ctx.principal.account)
                    .leaf("Arn", &ctx.principal.arn)
                    .leaf("CreateDate", &created);
            });
            return Ok(Out::xml(x));
        }
        let u = self.target_user(ctx, input)?;
        x.elem("User", |x| user_xml(x, &u));
        Ok(Out::xml(x))
    }

    async fn delete_user(&self, call: &Call<'_>) -> Result<Out, AwsError> {
        let input = call.input;
        let name = s(input, "UserName").unwrap_or_default();
        let key = name.to_ascii_lowercase();
        let _w = self.writer.lock().await;
        {
            let st = self.state.read();
            let u = st.users.get(&key).ok_or_else(|| no_user(name))?;
            if st
                .keys
                .values()
                .any(|k| k.rec.user.eq_ignore_ascii_case(name))
            {
                return Err(delete_conflict(
                    "Cannot delete entity, must delete access keys first.",
                ));
            }
            if !u.rec.inline.is_empty() {
                return Err(delete_conflict(
                    "Cannot delete entity, must delete policies first.",
                ));
            }
            if !u.rec.attached.is_empty() {
                return Err(delete_conflict(
                    "Cannot delete entity, must detach all policies first.",
                ));
            }
        }
        self.commit(
            call,
            Batch::new().delete(NS_USERS, key.clone()),
            Value::Null,
        )
        .await?;
        self.state.write().users.remove(&key);
        Ok(Out::empty())
    }

    fn list_users(&self, input: &Value) -> Result<Out, AwsError> {
        let st = self.state.read();
        let items: Vec<(String, UserRecord)> = st
            .users
            .iter()
            .filter(|(_, u)| under_prefix(&u.rec.path, input))
            .map(|(k, u)| (k.clone(), u.rec.clone()))
            .collect();
        drop(st);
        let (users, next) = page(items, input);
        let mut x = Xml::new();
        x.members("Users", &users, user_xml);
        truncation(&mut x, next);
        Ok(Out::xml(x))
    }

    // ---- access keys ----

    async fn create_access_key(&self, call: &Call<'_>) -> Result<Out, AwsError> {
        let (ctx, input) = (call.ctx, call.input);
        let _w = self.writer.lock().await;
        let user = self.target_user(ctx, input)?;
        let count = self
            .state
            .read()
            .keys
            .values()
            .filter(|k| k.rec.user.eq_ignore_ascii_case(&user.name))
            .count();
        if count >= KEYS_PER_USER {
            return Err(limit(format!(
                "Cannot exceed quota for AccessKeysPerUser: {KEYS_PER_USER}"
            )));
        }
        let id = new_id("AKIA", 20);
        let secret = new_secret();
        let rec = AccessKeyRecord {
            v: 1,
            id: id.clone(),
            user: user.name.clone(),
            status: "Active".into(),
            created: rfc3339(self.now()),
            secret_sealed: self.seal(&format!("iam/access-key/{id}"), &secret),
        };
        let json = serde_json::to_vec(&rec).map_err(|_| AwsError::internal())?;
        let audit = json!({"accessKey": {"userName": rec.user, "accessKeyId": rec.id, "status": rec.status}});
        self.commit(
            call,
            Batch::new().put(NS_ACCESS_KEYS, id.clone(), json),
            audit,
        )
        .await?;
        let mut x = Xml::new();
        x.elem("AccessKey", |x| {
            x.leaf("UserName", &rec.user)
                .leaf("AccessKeyId", &rec.id)
                .leaf("Status", &rec.status)
                .leaf("SecretAccessKey", &secret)
                .leaf("CreateDate", &rec.created);
        });
        self.state.write().keys.insert(
            id,
            KeyEntry {
                rec,
                secret: secret.clone(),
            },
        );
        Ok(Out::xml(x))
    }

    async fn delete_access_key(&self, call: &Call<'_>) -> Result<Out, AwsError> {
        let (ctx, input) = (call.ctx, call.input);
        let _w = self.writer.lock().await;
        let user = self.target_user(ctx, input)?;
        let id = s(input, "AccessKeyId").unwrap_or_default().to_string();
        let found = self
            .state
            .read()
            .keys
            .get(&id)
            .is_some_and(|k| k.rec.user.eq_ignore_ascii_case(&user.name));
        if !found {
            return Err(no_such_entity(format!(
                "The Access Key with id {id} cannot be found."
            )));
        }
        self.commit(
            call,
            Batch::new().delete(NS_ACCESS_KEYS, id.clone()),
            Value::Null,
        )
        .await?;
        self.state.write().keys.remove(&id);
        Ok(Out::empty())
    }

    async fn update_access_key(&self, call: &Call<'_>) -> Result<Out, AwsError> {
        let (ctx, input) = (call.ctx, call.input);
        let _w = self.writer.lock().await;
        let user = self.target_user(ctx, input)?;
        let id = s(input, "AccessKeyId").unwrap_or_default().to_string();
        let status = s(input, "Status").unwrap_or_default();
        if status == "Expired" {
            return Err(validation(
                "An access key cannot be set to Expired: use Active or Inactive.",
            ));
        }
        let mut rec = self
            .state
            .read()
            .keys
            .get(&id)
            .filter(|k| k.rec.user.eq_ignore_ascii_case(&user.name))
            .map(|k| k.rec.clone())
            .ok_or_else(|| {
                no_such_entity(format!("The Access Key with id {id} cannot be found."))
            })?;
        rec.status = status.to_string();
        let json = serde_json::to_vec(&rec).map_err(|_| AwsError::internal())?;
        self.commit(
            call,
            Batch::new().put(NS_ACCESS_KEYS, id.clone(), json),
            Value::Null,
        )
        .await?;
        if let Some(k) = self.state.write().keys.get_mut(&id) {
            k.rec = rec;
        }
        Ok(Out::empty())
    }

    fn list_access_keys(&self, ctx: &CallContext, input: &Value) -> Result<Out, AwsError> {
        let user = self.target_user(ctx, input)?;
        let items: Vec<(String, AccessKeyRecord)> = self
            .state
            .read()
            .keys
            .values()
            .filter(|k| k.rec.user.eq_ignore_ascii_case(&user.name))
            .map(|k| (k.rec.id.clone(), k.rec.clone()))
            .collect();
        let (keys, next) = page(items, input);
        let mut x = Xml::new();
        x.members("AccessKeyMetadata", &keys, |x, k| {
            x.leaf("UserName", &k.user)
                .leaf("AccessKeyId", &k.id)
                .leaf("Status", &k.status)
                .leaf("CreateDate", &k.created);
        });
        truncation(&mut x, next);
        Ok(Out::xml(x))
    }

    // ---- roles ----

    fn role_record(&self, name: &str) -> Result<RoleRecord, AwsError> {
        self.state
            .read()
            .roles
            .get(&name.to_ascii_lowercase())
            .map(|r| r.rec.clone())
            .ok_or_else(|| no_role(name))
    }

    fn user_record(&self, name: &str) -> Result<UserRecord, AwsError> {
        self.state
            .read()
            .users
            .get(&name.to_ascii_lowercase())
            .map(|u| u.rec.clone())
            .ok_or_else(|| no_user(name))
    }

    async fn insert_role(
        &self,
        call: &Call<'_>,
        rec: RoleRecord,
        taken: AwsError,
    ) -> Result<Out, AwsError> {
        if self
            .state
            .read()
            .roles
            .contains_key(&rec.name.to_ascii_lowercase())
        {
            return Err(taken);
        }
        let audit = json!({"role": {"roleName": rec.name, "roleId": rec.id, "arn": rec.arn}});
        self.save_role(call, rec.clone(), audit).await?;
        let mut x = Xml::new();
        x.elem("Role", |x| role_xml(x, &rec));
        Ok(Out::xml(x))
    }

    async fn create_role(&self, call: &Call<'_>) -> Result<Out, AwsError> {
        let input = call.input;
        let name = s(input, "RoleName").unwrap_or_default();
        let trust = s(input, "AssumeRolePolicyDocument").unwrap_or_default();
        compile_trust(trust)?;
        let path = path_of(input);
        let max_session = input
            .get("MaxSessionDuration")
            .and_then(Value::as_u64)
            .unwrap_or(3600) as u32;
        let mut tags = Vec::new();
        merge_tags(&mut tags, tags_of(input))?;
        let _w = self.writer.lock().await;
        let rec = RoleRecord {
            v: 1,
            name: name.to_string(),
            arn: self.role_arn(&path, name),
            path,
            id: new_id("AROA", 21),
            created: rfc3339(self.now()),
            trust: trust.to_string(),
            description: s(input, "Description").map(str::to_string),
            max_session,
            tags,
            inline: BTreeMap::new(),
            attached: Vec::new(),
        };
        self.insert_role(
            call,
            rec,
            already_exists(format!("Role with name {name} already exists.")),
        )
        .await
    }

    async fn create_service_linked_role(&self, call: &Call<'_>) -> Result<Out, AwsError> {
        let input = call.input;
        let service = s(input, "AWSServiceName").unwrap_or_default();
        if !service.ends_with(".amazonaws.com") {
            return Err(invalid_input(format!(
                "Invalid service name {service}: service-linked roles are for AWS service principals (<name>.amazonaws.com)."
            )));
        }
        let (name, path) = service_linked_name(service, s(input, "CustomSuffix"));
        let trust = json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": [service]}, "Action": "sts:AssumeRole"}]
        })
        .to_string();
        let _w = self.writer.lock().await;
        let rec = RoleRecord {
            v: 1,
            arn: self.role_arn(&path, &name),
            name: name.clone(),
            path,
            id: new_id("AROA", 21),
            created: rfc3339(self.now()),
            trust,
            description: s(input, "Description").map(str::to_string),
            max_session: 3600,
            tags: Vec::new(),
            inline: BTreeMap::new(),
            attached: Vec::new(),
        };
        self.insert_role(
            call,
            rec,
            invalid_input(format!(
                "Service role name {name} has been taken in this account, please try a different suffix."
            )),
        )
        .await
    }

    /// The service-linked role of `service` (for example `apidestinations.events.amazonaws.com`)
    /// for sluice's own services: created on first use, trusted by `service`, with `policy` as
    /// its permissions (an inline policy named `policy_name`, standing in for AWS's managed
    /// service-role policy, which sluice has no catalogue of). If the role exists but its policy
    /// was changed, the policy is put back. Audited as `CreateServiceLinkedRole` /
    /// `PutRolePolicy` by the service principal. Returns the role ARN.
    pub async fn ensure_service_linked_role(
        &self,
        service: &str,
        policy_name: &str,
        policy: &str,
    ) -> Result<String, AwsError> {
        let (name, path) = service_linked_name(service, None);
        let key = name.to_ascii_lowercase();
        // The role's ARN if it exists with the policy: the usual case, on every use, so no
        // record is copied.
        let ready = |iam: &Self| {
            iam.state
                .read()
                .roles
                .get(&key)
                .filter(|r| r.rec.inline.get(policy_name).map(String::as_str) == Some(policy))
                .map(|r| r.rec.arn.clone())
        };
        if let Some(arn) = ready(self) {
            return Ok(arn);
        }
        compile_identity(policy)?;
        let _w = self.writer.lock().await;
        if let Some(arn) = ready(self) {
            return Ok(arn);
        }
        let current = self.state.read().roles.get(&key).map(|r| r.rec.clone());
        let (op, rec, input) = match current {
            Some(mut rec) => {
                rec.inline
                    .insert(policy_name.to_string(), policy.to_string());
                let input = json!({"RoleName": rec.name, "PolicyName": policy_name});
                ("PutRolePolicy", rec, input)
            }
            None => {
                let trust = json!({
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Principal": {"Service": [service]}, "Action": "sts:AssumeRole"}]
                })
                .to_string();
                let rec = RoleRecord {
                    v: 1,
                    arn: self.role_arn(&path, &name),
                    name: name.clone(),
                    path,
                    id: new_id("AROA", 21),
                    created: rfc3339(self.now()),
                    trust,
                    description: Some(format!("Service-linked role of {service}")),
                    max_session: 3600,
                    tags: Vec::new(),
                    inline: BTreeMap::from([(policy_name.to_string(), policy.to_string())]),
                    attached: Vec::new(),
                };
                (
                    "CreateServiceLinkedRole",
                    rec,
                    json!({"AWSServiceName": service}),
                )
            }
        };
        let ctx = CallContext::direct(
            sluice_core::Principal::service(&self.cfg.account, service),
            &self.cfg.region,
            &uuid::Uuid::new_v4().to_string(),
        );
        let call = Call {
            ctx: &ctx,
            source: crate::IAM_EVENT_SOURCE,
            op,
            input: &input,
            resource: Some((rec.arn.clone(), "AWS::IAM::Role")),
            audited: std::sync::atomic::AtomicBool::new(false),
        };
        let audit = json!({"role": {"roleName": rec.name, "roleId": rec.id, "arn": rec.arn}});
        let arn = rec.arn.clone();
        self.save_role(&call, rec, audit).await?;
        Ok(arn)
    }

    fn get_role(&self, input: &Value) -> Result<Out, AwsError> {
        let r = self.role_record(s(input, "RoleName").unwrap_or_default())?;
        let mut x = Xml::new();
        x.elem("Role", |x| {
            role_xml(x, &r);
            x.elem("RoleLastUsed", |_| {});
        });
        Ok(Out::xml(x))
    }

    async fn delete_role(&self, call: &Call<'_>) -> Result<Out, AwsError> {
        let input = call.input;
        let name = s(input, "RoleName").unwrap_or_default();
        let _w = self.writer.lock().await;
        let r = self.role_record(name)?;
        if !r.inline.is_empty() {
            return Err(delete_conflict(
                "Cannot delete entity, must delete policies first.",
            ));
        }
        if !r.attached.is_empty() {
            return Err(delete_conflict(
                "Cannot delete entity, must detach all policies first.",
            ));
        }
        let key = name.to_ascii_lowercase();
        self.commit(
            call,
            Batch::new().delete(NS_ROLES, key.clone()),
            Value::Null,
        )
        .await?;
        self.state.write().roles.remove(&key);
        Ok(Out::empty())
    }

    fn list_roles(&self, input: &Value) -> Result<Out, AwsError> {
        let items: Vec<(String, RoleRecord)> = self
            .state
            .read()
            .roles
            .iter()
            .filter(|(_, r)| under_prefix(&r.rec.path, input))
            .map(|(k, r)| (k.clone(), r.rec.clone()))
            .collect();
        let (roles, next) = page(items, input);
        let mut x = Xml::new();
        x.members("Roles", &roles, role_xml);
        truncation(&mut x, next);
        Ok(Out::xml(x))
    }

    async fn update_trust(&self, call: &Call<'_>) -> Result<Out, AwsError> {
        let input = call.input;
        let doc = s(input, "PolicyDocument").unwrap_or_default();
        compile_trust(doc)?;
        let _w = self.writer.lock().await;
        let mut r = self.role_record(s(input, "RoleName").unwrap_or_default())?;
        r.trust = doc.to_string();
        self.save_role(call, r, Value::Null).await?;
        Ok(Out::empty())
    }

    async fn tag_role(&self, call: &Call<'_>, add: bool) -> Result<Out, AwsError> {
        let input = call.input;
        let _w = self.writer.lock().await;
        let mut r = self.role_record(s(input, "RoleName").unwrap_or_default())?;
        if add {
            merge_tags(&mut r.tags, tags_of(input))?;
        } else {
            let keys = strings(input, "TagKeys");
            r.tags.retain(|t| !keys.contains(&t.key));
        }
        self.save_role(call, r, Value::Null).await?;
        Ok(Out::empty())
    }

    // ---- inline policies ----

    async fn put_inline(&self, call: &Call<'_>, owner: Owner) -> Result<Out, AwsError> {
        let input = call.input;
        let pname = s(input, "PolicyName").unwrap_or_default().to_string();
        let doc = s(input, "PolicyDocument").unwrap_or_default().to_string();
        compile_identity(&doc)?;
        let _w = self.writer.lock().await;
        match owner {
            Owner::User => {
                let mut u = self.user_record(s(input, "UserName").unwrap_or_default())?;
                u.inline.insert(pname, doc);
                self.save_user(call, u, Value::Null).await?;
            }
            Owner::Role => {
                let mut r = self.role_record(s(input, "RoleName").unwrap_or_default())?;
                r.inline.insert(pname, doc);
                self.save_role(call, r, Value::Null).await?;
            }
        }
        Ok(Out::empty())
    }

    fn inline_of(
        &self,
        owner: Owner,
        input: &Value,
    ) -> Result<(String, BTreeMap<String, String>), AwsError> {
        Ok(match owner {
            Owner::User => {
                let u = self.user_record(s(input, "UserName").unwrap_or_default())?;
                (u.name, u.inline)
            }
            Owner::Role => {
                let r = self.role_record(s(input, "RoleName").unwrap_or_default())?;
                (r.name, r.inline)
            }
        })
    }

    fn no_inline(owner: Owner, pname: &str) -> AwsError {
        let what = if owner == Owner::User { "user" } else { "role" };
        no_such_entity(format!(
            "The {what} policy with name {pname} cannot be found."
        ))
    }

    fn get_inline(&self, owner: Owner, input: &Value) -> Result<Out, AwsError> {
        let pname = s(input, "PolicyName").unwrap_or_default();
        let (name, inline) = self.inline_of(owner, input)?;
        let doc = inline
            .get(pname)
            .ok_or_else(|| Self::no_inline(owner, pname))?;
        let mut x = Xml::new();
        x.leaf(
            if owner == Owner::User {
                "UserName"
            } else {
                "RoleName"
            },
            &name,
        )
        .leaf("PolicyName", pname)
        .leaf("PolicyDocument", &url_encode(doc));
        Ok(Out::xml(x))
    }

    async fn delete_inline(&self, call: &Call<'_>, owner: Owner) -> Result<Out, AwsError> {
        let input = call.input;
        let pname = s(input, "PolicyName").unwrap_or_default();
        let _w = self.writer.lock().await;
        match owner {
            Owner::User => {
                let mut u = self.user_record(s(input, "UserName").unwrap_or_default())?;
                u.inline
                    .remove(pname)
                    .ok_or_else(|| Self::no_inline(owner, pname))?;
                self.save_user(call, u, Value::Null).await?;
            }
            Owner::Role => {
                let mut r = self.role_record(s(input, "RoleName").unwrap_or_default())?;
                r.inline
                    .remove(pname)
                    .ok_or_else(|| Self::no_inline(owner, pname))?;
                self.save_role(call, r, Value::Null).await?;
            }
        }
        Ok(Out::empty())
    }

    fn list_inline(&self, owner: Owner, input: &Value) -> Result<Out, AwsError> {
        let (_, inline) = self.inline_of(owner, input)?;
        let items: Vec<(String, String)> = inline.into_keys().map(|k| (k.clone(), k)).collect();
        let (names, next) = page(items, input);
        let mut x = Xml::new();
        x.members("PolicyNames", &names, |x, n| {
            x.text(n);
        });
        truncation(&mut x, next);
        Ok(Out::xml(x))
    }

    // ---- managed policies ----

    fn attachments(&self, arn: &str) -> usize {
        let st = self.state.read();
        st.users
            .values()
            .filter(|u| u.rec.attached.iter().any(|a| a == arn))
            .count()
            + st.roles
                .values()
                .filter(|r| r.rec.attached.iter().any(|a| a == arn))
                .count()
    }

    async fn create_policy(&self, call: &Call<'_>) -> Result<Out, AwsError> {
        let input = call.input;
        let name = s(input, "PolicyName").unwrap_or_default();
        let doc = s(input, "PolicyDocument").unwrap_or_default();
        let compiled = compile_identity(doc)?;
        let path = path_of(input);
        let mut tags = Vec::new();
        merge_tags(&mut tags, tags_of(input))?;
        let key = name.to_ascii_lowercase();
        let _w = self.writer.lock().await;
        if self.state.read().policies.contains_key(&key) {
            return Err(already_exists(format!(
                "A policy called {name} already exists. Duplicate names are not allowed."
            )));
        }
        let rec = PolicyRecord {
            v: 1,
            name: name.to_string(),
            arn: self.policy_arn(&path, name),
            path,
            id: new_id("ANPA", 21),
            created: rfc3339(self.now()),
            description: s(input, "Description").map(str::to_string),
            document: doc.to_string(),
            tags,
        };
        let json = serde_json::to_vec(&rec).map_err(|_| AwsError::internal())?;
        let audit = json!({"policy": {"policyName": rec.name, "policyId": rec.id, "arn": rec.arn}});
        self.commit(
            call,
            Batch::new().put(NS_POLICIES, key.clone(), json),
            audit,
        )
        .await?;
        let mut x = Xml::new();
        x.elem("Policy", |x| policy_xml(x, &rec, 0));
        self.state
            .write()
            .policies
            .insert(key, PolicyEntry { rec, compiled });
        Ok(Out::xml(x))
    }

    fn policy_record(&self, arn: &str) -> Result<PolicyRecord, AwsError> {
        self.state
            .read()
            .policy_by_arn(arn)
            .map(|p| p.rec.clone())
            .ok_or_else(|| no_such_entity(format!("Policy {arn} was not found.")))
    }

    fn get_policy(&self, input: &Value) -> Result<Out, AwsError> {
        let p = self.policy_record(s(input, "PolicyArn").unwrap_or_default())?;
        let n = self.attachments(&p.arn);
        let mut x = Xml::new();
        x.elem("Policy", |x| policy_xml(x, &p, n));
        Ok(Out::xml(x))
    }

    fn get_policy_version(&self, input: &Value) -> Result<Out, AwsError> {
        let arn = s(input, "PolicyArn").unwrap_or_default();
        let p = self.policy_record(arn)?;
        let version = s(input, "VersionId").unwrap_or_default();
        if version != "v1" {
            return Err(no_such_entity(format!(
                "Policy {arn} version {version} does not exist or is not attachable."
            )));
        }
        let mut x = Xml::new();
        x.elem("PolicyVersion", |x| {
            x.leaf("Document", &url_encode(&p.document))
                .leaf("VersionId", "v1")
                .leaf("IsDefaultVersion", "true")
                .leaf("CreateDate", &p.created);
        });
        Ok(Out::xml(x))
    }

    async fn delete_policy(&self, call: &Call<'_>) -> Result<Out, AwsError> {
        let input = call.input;
        let arn = s(input, "PolicyArn").unwrap_or_default();
        let _w = self.writer.lock().await;
        let p = self.policy_record(arn)?;
        if self.attachments(arn) > 0 {
            return Err(delete_conflict(
                "Cannot delete a policy attached to entities.",
            ));
        }
        let key = p.name.to_ascii_lowercase();
        self.commit(
            call,
            Batch::new().delete(NS_POLICIES, key.clone()),
            Value::Null,
        )
        .await?;
        self.state.write().policies.remove(&key);
        Ok(Out::empty())
    }

    fn list_policies(&self, input: &Value) -> Result<Out, AwsError> {
        let scope = s(input, "Scope").unwrap_or("All");
        let only_attached = input
            .get("OnlyAttached")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let items: Vec<(String, PolicyRecord)> = if scope == "AWS" {
            Vec::new()
        } else {
            self.state
                .read()
                .policies
                .iter()
                .filter(|(_, p)| under_prefix(&p.rec.path, input))
                .map(|(k, p)| (k.clone(), p.rec.clone()))
                .collect()
        };
        let items: Vec<(String, (PolicyRecord, usize))> = items
            .into_iter()
            .map(|(k, p)| {
                let n = self.attachments(&p.arn);
                (k, (p, n))
            })
            .filter(|(_, (_, n))| !only_attached || *n > 0)
            .collect();
        let (pols, next) = page(items, input);
        let mut x = Xml::new();
        x.members("Policies", &pols, |x, (p, n)| policy_xml(x, p, *n));
        truncation(&mut x, next);
        Ok(Out::xml(x))
    }

    async fn attach(&self, call: &Call<'_>, owner: Owner, attach: bool) -> Result<Out, AwsError> {
        let input = call.input;
        let arn = s(input, "PolicyArn").unwrap_or_default().to_string();
        let _w = self.writer.lock().await;
        let exists = self.state.read().policy_by_arn(&arn).is_some();
        let mut list = match owner {
            Owner::User => {
                self.user_record(s(input, "UserName").unwrap_or_default())?
                    .attached
            }
            Owner::Role => {
                self.role_record(s(input, "RoleName").unwrap_or_default())?
                    .attached
            }
        };
        if attach {
            if !exists {
                return Err(no_policy(&arn));
            }
            if !list.contains(&arn) {
                if list.len() >= MANAGED_PER_ENTITY {
                    let what = if owner == Owner::User { "User" } else { "Role" };
                    return Err(limit(format!(
                        "Cannot exceed quota for PoliciesPer{what}: {MANAGED_PER_ENTITY}"
                    )));
                }
                list.push(arn);
            }
        } else {
            let before = list.len();
            list.retain(|a| *a != arn);
            if list.len() == before {
                return Err(no_such_entity(format!("Policy {arn} was not found.")));
            }
        }
        match owner {
            Owner::User => {
                let mut u = self.user_record(s(input, "UserName").unwrap_or_default())?;
                u.attached = list;
                self.save_user(call, u, Value::Null).await?;
            }
            Owner::Role => {
                let mut r = self.role_record(s(input, "RoleName").unwrap_or_default())?;
                r.attached = list;
                self.save_role(call, r, Value::Null).await?;
            }
        }
        Ok(Out::empty())
    }

    fn list_attached(&self, owner: Owner, input: &Value) -> Result<Out, AwsError> {
        let attached = match owner {
            Owner::User => {
                self.user_record(s(input, "UserName").unwrap_or_default())?
                    .attached
            }
            Owner::Role => {
                self.role_record(s(input, "RoleName").unwrap_or_default())?
                    .attached
            }
        };
        let st = self.state.read();
        let items: Vec<(String, (String, String))> = attached
            .iter()
            .filter_map(|a| st.policy_by_arn(a))
            .filter(|p| under_prefix(&p.rec.path, input))
            .map(|p| (p.rec.arn.clone(), (p.rec.name.clone(), p.rec.arn.clone())))
            .collect();
        drop(st);
        let (pols, next) = page(items, input);
        let mut x = Xml::new();
        x.members("AttachedPolicies", &pols, |x, (n, a)| {
            x.leaf("PolicyName", n).leaf("PolicyArn", a);
        });
        truncation(&mut x, next);
        Ok(Out::xml(x))
    }
}

/// The name and path of the service-linked role of `service`: AWS's names for the services
/// sluice hosts, `AWSServiceRoleFor<First label>` otherwise; `CustomSuffix` appended with `_`.
pub(crate) fn service_linked_name(service: &str, suffix: Option<&str>) -> (String, String) {
    let base = match service {
        "apidestinations.events.amazonaws.com" => {
            "AWSServiceRoleForAmazonEventBridgeApiDestinations".to_string()
        }
        "events.amazonaws.com" => "AWSServiceRoleForAmazonEventBridge".to_string(),
        "firehose.amazonaws.com" => "AWSServiceRoleForAmazonKinesisFirehose".to_string(),
        "secretsmanager.amazonaws.com" => "AWSServiceRoleForSecretsManager".to_string(),
        other => {
            let label = other.split('.').next().unwrap_or(other);
            let mut c = label.chars();
            let cap: String = match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect(),
                None => String::new(),
            };
            format!("AWSServiceRoleFor{cap}")
        }
    };
    let name = match suffix {
        Some(sfx) => format!("{base}_{sfx}"),
        None => base,
    };
    (name, format!("/aws-service-role/{service}/"))
}
