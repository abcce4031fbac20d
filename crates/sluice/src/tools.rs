//! Offline operator tools: `sluice pattern ...` and `sluice policy explain`.
//!
//! `policy explain` answers story A's question without the deauthorize / re-authorize loop:
//! for a key policy (given as JSON, or read from a key in the data directory) and a request
//! (principal, action, resource, via-service, encryption context, other context keys), is it
//! allowed, and which statement decided or which condition failed?

use std::path::PathBuf;

use clap::{Args, Subcommand};
use sluice_policy::{Context, Inputs, Policy, PrincipalInfo, Request, ResourceKind};

/// `sluice pattern ...`.
#[derive(Debug, Subcommand)]
pub enum PatternCommand {
    /// Does an event match a pattern? Exit 0 on a match, 1 on no match, 2 on invalid input.
    Test {
        /// The pattern: JSON text, or @file.
        #[arg(long)]
        pattern: String,
        /// The event: JSON text, or @file.
        #[arg(long)]
        event: String,
    },
    /// Match a file of events (one JSON per line, optionally .gz) against named rules.
    Match {
        /// JSON object of rule name -> pattern (or list of patterns).
        #[arg(long)]
        rules: PathBuf,
        /// Events file, one JSON document a line (.jsonl or .jsonl.gz).
        #[arg(long)]
        events: PathBuf,
        /// Print one JSON object with the counts and events/s.
        #[arg(long)]
        json: bool,
    },
}

/// `sluice policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Evaluate a request against a policy and explain the decision.
    /// Exit 0 when allowed, 1 when denied, 2 on invalid input.
    Explain(ExplainArgs),
}

/// Flags of `sluice policy explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The resource policy or key policy: JSON text or @file.
    #[arg(long, conflicts_with = "key")]
    pub policy: Option<String>,
    /// Read the key policy of this KMS key (id or ARN) from the data directory.
    #[arg(long)]
    pub key: Option<String>,
    /// Data directory (with --key).
    #[arg(long, env = "SLUICE_DATA_DIR", default_value = ".sluice")]
    pub data_dir: PathBuf,
    /// Identity policies of the principal: JSON text or @file; repeatable.
    #[arg(long = "identity-policy")]
    pub identity_policies: Vec<String>,
    /// The principal's ARN: arn:aws:iam::<acct>:root, ...:user/<name>, ...:role/<name>,
    /// arn:aws:sts::<acct>:assumed-role/<role>/<session>, or a service (events.amazonaws.com).
    #[arg(long)]
    pub principal: String,
    /// The action, e.g. kms:Decrypt.
    #[arg(long)]
    pub action: String,
    /// The resource ARN [default: the key's ARN with --key, else *].
    #[arg(long)]
    pub resource: Option<String>,
    /// The account owning the resource [default: taken from the resource or principal ARN].
    #[arg(long)]
    pub resource_account: Option<String>,
    /// Evaluate with KMS key-policy semantics (implied by --key).
    #[arg(long)]
    pub kms: bool,
    /// The service the call comes through (e.g. secretsmanager): sets kms:ViaService to
    /// <service>.<region>.amazonaws.com.
    #[arg(long)]
    pub via_service: Option<String>,
    /// Region for --via-service.
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Encryption context pair k=v (sets kms:EncryptionContext:k and kms:EncryptionContextKeys);
    /// repeatable.
    #[arg(long = "encryption-context")]
    pub encryption_context: Vec<String>,
    /// Any other context key k=v (repeat a key for several values); repeatable.
    #[arg(long = "context")]
    pub context: Vec<String>,
    /// Print the structured explanation as JSON.
    #[arg(long)]
    pub json: bool,
}

fn text_arg(arg: &str) -> anyhow::Result<String> {
    match arg.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("cannot read {path}: {e}"))
        }
        None => Ok(arg.to_string()),
    }
}

fn pair(s: &str) -> anyhow::Result<(&str, &str)> {
    s.split_once('=')
        .ok_or_else(|| anyhow::anyhow!("{s:?} is not of the form key=value"))
}

/// Reads the key policy of `key` from the store in `dir`.
async fn key_policy(dir: &std::path::Path, key: &str) -> anyhow::Result<(String, String, String)> {
    let store = crate::cli::open_store(dir)?;
    let id = key.rsplit('/').next().unwrap_or(key);
    use sluice_store::Store;
    let rec = store
        .get(sluice_kms::model::NS_KEYS, id.as_bytes())
        .await
        .map_err(|e| anyhow::anyhow!("reading the key: {e}"))?
        .ok_or_else(|| anyhow::anyhow!("no key {id} in {}", dir.display()))?;
    let rec: sluice_kms::model::KeyRecord = serde_json::from_slice(&rec.value)?;
    store.close().await.ok();
    Ok((rec.policy, rec.arn, rec.account))
}

