//! The request side of an evaluation: who asks, for what, with which context keys.
//!
//! Design constraints:
//! - Context keys are stored lowercased (condition key names are case-insensitive); values keep
//!   their case (each operator decides how to compare them).
//! - Lookups are a linear scan over a small vector: requests carry a handful of keys, and a scan
//!   of pre-lowercased keys beats hashing at that size.
//! - Keys describing the principal (`aws:PrincipalArn`, `aws:PrincipalAccount`, `aws:userid`,
//!   `aws:username`, `aws:PrincipalType`, `aws:PrincipalIsAWSService`, `aws:PrincipalServiceName`,
//!   `kms:CallerAccount`) are derived from [`PrincipalInfo`] unless the context sets them.

use serde::Serialize;

/// Who makes the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrincipalInfo<'a> {
    /// The principal's ARN; for a role session the assumed-role session ARN; for a service
    /// principal its name (`events.amazonaws.com`).
    pub arn: &'a str,
    /// For a role session, the role's ARN (what `aws:PrincipalArn` and `Principal` match).
    pub role_arn: Option<&'a str>,
    /// The principal's account.
    pub account: &'a str,
    /// `aws:userid`.
    pub user_id: &'a str,
    /// `aws:username` (IAM users only).
    pub username: Option<&'a str>,
    /// The account's root principal.
    pub is_root: bool,
    /// A service principal acting as itself.
    pub is_service: bool,
}

impl<'a> PrincipalInfo<'a> {
    /// The ARN that `aws:PrincipalArn` and `Principal` elements see (the role ARN for a session).
    pub fn policy_arn(&self) -> &'a str {
        self.role_arn.unwrap_or(self.arn)
    }

    /// The root principal of `account`; `arn` must be `arn:aws:iam::<account>:root`.
    pub fn root(account: &'a str, arn: &'a str) -> Self {
        PrincipalInfo {
            arn,
            role_arn: None,
            account,
            user_id: account,
            username: None,
            is_root: true,
            is_service: false,
        }
    }

    /// An IAM user.
    pub fn user(account: &'a str, arn: &'a str, user_id: &'a str, username: &'a str) -> Self {
        PrincipalInfo {
            arn,
            role_arn: None,
            account,
            user_id,
            username: Some(username),
            is_root: false,
            is_service: false,
        }
    }

    /// A role session (`arn` is the `assumed-role/...` session ARN).
    pub fn role_session(
        account: &'a str,
        session_arn: &'a str,
        role_arn: &'a str,
        user_id: &'a str,
    ) -> Self {
        PrincipalInfo {
            arn: session_arn,
            role_arn: Some(role_arn),
            account,
            user_id,
            username: None,
            is_root: false,
            is_service: false,
        }
    }

    /// A service principal (`events.amazonaws.com`) acting in `account`.
    pub fn service(account: &'a str, service: &'a str) -> Self {
        PrincipalInfo {
            arn: service,
            role_arn: None,
            account,
            user_id: service,
            username: None,
            is_root: false,
            is_service: true,
        }
    }

    fn principal_type(&self) -> &'static str {
        if self.is_root {
            "Account"
        } else if self.is_service {
            "AWSService"
        } else if self.role_arn.is_some() {
            "AssumedRole"
        } else {
            "User"
        }
    }
}

/// One request to authorize.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Who asks.
    pub principal: PrincipalInfo<'a>,
    /// `service:Action`, e.g. `kms:Decrypt` (matched case-insensitively).
    pub action: &'a str,
    /// The resource ARN, or `*` for actions without a resource.
    pub resource: &'a str,
    /// Context keys.
    pub context: &'a Context,
}

