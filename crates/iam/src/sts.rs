//! STS: `GetCallerIdentity`, `AssumeRole`, and the in-process [`Iam::assume_role_for_service`].
//!
//! A role's trust policy is evaluated by the policy engine with key-policy semantics (the trust
//! policy is authoritative): it must name the caller (its ARN, its role's ARN, a service
//! principal, or the account while the caller is the account's root), or name the caller's
//! account while one of the caller's identity policies allows `sts:AssumeRole` on the role.
//! The request context carries `sts:ExternalId` (from `ExternalId`), `aws:CurrentTime`,
//! `aws:SourceIp` and `aws:SecureTransport`. A role that does not exist is reported exactly like
//! a denied one (`AccessDenied`), as AWS does, so callers cannot probe for role names.

use serde_json::{Value, json};
use sluice_core::{AwsError, CallContext, Principal, PrincipalKind};
use sluice_policy::{Decision, Inputs, Policy, Request, ResourceKind, evaluate};
use sluice_store::Batch;

use crate::errors::*;
use crate::model::*;
use crate::query::{Xml, s};
use crate::{Call, Iam, Out, SessionEntry, rfc3339};

/// Default session duration (seconds).
const DEFAULT_DURATION: u64 = 3600;

/// The principal of a role session.
pub(crate) fn session_principal(rec: &SessionRecord, access_key_id: Option<&str>) -> Principal {
    Principal {
        kind: PrincipalKind::AssumedRole,
        account: rec.account.clone(),
        arn: rec.session_arn(),
        user_id: format!("{}:{}", rec.role_id, rec.session_name),
        access_key_id: access_key_id.map(str::to_string),
        role_arn: Some(rec.role_arn.clone()),
    }
}

impl Iam {
    pub(crate) async fn call_sts(&self, call: &Call<'_>) -> Result<Out, AwsError> {
        match call.op {
            "GetCallerIdentity" => {
                let p = &call.ctx.principal;
                let mut x = Xml::new();
                x.leaf("UserId", &p.user_id)
                    .leaf("Account", &p.account)
                    .leaf("Arn", &p.arn);
                Ok(Out::xml(x))
            }
            "AssumeRole" => self.assume_role(call).await,
            op => Err(AwsError::client(
                "InvalidAction",
                format!("Could not find operation {op} for version 2011-06-15"),
            )),
        }
    }

    /// Checks the trust policy of `role_arn` for `caller` and returns the role's id.
    fn check_trust(
        &self,
        ctx: &CallContext,
        role_arn: &str,
        external_id: Option<&str>,
    ) -> Result<(String, u32), AwsError> {
        let caller = &ctx.principal;
        let denied = |reason: Option<String>| {
            access_denied(reason.unwrap_or_else(|| {
                format!(
                    "User: {} is not authorized to perform: sts:AssumeRole on resource: {role_arn}",
                    caller.arn
                )
            }))
        };
        let (trust, role_id, max_session) = {
            let st = self.state.read();
            match st
                .roles
                .get(&role_name_of(role_arn).to_ascii_lowercase())
                .filter(|r| r.rec.arn == role_arn)
            {
                Some(r) => (r.trust.clone(), r.rec.id.clone(), r.rec.max_session),
                None => return Err(denied(None)),
            }
        };
        let identity = crate::IdentityPolicies::policies_for(self, caller);
        let refs: Vec<&Policy> = identity.iter().map(|p| p.as_ref()).collect();
        let mut context = self.base_context(ctx);
        if let Some(e) = external_id {
            context.set("sts:ExternalId", e);
        }
        let request = Request {
            principal: sluice_kms::policy_authz::principal_info(caller),
            action: "sts:AssumeRole",
            resource: role_arn,
            context: &context,
        };
        let outcome = evaluate(
            &request,
            &Inputs {
                identity_policies: &refs,
                resource_policy: Some(&trust),
                resource_account: &self.cfg.account,
                kind: ResourceKind::KmsKey,
            },
        );
        if outcome.decision != Decision::Allow {
            tracing::debug!(caller = %caller.arn, role = role_arn, "AssumeRole denied by the trust policy");
            return Err(denied(outcome.denial_message(&request)));
        }
        Ok((role_id, max_session))
    }