/// Runs `sluice policy explain`; returns the exit code.
pub async fn explain(a: &ExplainArgs, out: &mut dyn std::io::Write) -> anyhow::Result<i32> {
    let (policy_text, key_arn, key_account) = match (&a.policy, &a.key) {
        (Some(p), _) => (Some(text_arg(p)?), None, None),
        (None, Some(k)) => {
            let (p, arn, acct) = key_policy(&a.data_dir, k).await?;
            (Some(p), Some(arn), Some(acct))
        }
        (None, None) => (None, None, None),
    };
    let kms = a.kms || a.key.is_some();
    let resource_policy = match &policy_text {
        Some(t) if kms => Some(Policy::parse_key_policy(t).map_err(|e| anyhow::anyhow!("{e}"))?),
        Some(t) => Some(Policy::parse(t).map_err(|e| anyhow::anyhow!("{e}"))?),
        None => None,
    };
    let identity: Vec<Policy> = a
        .identity_policies
        .iter()
        .map(|p| Policy::parse_identity_policy(&text_arg(p)?).map_err(|e| anyhow::anyhow!("{e}")))
        .collect::<anyhow::Result<_>>()?;
    let identity_refs: Vec<&Policy> = identity.iter().collect();

    // The principal.
    let arn = a.principal.as_str();
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let account = parts.get(4).copied().unwrap_or("");
    let role_arn;
    let principal = if arn.ends_with(".amazonaws.com") && !arn.starts_with("arn:") {
        let acct = a
            .resource_account
            .clone()
            .or(key_account.clone())
            .unwrap_or_else(|| "000000000000".into());
        PrincipalInfo::service(Box::leak(acct.into_boxed_str()), arn)
    } else if parts.len() == 6 && parts[5] == "root" {
        PrincipalInfo::root(account, arn)
    } else if parts.len() == 6 && parts[5].starts_with("user/") {
        let name = parts[5].rsplit('/').next().unwrap_or("");
        PrincipalInfo::user(account, arn, "AIDAEXPLAINEXAMPLE00", name)
    } else if parts.len() == 6 && parts[5].starts_with("assumed-role/") {
        let role = parts[5].split('/').nth(1).unwrap_or("");
        role_arn = format!("arn:aws:iam::{}:role/{role}", account);
        PrincipalInfo::role_session(account, arn, &role_arn, "AROAEXPLAINEXAMPLE00:session")
    } else if parts.len() == 6 && parts[5].starts_with("role/") {
        PrincipalInfo::role_session(account, arn, arn, "AROAEXPLAINEXAMPLE00:session")
    } else {
        anyhow::bail!(
            "--principal {arn:?} is not a root, user, role, assumed-role or service principal"
        );
    };

    let resource = a
        .resource
        .clone()
        .or(key_arn.clone())
        .unwrap_or_else(|| "*".into());
    let resource_account = a
        .resource_account
        .clone()
        .or(key_account)
        .or_else(|| {
            resource
                .split(':')
                .nth(4)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| principal.account.to_string());

    let mut ctx = Context::new();
    if kms {
        ctx.set("kms:CallerAccount", principal.account);
    }
    if let Some(v) = &a.via_service {
        let v = if v.contains('.') {
            v.clone()
        } else {
            format!("{v}.{}.amazonaws.com", a.region)
        };
        ctx.set("kms:ViaService", v);
    }
    let enc: Vec<(&str, &str)> = a
        .encryption_context
        .iter()
        .map(|s| pair(s))
        .collect::<anyhow::Result<_>>()?;
    if !enc.is_empty() {
        ctx.set_encryption_context(enc.iter().copied());
    }
    let mut multi: Vec<(String, Vec<String>)> = Vec::new();
    for s in &a.context {
        let (k, v) = pair(s)?;
        match multi.iter_mut().find(|(mk, _)| mk.eq_ignore_ascii_case(k)) {
            Some((_, vs)) => vs.push(v.to_string()),
            None => multi.push((k.to_string(), vec![v.to_string()])),
        }
    }
    for (k, vs) in &multi {
        if vs.len() == 1 {
            ctx.set(k, vs[0].clone());
        } else {
            ctx.set_multi(k, vs.iter().cloned());
        }
    }
    if ctx.get("aws:CurrentTime").is_none() {
        ctx.set_time(time::OffsetDateTime::now_utc().unix_timestamp());
    }
    let req = Request {
        principal,
        action: &a.action,
        resource: &resource,
        context: &ctx,
    };
    let inputs = Inputs {
        identity_policies: &identity_refs,
        resource_policy: resource_policy.as_ref(),
        resource_account: &resource_account,
        kind: if kms {
            ResourceKind::KmsKey
        } else {
            ResourceKind::Generic
        },
    };
    let ex = sluice_policy::explain(&req, &inputs);
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&ex)?)?;
    } else {
        writeln!(out, "{ex}")?;
    }
    Ok(if ex.outcome.is_allowed() { 0 } else { 1 })
}

/// Runs `sluice pattern ...`; returns the exit code.
pub fn pattern(cmd: &PatternCommand, out: &mut dyn std::io::Write) -> i32 {
    match cmd {
        PatternCommand::Test { pattern, event } => {
            sluice_pattern::cli::run_test(pattern, event, out)
        }
        PatternCommand::Match {
            rules,
            events,
            json,
        } => match sluice_pattern::cli::run_match(rules, events, *json, out) {
            Ok(code) => code,
            Err(e) => {
                let _ = writeln!(out, "error: {e}");
                2
            }
        },
    }
}
