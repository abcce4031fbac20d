//! Builds the Firehose service from the server configuration (secret cache TTL, object
//! storage, outbound policy, `SLUICE_FIREHOSE_*` environment overrides).

use crate::services::{Deps, Services};

/// Builds Firehose over the services it calls (IAM, Secrets Manager).
pub fn build(d: &Deps, s: &Services) -> anyhow::Result<sluice_firehose::Firehose> {
    let (Some(iam), Some(secrets)) = (s.iam.clone(), s.secrets.clone()) else {
        anyhow::bail!("Firehose needs IAM and Secrets Manager");
    };
    let mut cfg = sluice_firehose::FirehoseConfig::new(
        &d.cfg.account_id,
        &d.cfg.region,
        d.cfg.data_dir.join("objects"),
    )
    .with_env();
    cfg.secret_cache_ttl = d.cfg.secret_cache_ttl;
    cfg.outbound = d.cfg.outbound;
    if let Some(x) = d.cfg.firehose_backoff_scale {
        cfg.backoff_scale = x;
    }
    if let Some(o) = &d.cfg.objects {
        cfg.objects = o.clone();
    }
    sluice_firehose::Firehose::open_blocking(
        sluice_firehose::Deps {
            store: d.store.clone(),
            clock: d.clock.clone(),
            audit: d.audit.clone(),
            iam,
            secrets,
            root: d.root.clone(),
        },
        cfg,
    )
    .map_err(|e| anyhow::anyhow!("cannot load Firehose: {}", e.code))
}
