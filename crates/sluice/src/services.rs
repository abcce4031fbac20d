//! The services a server hosts, built over the shared store, clock, root key and audit trail.
//!
//! To add a service: construct it in [`Services::build`] (after the services it calls) and
//! register it with [`Services::json`] / [`Services::query`] / [`Services::credentials`]. The
//! server routes each request to the service registered under the signing name of its
//! credential scope.

use std::collections::HashMap;
use std::sync::Arc;

use sluice_audit::AuditLog;
use sluice_core::{Clock, CredentialSource, JsonService, QueryService};
use sluice_crypto::RootKey;
use sluice_kms::{Kms, KmsConfig};
use sluice_store::Store;

use crate::config::Config;

/// Everything services are built from.
#[derive(Debug, Clone)]
pub struct Deps {
    /// The configuration.
    pub cfg: Config,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The root key.
    pub root: Arc<RootKey>,
    /// The audit trail.
    pub audit: AuditLog,
}

/// The hosted services.
#[derive(Debug, Default)]
pub struct Services {
    /// JSON 1.1 services by signing name.
    pub json: HashMap<&'static str, Arc<dyn JsonService>>,
    /// awsQuery services by signing name.
    pub query: HashMap<&'static str, Arc<dyn QueryService>>,
    /// Credential sources besides the root key pair, consulted in order.
    pub credentials: Vec<Arc<dyn CredentialSource>>,
    /// The KMS service (other services and the maintenance loop use it directly).
    pub kms: Option<Arc<Kms>>,
    /// Secrets Manager (other services use its managed-secret API and `SecretCache`).
    pub secrets: Option<Arc<sluice_secrets::Secrets>>,
    /// IAM and STS (identity policies, credentials, `assume_role_for_service`).
    pub iam: Option<Arc<sluice_iam::Iam>>,
    /// EventBridge (the server starts its delivery workers; `sluice dlq` and metrics use it).
    pub events: Option<sluice_events::Events>,
    /// Firehose (the server starts its delivery workers; metrics use it).
    pub firehose: Option<sluice_firehose::Firehose>,
}

impl Services {
    /// Builds every service.
    pub fn build(d: &Deps) -> anyhow::Result<Self> {
        let mut s = Services::default();

        // IAM first: KMS (and later services) read identity policies from it.
        let iam = Arc::new(
            sluice_iam::Iam::open_blocking(
                d.store.clone(),
                d.root.clone(),
                d.clock.clone(),
                d.audit.clone(),
                sluice_iam::IamConfig {
                    account: d.cfg.account_id.clone(),
                    region: d.cfg.region.clone(),
                },
            )
            .map_err(|e| anyhow::anyhow!("cannot load IAM: {}", e.code))?,
        );
        s.add_query(Arc::new(sluice_iam::IamService(iam.clone())));
        s.add_query(Arc::new(sluice_iam::StsService(iam.clone())));
        s.credentials.push(iam.clone());
        s.iam = Some(iam.clone());

        let kms = Arc::new(Kms::new(
            d.store.clone(),
            d.root.clone(),
            d.clock.clone(),
            d.audit.clone(),
            crate::authz::authorizer(iam),
            KmsConfig {
                account: d.cfg.account_id.clone(),
                region: d.cfg.region.clone(),
            },
        ));
        s.add_json(kms.clone());
        s.kms = Some(kms.clone());

        let secrets = Arc::new(sluice_secrets::Secrets::new(
            d.store.clone(),
            kms,
            d.clock.clone(),
            d.audit.clone(),
            s.iam
                .clone()
                .ok_or_else(|| anyhow::anyhow!("Secrets Manager needs IAM"))?,
            sluice_secrets::SecretsConfig {
                account: d.cfg.account_id.clone(),
                region: d.cfg.region.clone(),
            },
        ));
        s.add_json(secrets.clone());
        s.secrets = Some(secrets);

        // `allow_aws_sources` comes from `sluice serve --allow-aws-sources` (off by default).
        let mut events_cfg =
            sluice_events::EventsConfig::new(&d.cfg.account_id, &d.cfg.region).with_env();
        events_cfg.allow_aws_sources = d.cfg.allow_aws_sources;
        // The server holds the data directory's LOCK: its dispatcher is the queue's only one.
        events_cfg.sole_dispatcher = true;
        let events = sluice_events::Events::open_blocking(
            d.store.clone(),
            d.clock.clone(),
            d.audit.clone(),
            s.iam
                .clone()
                .ok_or_else(|| anyhow::anyhow!("EventBridge needs IAM"))?,
            events_cfg,
        )
        .map_err(|e| anyhow::anyhow!("cannot load EventBridge: {}", e.code))?;
        // Connections keep their credentials in Secrets Manager; API destinations send through
        // the outbound client, which enforces the operator's destination policy.
        if let (Some(secrets), Some(kms), Some(iam)) = (&s.secrets, &s.kms, &s.iam) {
            events.enable_api_destinations(sluice_events::ApiDestinationDeps {
                secrets: secrets.clone(),
                kms: kms.clone(),
                iam: iam.clone(),
                outbound: sluice_outbound::Outbound::new(d.cfg.outbound),
            });
        }
        s.add_json(Arc::new(events.clone()));

        // Firehose after EventBridge: rules can target delivery streams.
        let firehose = crate::firehose::build(d, &s)?;
        events.add_target_kind(Arc::new(firehose.target()));
        s.add_json(Arc::new(firehose.clone()));
        s.firehose = Some(firehose);
        s.events = Some(events);

        s.add_json(Arc::new(crate::authz::CloudTrail::new(
            d.audit.clone(),
            d.clock.clone(),
            s.iam
                .clone()
                .ok_or_else(|| anyhow::anyhow!("CloudTrail needs IAM"))?,
        )));
        Ok(s)
    }

    /// Registers a JSON 1.1 service.
    pub fn add_json(&mut self, svc: Arc<dyn JsonService>) {
        self.json.insert(svc.signing_name(), svc);
    }

    /// Registers an awsQuery service.
    pub fn add_query(&mut self, svc: Arc<dyn QueryService>) {
        self.query.insert(svc.signing_name(), svc);
    }

    /// The signing names the server accepts.
    pub fn signing_names(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self.json.keys().chain(self.query.keys()).copied().collect();
        v.sort_unstable();
        v
    }
}