/// The values of one context key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Values<'a> {
    /// A single-valued key.
    One(&'a str),
    /// A multi-valued key (possibly empty).
    Many(&'a [String]),
}

impl<'a> Values<'a> {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Values::One(_) => 1,
            Values::Many(v) => v.len(),
        }
    }

    /// No value at all (an empty multi-valued key).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value when there is exactly one.
    pub fn single(&self) -> Option<&'a str> {
        match self {
            Values::One(v) => Some(v),
            Values::Many([v]) => Some(v),
            Values::Many(_) => None,
        }
    }

    /// Iterates over the values.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        let (one, many): (Option<&'a str>, &'a [String]) = match *self {
            Values::One(v) => (Some(v), &[]),
            Values::Many(v) => (None, v),
        };
        one.into_iter().chain(many.iter().map(String::as_str))
    }

    /// Owned copy, for explanations.
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
enum Stored {
    One(String),
    Many(Vec<String>),
}

/// Request context keys and their values.
///
/// ```
/// use sluice_policy::Context;
/// let mut c = Context::new();
/// c.set("kms:ViaService", "secretsmanager.us-east-1.amazonaws.com")
///  .set_multi("aws:TagKeys", ["a", "b"]);
/// assert_eq!(c.get("KMS:VIASERVICE").and_then(|v| v.single()), Some("secretsmanager.us-east-1.amazonaws.com"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// (hash of the lowercased key, lowercased key, values).
    entries: Vec<(u64, Box<str>, Stored)>,
    /// The hashes of `entries`, contiguous, for a tight lookup scan.
    hashes: Vec<u64>,
}

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    fn put(&mut self, key: &str, v: Stored) -> &mut Self {
        let k = key.to_ascii_lowercase();
        match self.entries.iter_mut().find(|(_, e, _)| **e == *k) {
            Some(e) => e.2 = v,
            None => {
                let h = key_hash(&k);
                self.hashes.push(h);
                self.entries.push((h, k.into_boxed_str(), v));
            }
        }
        self
    }

    /// Sets a single-valued key (replacing any previous value).
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.put(key, Stored::One(value.into()))
    }

    /// Sets a multi-valued key (an empty iterator sets an empty set, which differs from absent
    /// only for `Null` and for nothing else).
    pub fn set_multi<I, S>(&mut self, key: &str, values: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.put(
            key,
            Stored::Many(values.into_iter().map(Into::into).collect()),
        )
    }

    /// Builder form of [`Context::set`].
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.set(key, value);
        self
    }

    /// Builder form of [`Context::set_multi`].
    pub fn with_multi<I, S>(mut self, key: &str, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.set_multi(key, values);
        self
    }

    /// Removes a key.
    pub fn remove(&mut self, key: &str) -> &mut Self {
        let k = key.to_ascii_lowercase();
        self.entries.retain(|(_, e, _)| **e != *k);
        self.hashes = self.entries.iter().map(|e| e.0).collect();
        self
    }

    /// Sets `kms:EncryptionContext:<k>` for every pair and `kms:EncryptionContextKeys`.
    pub fn set_encryption_context<'k, I>(&mut self, pairs: I) -> &mut Self
    where
        I: IntoIterator<Item = (&'k str, &'k str)>,
    {
        let mut keys = Vec::new();
        for (k, v) in pairs {
            self.set(&format!("kms:EncryptionContext:{k}"), v);
            keys.push(k.to_string());
        }
        self.set_multi("kms:EncryptionContextKeys", keys)
    }

    /// Sets `aws:ResourceTag/<k>` for every tag of the resource.
    pub fn set_resource_tags<'k, I>(&mut self, tags: I) -> &mut Self
    where
        I: IntoIterator<Item = (&'k str, &'k str)>,
    {
        for (k, v) in tags {
            self.set(&format!("aws:ResourceTag/{k}"), v);
        }
        self
    }

    /// Sets `aws:RequestTag/<k>` for every tag in the request, and `aws:TagKeys`.
    pub fn set_request_tags<'k, I>(&mut self, tags: I) -> &mut Self
    where
        I: IntoIterator<Item = (&'k str, &'k str)>,
    {
        let mut keys = Vec::new();
        for (k, v) in tags {
            self.set(&format!("aws:RequestTag/{k}"), v);
            keys.push(k.to_string());
        }
        self.set_multi("aws:TagKeys", keys)
    }

    /// Sets `aws:CurrentTime` (ISO 8601) and `aws:EpochTime` from a Unix time in seconds.
    pub fn set_time(&mut self, unix_seconds: i64) -> &mut Self {
        let t = time::OffsetDateTime::from_unix_timestamp(unix_seconds)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let iso = t
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        self.set("aws:CurrentTime", iso)
            .set("aws:EpochTime", unix_seconds.to_string())
    }

    /// The values of `key` (any case) as set on the context.
    pub fn get(&self, key: &str) -> Option<Values<'_>> {
        self.entries
            .iter()
            .find(|(_, k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, _, v)| stored(v))
    }

    /// Lookup with a compiled key: hash comparison first, string comparison on a hash hit.
    #[inline]
    pub(crate) fn get_id(&self, id: &KeyId) -> Option<Values<'_>> {
        let mut from = 0;
        while let Some(i) = self.hashes[from..].iter().position(|h| *h == id.hash) {
            let (_, k, v) = &self.entries[from + i];
            if crate::pattern::s_eq(k, &id.key) {
                return Some(stored(v));
            }
            from += i + 1;
        }
        None
    }

    /// Iterates over `(lowercased key, values)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Values<'_>)> {
        self.entries.iter().map(|(_, k, v)| (&**k, stored(v)))
    }
}

