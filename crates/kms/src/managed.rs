//! AWS managed keys (`alias/aws/<service>`), created on first use by the service they serve.
//!
//! An AWS managed key is an ordinary key record with `key_manager = "AWS"` and the policy the
//! owning service supplies (for Secrets Manager: AWS's default `aws/secretsmanager` policy).
//! Creation is atomic and race-free: the key record and its alias commit in one batch that
//! expects the alias to be absent; a writer that loses the race reads the winner's alias.
//! Stored format: the same `kms.keys` / `kms.aliases` records as customer keys (see [`crate::model`]).

use serde_json::json;
use sluice_audit::{AuditEvent, AuditResource};
use sluice_core::{AwsError, CallContext, Principal};
use sluice_store::{Batch, StoreError};

use crate::model::{AliasRecord, NS_ALIASES, NS_KEYS};
use crate::{EVENT_SOURCE, Kms, internal};

impl Kms {
    /// Returns the key ARN of the AWS managed key behind `alias` (`alias/aws/<service>`),
    /// creating the key with `policy` if the alias does not exist yet. Idempotent; concurrent
    /// callers all get the same key.
    pub async fn ensure_aws_managed_key(
        &self,
        alias: &str,
        policy: &str,
    ) -> Result<String, AwsError> {
        if !alias.starts_with("alias/aws/") {
            return Err(AwsError::validation(
                "AWS managed key aliases start with alias/aws/.",
            ));
        }
        for _ in 0..8 {
            if let Some(v) = self
                .store
                .get(NS_ALIASES, alias.as_bytes())
                .await
                .map_err(internal)?
            {
                let a: AliasRecord = serde_json::from_slice(&v.value).map_err(internal)?;
                return Ok(self.key_arn(&a.target_key_id));
            }
            let service = alias.trim_start_matches("alias/aws/");
            let record = crate::ops::new_key_record(
                self,
                &format!(
                    "Default key that protects my {service} data when no other key is defined"
                ),
                policy.to_string(),
                Vec::new(),
                "AWS",
            );
            let now = self.clock.now_millis();
            let alias_rec = AliasRecord {
                name: alias.to_string(),
                target_key_id: record.key_id.clone(),
                created_ms: now,
                updated_ms: now,
            };
            // The creation is audited as CloudTrail records it: a CreateKey event by the service.
            let svc = CallContext::direct(
                Principal::service(&self.cfg.account, &format!("{service}.amazonaws.com")),
                &self.cfg.region,
                &uuid::Uuid::new_v4().to_string(),
            );
            let audit = self.audit.record_for(
                &svc,
                AuditEvent {
                    event_source: EVENT_SOURCE,
                    event_name: "CreateKey",
                    request_parameters: json!({"aliasName": alias, "keyManager": "AWS"}),
                    resources: vec![AuditResource {
                        arn: record.arn.clone(),
                        kind: "AWS::KMS::Key".into(),
                    }],
                    read_only: false,
                },
                Ok(json!({"keyMetadata": {"keyId": record.key_id, "arn": record.arn}})),
            );
            let batch = Batch::new()
                .expect(NS_ALIASES, alias.as_bytes(), None)
                .expect(NS_KEYS, record.key_id.as_bytes(), None)
                .put(
                    NS_KEYS,
                    record.key_id.as_bytes(),
                    serde_json::to_vec(&record).map_err(internal)?,
                )
                .put(
                    NS_ALIASES,
                    alias.as_bytes(),
                    serde_json::to_vec(&alias_rec).map_err(internal)?,
                );
            let batch = self.audit.append_to(batch, &audit);
            match self.store.apply(batch).await {
                Ok(_) => return Ok(record.arn),
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(internal(e)),
            }
        }
        Err(internal("could not create the AWS managed key"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sluice_audit::AuditLog;
    use sluice_core::{Clock, SystemClock};
    use sluice_crypto::RootKey;
    use sluice_store::sqlite::SqliteStore;

    use super::*;
    use crate::{DefaultAuthorizer, KmsConfig};

    #[tokio::test]
    async fn created_once_and_shared_by_concurrent_callers() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn sluice_store::Store> =
            Arc::new(SqliteStore::open(&dir.path().join("db"), Default::default()).unwrap());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let kms = Arc::new(Kms::new(
            store.clone(),
            Arc::new(RootKey::from_bytes(&[7; 32])),
            clock.clone(),
            AuditLog::new(store, clock, "111122223333"),
            Arc::new(DefaultAuthorizer),
            KmsConfig {
                account: "111122223333".into(),
                region: "us-east-1".into(),
            },
        ));
        let policy = r#"{"Version":"2012-10-17","Statement":[]}"#;
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let k = kms.clone();
            tasks.push(tokio::spawn(async move {
                k.ensure_aws_managed_key("alias/aws/secretsmanager", policy)
                    .await
                    .unwrap()
            }));
        }
        let mut arns = Vec::new();
        for t in tasks {
            arns.push(t.await.unwrap());
        }
        arns.dedup();
        assert_eq!(arns.len(), 1, "{arns:?}");
        let key = kms
            .load_key(arns[0].rsplit('/').next().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(key.record.key_manager, "AWS");
        assert_eq!(key.record.policy, policy);
        assert!(
            kms.ensure_aws_managed_key("alias/mine", policy)
                .await
                .is_err()
        );
    }
}
