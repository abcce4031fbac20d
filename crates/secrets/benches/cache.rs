//! In-process secret reads: a SecretCache hit (no KMS call, no store read) against an uncached
//! GetSecretValue through the Rust API (authorization, store read, one KMS Decrypt, two audit
//! records committed durably).

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use sluice_audit::AuditLog;
use sluice_core::{CallContext, Clock, Principal, SystemClock};
use sluice_crypto::RootKey;
use sluice_kms::{Kms, KmsConfig, NoIdentityPolicies, PolicyAuthorizer};
use sluice_secrets::{NewValue, SecretCache, Secrets, SecretsConfig};
use sluice_store::Store;
use sluice_store::sqlite::SqliteStore;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("db"), Default::default()).unwrap());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let audit = AuditLog::new(store.clone(), clock.clone(), "111122223333");
    let kms = Arc::new(Kms::new(
        store.clone(),
        Arc::new(RootKey::from_bytes(&[3; 32])),
        clock.clone(),
        audit.clone(),
        Arc::new(PolicyAuthorizer::new(Arc::new(NoIdentityPolicies))),
        KmsConfig {
            account: "111122223333".into(),
            region: "us-east-1".into(),
        },
    ));
    let sm = Arc::new(Secrets::new(
        store,
        kms,
        clock,
        audit,
        Arc::new(NoIdentityPolicies),
        SecretsConfig {
            account: "111122223333".into(),
            region: "us-east-1".into(),
        },
    ));
    let ctx = CallContext::direct(Principal::root("111122223333", None), "us-east-1", "bench");
    let svc = CallContext::direct(
        Principal::service("111122223333", "firehose.amazonaws.com"),
        "us-east-1",
        "bench",
    );
    let arn = rt.block_on(async {
        sm.create_managed_secret(
            &svc,
            "firehose",
            "bench/api-key",
            NewValue::String("{\"api_key\":\"0123456789abcdef\"}"),
            None,
        )
        .await
        .unwrap()
        .arn
    });
    let cache = SecretCache::new(sm.clone());
    rt.block_on(cache.get(&ctx, &arn)).unwrap();

    let mut g = c.benchmark_group("secrets");
    g.bench_function("cache_hit", |b| {
        b.iter(|| rt.block_on(cache.get(&ctx, &arn)).unwrap())
    });
    g.sample_size(30);
    g.bench_function("get_secret_value_uncached", |b| {
        b.iter(|| {
            rt.block_on(sm.get_secret_value(&ctx, &arn, None, None))
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