/// Serialized as a map from lowercased key to a string or an array of strings.
impl Serialize for Context {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = serializer.serialize_map(Some(self.entries.len()))?;
        for (_, k, v) in &self.entries {
            m.serialize_entry(&**k, v)?;
        }
        m.end()
    }
}

fn stored(v: &Stored) -> Values<'_> {
    match v {
        Stored::One(s) => Values::One(s),
        Stored::Many(m) => Values::Many(m),
    }
}

/// FNV-1a of a lowercased key name.
pub(crate) fn key_hash(lower: &str) -> u64 {
    lower.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A key derived from the principal when the context does not set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Derived {
    None,
    PrincipalArn,
    PrincipalAccount,
    CallerAccount,
    UserId,
    UserName,
    PrincipalType,
    PrincipalIsAwsService,
    PrincipalServiceName,
}

/// A condition key compiled for lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyId {
    pub key: Box<str>,
    pub hash: u64,
    pub derived: Derived,
}

impl KeyId {
    /// Compiles a key name (any case).
    pub(crate) fn new(name: &str) -> KeyId {
        let key = name.to_ascii_lowercase();
        let derived = match key.as_str() {
            "aws:principalarn" => Derived::PrincipalArn,
            "aws:principalaccount" => Derived::PrincipalAccount,
            "kms:calleraccount" => Derived::CallerAccount,
            "aws:userid" => Derived::UserId,
            "aws:username" => Derived::UserName,
            "aws:principaltype" => Derived::PrincipalType,
            "aws:principalisawsservice" => Derived::PrincipalIsAwsService,
            "aws:principalservicename" => Derived::PrincipalServiceName,
            _ => Derived::None,
        };
        KeyId {
            hash: key_hash(&key),
            key: key.into_boxed_str(),
            derived,
        }
    }
}

/// Looks up a compiled key for `req`: the context first, then keys derived from the principal.
#[inline]
pub(crate) fn lookup_id<'a>(req: &Request<'a>, id: &KeyId) -> Option<Values<'a>> {
    if let Some(v) = req.context.get_id(id) {
        return Some(v);
    }
    if id.derived == Derived::None {
        return None;
    }
    derived(req, id.derived)
}

fn derived<'a>(req: &Request<'a>, d: Derived) -> Option<Values<'a>> {
    let p = &req.principal;
    let v = match d {
        Derived::None => return None,
        Derived::PrincipalArn => p.policy_arn(),
        Derived::PrincipalAccount | Derived::CallerAccount if !p.is_service => p.account,
        Derived::PrincipalAccount | Derived::CallerAccount => return None,
        Derived::UserId => p.user_id,
        Derived::UserName => p.username?,
        Derived::PrincipalType => p.principal_type(),
        Derived::PrincipalIsAwsService => {
            if p.is_service {
                "true"
            } else {
                "false"
            }
        }
        Derived::PrincipalServiceName if p.is_service => p.arn,
        Derived::PrincipalServiceName => return None,
    };
    Some(Values::One(v))
}
