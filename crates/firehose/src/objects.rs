//! Object storage for backups and ExtendedS3 deliveries, through the `object_store` crate.
//!
//! - [`ObjectsConfig::Local`] (the default): a directory under the data directory; a bucket
//!   named in a destination is a folder there, created on the first write (until sluice serves
//!   the S3 API itself). Writes are atomic (a temporary file renamed into place).
//! - [`ObjectsConfig::S3`]: any S3-compatible service (endpoint, region, credentials from the
//!   server configuration); the bucket must exist there.
//!
//! Authorization (the stream role's `s3:PutObject`) is checked by the caller before
//! [`Objects::put`]; this module only writes. Error texts name the bucket and key, never
//! credentials.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload};
use parking_lot::Mutex;
use zeroize::Zeroizing;

/// Where objects go.
#[derive(Clone)]
pub enum ObjectsConfig {
    /// A local directory; bucket = sub-folder.
    Local(PathBuf),
    /// An S3-compatible service.
    S3 {
        /// Endpoint URL (`None`: AWS's for the region).
        endpoint: Option<String>,
        /// Region.
        region: String,
        /// Access key id (`None`: the environment's / instance's credentials).
        access_key_id: Option<String>,
        /// Secret access key.
        secret_access_key: Option<Zeroizing<String>>,
        /// Allow a plain-http endpoint.
        allow_http: bool,
    },
}

impl std::fmt::Debug for ObjectsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(p) => f.debug_tuple("Local").field(p).finish(),
            Self::S3 {
                endpoint, region, ..
            } => f
                .debug_struct("S3")
                .field("endpoint", endpoint)
                .field("region", region)
                .finish_non_exhaustive(),
        }
    }
}

/// The object writer: one `ObjectStore` per bucket.
#[derive(Debug)]
pub struct Objects {
    cfg: ObjectsConfig,
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

/// Whether a bucket name is acceptable (S3's rules, loosely: no path tricks on disk).
pub fn valid_bucket(b: &str) -> bool {
    (1..=255).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-' || c == b'_')
        && b != "."
        && b != ".."
}

impl Objects {
    /// A writer for `cfg`.
    pub fn new(cfg: ObjectsConfig) -> Self {
        Self {
            cfg,
            stores: Mutex::new(HashMap::new()),
        }
    }

    fn store_for(&self, bucket: &str) -> Result<Arc<dyn ObjectStore>, String> {
        if !valid_bucket(bucket) {
            return Err(format!("invalid bucket name {bucket:?}"));
        }
        if let Some(s) = self.stores.lock().get(bucket) {
            return Ok(s.clone());
        }
        let store: Arc<dyn ObjectStore> =
            match &self.cfg {
                ObjectsConfig::Local(root) => {
                    let dir = root.join(bucket);
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| format!("cannot create the folder of bucket {bucket}: {e}"))?;
                    Arc::new(
                        object_store::local::LocalFileSystem::new_with_prefix(&dir)
                            .map_err(|e| format!("bucket {bucket}: {e}"))?,
                    )
                }
                ObjectsConfig::S3 {
                    endpoint,
                    region,
                    access_key_id,
                    secret_access_key,
                    allow_http,
                } => {
                    let mut b = object_store::aws::AmazonS3Builder::new()
                        .with_bucket_name(bucket)
                        .with_region(region)
                        .with_allow_http(*allow_http);
                    if let Some(e) = endpoint {
                        b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
                    }
                    if let (Some(id), Some(secret)) = (access_key_id, secret_access_key) {
                        b = b
                            .with_access_key_id(id)
                            .with_secret_access_key(secret.as_str());
                    }
                    Arc::new(b.build().map_err(|_| {
                        format!("cannot configure the S3 client for bucket {bucket}")
                    })?)
                }
            };
        self.stores.lock().insert(bucket.to_string(), store.clone());
        Ok(store)
    }

    /// Writes `bytes` as `bucket/key`.
    pub async fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> Result<(), String> {
        let store = self.store_for(bucket)?;
        if key.split('/').any(|p| p == ".." || p == ".") || key.is_empty() {
            return Err(format!("invalid object key {key:?}"));
        }
        let path = ObjectPath::parse(key).map_err(|_| format!("invalid object key {key:?}"))?;
        store
            .put(&path, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| format!("writing s3://{bucket}/{key} failed: {}", short(&e)))
    }
}

fn short(e: &object_store::Error) -> String {
    // object_store's texts name the path and the cause; they carry no credentials.
    let s = e.to_string();
    s.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_buckets_are_folders_created_on_first_write() {
        let tmp = tempfile::tempdir().unwrap();
        let o = Objects::new(ObjectsConfig::Local(tmp.path().to_path_buf()));
        o.put("my-bucket", "a/b/c.txt", b"hi".to_vec())
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(tmp.path().join("my-bucket/a/b/c.txt")).unwrap(),
            b"hi"
        );
        assert!(o.put("../x", "k", vec![]).await.is_err());
        assert!(o.put("b", "../k", vec![]).await.is_err());
    }
}