    async fn assume_role(&self, call: &Call<'_>) -> Result<Out, AwsError> {
        let (ctx, input) = (call.ctx, call.input);
        let role_arn = s(input, "RoleArn").unwrap_or_default();
        let session_name = s(input, "RoleSessionName").unwrap_or_default();
        if input.get("Policy").is_some() || input.get("PolicyArns").is_some() {
            return Err(validation(
                "Session policies (Policy, PolicyArns) are not supported by sluice.",
            ));
        }
        let (role_id, max_session) = self.check_trust(ctx, role_arn, s(input, "ExternalId"))?;
        let duration = input
            .get("DurationSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_DURATION);
        if duration > u64::from(max_session) {
            return Err(validation(
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
            ));
        }
        let now = self.now();
        let expires = now + time::Duration::seconds(duration as i64);
        let id = new_id("ASIA", 20);
        let secret = new_secret();
        let token = new_session_token();
        let rec = SessionRecord {
            v: 1,
            id: id.clone(),
            role_arn: role_arn.to_string(),
            role_id,
            session_name: session_name.to_string(),
            account: self.cfg.account.clone(),
            expires_ms: (expires.unix_timestamp_nanos() / 1_000_000) as i64,
            secret_sealed: self.seal(&format!("iam/session-secret/{id}"), &secret),
            token_sealed: self.seal(&format!("iam/session-token/{id}"), &token),
        };
        let json = serde_json::to_vec(&rec).map_err(|_| AwsError::internal())?;
        let _w = self.writer.lock().await;
        // Expired sessions are dropped on the way.
        let now_ms = self.clock.now_millis();
        let expired: Vec<String> = self
            .state
            .read()
            .sessions
            .values()
            .filter(|s| s.rec.expires_ms <= now_ms)
            .map(|s| s.rec.id.clone())
            .collect();
        let mut batch = Batch::new().put(NS_SESSIONS, id.clone(), json);
        for e in &expired {
            batch = batch.delete(NS_SESSIONS, e.clone());
        }
        let principal = session_principal(&rec, Some(&id));
        let expiration = rfc3339(expires);
        let audit = json!({
            "credentials": {"accessKeyId": id, "expiration": expiration},
            "assumedRoleUser": {"assumedRoleId": principal.user_id, "arn": principal.arn},
        });
        self.commit(call, batch, audit.clone()).await?;
        let mut x = Xml::new();
        x.elem("Credentials", |x| {
            x.leaf("AccessKeyId", &id)
                .leaf("SecretAccessKey", &secret)
                .leaf("SessionToken", &token)
                .leaf("Expiration", &expiration);
        })
        .elem("AssumedRoleUser", |x| {
            x.leaf("AssumedRoleId", &principal.user_id)
                .leaf("Arn", &principal.arn);
        });
        {
            let mut st = self.state.write();
            for e in &expired {
                st.sessions.remove(e);
            }
            st.sessions
                .insert(id.clone(), SessionEntry { rec, secret, token });
        }
        Ok(Out {
            xml: Some(x.into_string()),
            audit,
        })
    }

    /// Assumes `role_arn` as the service principal `service_principal` (for example
    /// `firehose.amazonaws.com`) through the same trust-policy check as `AssumeRole`, and returns
    /// the role-session principal to act as. No credentials are minted: the caller is in
    /// process. The call is audited as an STS `AssumeRole` by an `AWSService` identity.
    pub async fn assume_role_for_service(
        &self,
        service_principal: &str,
        role_arn: &str,
        session_name: &str,
    ) -> Result<Principal, AwsError> {
        let ctx = CallContext::direct(
            Principal::service(&self.cfg.account, service_principal),
            &self.cfg.region,
            &uuid::Uuid::new_v4().to_string(),
        );
        let input = json!({"RoleArn": role_arn, "RoleSessionName": session_name});
        let result = self
            .check_trust(&ctx, role_arn, None)
            .map(|(role_id, _)| Principal {
                kind: PrincipalKind::AssumedRole,
                account: self.cfg.account.clone(),
                arn: session_arn(&self.cfg.account, role_name_of(role_arn), session_name),
                user_id: format!("{role_id}:{session_name}"),
                access_key_id: None,
                role_arn: Some(role_arn.to_string()),
            });
        let outcome = match &result {
            Ok(p) => Ok(json!({"assumedRoleUser": {"assumedRoleId": p.user_id, "arn": p.arn}})),
            Err(e) => Err(e),
        };
        let call = Call {
            ctx: &ctx,
            source: crate::STS_EVENT_SOURCE,
            op: "AssumeRole",
            input: &input,
            resource: Some((role_arn.to_string(), "AWS::IAM::Role")),
            audited: std::sync::atomic::AtomicBool::new(false),
        };
        self.audit(&call, outcome).await;
        result
    }
}
