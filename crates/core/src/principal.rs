//! Who is calling, and through what.

use serde::{Deserialize, Serialize};

/// The kind of an authenticated principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub enum PrincipalKind {
    /// The account's root principal (`arn:aws:iam::<acct>:root`).
    Root,
    /// An IAM user.
    IamUser,
    /// A role session obtained through AssumeRole.
    AssumedRole,
    /// A sluice service acting as itself (a service principal such as `events.amazonaws.com`).
    Service,
}

/// An authenticated principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// What kind of principal this is.
    pub kind: PrincipalKind,
    /// The account the principal belongs to.
    pub account: String,
    /// The principal's ARN (for an assumed role, the `assumed-role/...` session ARN).
    pub arn: String,
    /// The unique id (`aws:userid`): the account id for root, `AIDA...` for users,
    /// `AROA...:session` for role sessions.
    pub user_id: String,
    /// The access key id the request was signed with, if any.
    pub access_key_id: Option<String>,
    /// For an assumed role, the role's ARN (`aws:PrincipalArn` uses it).
    pub role_arn: Option<String>,
}

impl Principal {
    /// The root principal of `account`.
    pub fn root(account: &str, access_key_id: Option<String>) -> Self {
        Self {
            kind: PrincipalKind::Root,
            account: account.to_string(),
            arn: format!("arn:aws:iam::{account}:root"),
            user_id: account.to_string(),
            access_key_id,
            role_arn: None,
        }
    }

    /// A service principal (`events.amazonaws.com`, ...) acting in `account`.
    pub fn service(account: &str, service: &str) -> Self {
        Self {
            kind: PrincipalKind::Service,
            account: account.to_string(),
            arn: service.to_string(),
            user_id: service.to_string(),
            access_key_id: None,
            role_arn: None,
        }
    }

    /// The ARN policies match against (`aws:PrincipalArn`): the role ARN for a role session.
    pub fn policy_arn(&self) -> &str {
        self.role_arn.as_deref().unwrap_or(&self.arn)
    }

    /// The CloudTrail `userIdentity.type`.
    pub fn trail_type(&self) -> &'static str {
        match self.kind {
            PrincipalKind::Root => "Root",
            PrincipalKind::IamUser => "IAMUser",
            PrincipalKind::AssumedRole => "AssumedRole",
            PrincipalKind::Service => "AWSService",
        }
    }
}

/// The context of one call into a service: who, from where, through which service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    /// The principal on whose behalf the call runs.
    pub principal: Principal,
    /// The request id (`x-amzn-RequestId`) of the originating request.
    pub request_id: String,
    /// The client's IP address, if the call came over the network.
    pub source_ip: Option<String>,
    /// The client's User-Agent, if any.
    pub user_agent: Option<String>,
    /// Whether the originating request came over TLS.
    pub secure_transport: bool,
    /// When a service calls another on the caller's behalf: the calling service's endpoint
    /// name, e.g. `secretsmanager.us-east-1.amazonaws.com` (`kms:ViaService`).
    pub via_service: Option<String>,
    /// The region the server serves.
    pub region: String,
}

impl CallContext {
    /// A context for a direct call by `principal`.
    pub fn direct(principal: Principal, region: &str, request_id: &str) -> Self {
        Self {
            principal,
            request_id: request_id.to_string(),
            source_ip: None,
            user_agent: None,
            secure_transport: false,
            via_service: None,
            region: region.to_string(),
        }
    }

    /// The same caller, seen through `service` (e.g. `secretsmanager`): the context a service
    /// uses when it calls another service on the caller's behalf.
    pub fn via(&self, service: &str) -> Self {
        let mut c = self.clone();
        c.via_service = Some(format!("{service}.{}.amazonaws.com", self.region));
        c
    }
}
