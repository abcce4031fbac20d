//! Stored formats of the Firehose service (all JSON values carry `"v": 1`; chunks are binary).
//!
//! | namespace | key | value |
//! |---|---|---|
//! | `firehose.streams` | stream name | [`StreamRecord`] (JSON) |
//! | `firehose.records` | stream uid (16 bytes) ++ sequence (u64 BE) | a [chunk](encode_chunk): the records of one PutRecord / PutRecordBatch call (or one EventBridge delivery) |
//! | `firehose.batches` | stream uid (16 bytes) | [`BatchState`] (JSON): the batch being retried, if a delivery attempt failed |
//!
//! The stream uid is random per stream *incarnation*, so a stream deleted and created again
//! under the same name never sees the old one's records. Sequences grow within a process and
//! start, at load, above both every stored sequence and the current time in microseconds, so they
//! grow across restarts too; record ids are derived from them.
//!
//! The destination configuration is stored as the API gave it (`HttpEndpointDestinationConfiguration`
//! or `ExtendedS3DestinationConfiguration`, UpdateDestination's fields merged in), except
//! `EndpointConfiguration.AccessKey`, which is removed from the JSON and kept only sealed under the
//! root key ([`StreamRecord::access_key_sealed`], label [`ACCESS_KEY_LABEL`] ++ stream ARN).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Stream records.
pub const NS_STREAMS: &str = "firehose.streams";
/// Buffered record chunks.
pub const NS_RECORDS: &str = "firehose.records";
/// Batches under retry.
pub const NS_BATCHES: &str = "firehose.batches";
/// The seal label prefix of access keys.
pub const ACCESS_KEY_LABEL: &str = "firehose.access-key:";

/// A delivery stream as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamRecord {
    /// Format version (1).
    pub v: u32,
    /// Name.
    pub name: String,
    /// ARN.
    pub arn: String,
    /// Random id of this incarnation (32 hex digits).
    pub uid: String,
    /// `CREATING`, `ACTIVE` or `CREATING_FAILED`.
    pub status: String,
    /// Why creation failed (`CREATING_FAILED`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// `DirectPut`.
    pub stream_type: String,
    /// Version id (starts at 1, +1 per UpdateDestination).
    pub version: u64,
    /// Creation time, Unix ms.
    pub created_ms: i64,
    /// Last update, Unix ms.
    pub updated_ms: i64,
    /// Tags in key order.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The destination.
    pub destination: Destination,
    /// The access key, sealed under the root key (base64), if one was configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_sealed: Option<String>,
    /// `DeliveryStreamEncryptionConfigurationInput` as given (reported, not applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Value>,
}

/// The destination kinds served.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", content = "config")]
pub enum Destination {
    /// `HttpEndpointDestinationConfiguration` (without the access key).
    Http(Value),
    /// `ExtendedS3DestinationConfiguration`.
    S3(Value),
}

impl StreamRecord {
    /// The 16 uid bytes that prefix this stream's keys.
    pub fn uid_bytes(&self) -> [u8; 16] {
        uid_bytes(&self.uid)
    }

    /// The tag that overrides the secret cache TTL for this stream, in seconds.
    pub fn secret_cache_ttl(&self) -> Option<u64> {
        self.tags
            .get(SECRET_TTL_TAG)
            .and_then(|v| v.trim().parse().ok())
    }
}

/// The stream tag whose value (seconds) overrides the server's secret cache TTL for one stream.
pub const SECRET_TTL_TAG: &str = "sluice:secret-cache-ttl-seconds";

/// Parses a hex uid; zeros if malformed.
pub fn uid_bytes(uid: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    if let Ok(b) = hex::decode(uid)
        && b.len() == 16
    {
        out.copy_from_slice(&b);
    }
    out
}

/// `uid ++ seq`.
pub fn record_key(uid: &[u8; 16], seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(24);
    k.extend_from_slice(uid);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The sequence of a record key.
pub fn key_seq(key: &[u8]) -> u64 {
    key.get(16..24)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// Chunk format version byte.
const CHUNK_V1: u8 = 1;

/// Encodes records into a chunk: `0x01 | arrival ms (i64 BE) | count (u32 BE) | (len (u32 BE) |
/// bytes)*`.
pub fn encode_chunk<'a>(arrival_ms: i64, records: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut b = ChunkBuilder::with_capacity(1024);
    for r in records {
        b.push(r);
    }
    b.finish(arrival_ms)
}

/// Builds a chunk (the format of [`encode_chunk`]) record by record. [`ChunkBuilder::push_with`]
/// lets a decoder write a record's bytes in place (PutRecordBatch decodes base64 straight into
/// the chunk); the arrival time is set by [`ChunkBuilder::finish`], when the chunk is committed.
#[derive(Debug, Clone)]
pub struct ChunkBuilder {
    buf: Vec<u8>,
    count: u32,
}

/// Bytes of a chunk's header (version, arrival ms, count).
const CHUNK_HEADER: usize = 13;

impl ChunkBuilder {
    /// An empty chunk with room for `bytes` bytes in total (header and length prefixes
    /// included) before it reallocates.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes.max(CHUNK_HEADER));
        buf.push(CHUNK_V1);
        buf.extend_from_slice(&[0; CHUNK_HEADER - 1]);
        Self { buf, count: 0 }
    }

    /// Appends a record.
    pub fn push(&mut self, record: &[u8]) {
        self.buf
            .extend_from_slice(&(record.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(record);
        self.count += 1;
    }

    /// Appends a record of exactly `len` bytes that `fill` writes into the slice it is given
    /// (zeroed). If `fill` fails, the chunk is left as it was and the error returned.
    pub fn push_with<E>(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = self.buf.len();
        self.buf.extend_from_slice(&(len as u32).to_be_bytes());
        self.buf.resize(start + 4 + len, 0);
        match fill(&mut self.buf[start + 4..]) {
            Ok(()) => {
                self.count += 1;
                Ok(())
            }
            Err(e) => {
                self.buf.truncate(start);
                Err(e)
            }
        }
    }

    /// Records so far.
    pub fn records(&self) -> u32 {
        self.count
    }

    /// Bytes of record data so far (without the framing).
    pub fn data_bytes(&self) -> u64 {
        (self.buf.len() - CHUNK_HEADER - 4 * self.count as usize) as u64
    }

    /// The encoded chunk, with its arrival time.
    pub fn finish(mut self, arrival_ms: i64) -> Vec<u8> {
        self.buf[1..9].copy_from_slice(&arrival_ms.to_be_bytes());
        self.buf[9..13].copy_from_slice(&self.count.to_be_bytes());
        self.buf
    }
}

/// A decoded chunk (borrowing the stored bytes).
#[derive(Debug, Clone)]
pub struct Chunk<'a> {
    /// When its records arrived, Unix ms.
    pub arrival_ms: i64,
    /// The records.
    pub records: Vec<&'a [u8]>,
}

/// Decodes a chunk; `None` if malformed.
pub fn decode_chunk(b: &[u8]) -> Option<Chunk<'_>> {
    if b.len() < 13 || b[0] != CHUNK_V1 {
        return None;
    }
    let arrival_ms = i64::from_be_bytes(b[1..9].try_into().ok()?);
    let n = u32::from_be_bytes(b[9..13].try_into().ok()?) as usize;
    let mut records = Vec::with_capacity(n);
    let mut p = 13;
    for _ in 0..n {
        let len = u32::from_be_bytes(b.get(p..p + 4)?.try_into().ok()?) as usize;
        p += 4;
        records.push(b.get(p..p + len)?);
        p += len;
    }
    (p == b.len()).then_some(Chunk {
        arrival_ms,
        records,
    })
}

/// The arrival time and record count of a chunk without decoding it.
pub fn chunk_header(b: &[u8]) -> Option<(i64, u32)> {
    if b.len() < 13 || b[0] != CHUNK_V1 {
        return None;
    }
    Some((
        i64::from_be_bytes(b[1..9].try_into().ok()?),
        u32::from_be_bytes(b[9..13].try_into().ok()?),
    ))
}

/// A batch whose delivery failed at least once (kept so that the request id and the retry
/// clock survive a restart).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchState {
    /// Format version (1).
    pub v: u32,
    /// The request id, the same on every attempt.
    pub request_id: String,
    /// The sequences of the chunks in the batch.
    pub seqs: Vec<u64>,
    /// Attempts made.
    pub attempts: u32,
    /// Consecutive failures (for the backoff).
    pub failures: u32,
    /// When the first attempt failed, Unix ms.
    pub first_failure_ms: i64,
    /// When to try next, Unix ms.
    pub next_attempt_ms: i64,
    /// The last error code.
    pub last_code: String,
    /// The last error message.
    pub last_message: String,
    /// The endpoint gave up on the batch (retry duration spent or a permanent failure): only
    /// the backup write is left (and the endpoint is tried again while the backup fails).
    #[serde(default)]
    pub gave_up: bool,
    /// Delivered, but the AllData backup copy is not written yet.
    #[serde(default)]
    pub delivered: bool,
}

/// The typed view of an HTTP endpoint destination configuration, read at each attempt.
#[derive(Debug, Clone, Default)]
pub struct HttpSettings {
    /// Endpoint URL.
    pub url: String,
    /// Endpoint name.
    pub name: Option<String>,
    /// Buffer size, bytes.
    pub buffer_bytes: u64,
    /// Buffer interval, ms.
    pub interval_ms: i64,
    /// GZIP content encoding.
    pub gzip: bool,
    /// Common attributes.
    pub common_attributes: Vec<(String, String)>,
    /// Destination role.
    pub role_arn: Option<String>,
    /// Retry duration, seconds.
    pub retry_s: u32,
    /// `AllData` (else `FailedDataOnly`).
    pub all_data: bool,
    /// The backup bucket's settings.
    pub s3: S3Settings,
    /// Secrets Manager: (secret ARN, role ARN) when enabled.
    pub secret: Option<(String, Option<String>)>,
}

/// The typed view of an S3 configuration.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// Role ARN.
    pub role_arn: String,
    /// Bucket name (from the bucket ARN).
    pub bucket: String,
    /// Prefix.
    pub prefix: String,
    /// Error output prefix.
    pub error_output_prefix: Option<String>,
    /// GZIP compression.
    pub gzip: bool,
    /// Buffer size, bytes.
    pub buffer_bytes: u64,
    /// Buffer interval, ms.
    pub interval_ms: i64,
}

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

fn n(v: &Value, path: &[&str]) -> Option<i64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_i64()
}

/// The bucket name of `arn:aws:s3:::<bucket>`.
pub fn bucket_of(arn: &str) -> Option<&str> {
    arn.strip_prefix("arn:aws:s3:::")
        .or_else(|| arn.split_once(":s3:::").map(|(_, b)| b))
        .filter(|b| !b.is_empty() && !b.contains('/'))
}

const MIB: u64 = 1024 * 1024;

/// Reads an S3 configuration (`S3Configuration` / `ExtendedS3DestinationConfiguration`).
pub fn s3_settings(v: &Value) -> S3Settings {
    S3Settings {
        role_arn: s(v, "RoleARN").unwrap_or_default(),
        bucket: s(v, "BucketARN")
            .as_deref()
            .and_then(bucket_of)
            .unwrap_or_default()
            .to_string(),
        prefix: s(v, "Prefix").unwrap_or_default(),
        error_output_prefix: s(v, "ErrorOutputPrefix"),
        gzip: v.get("CompressionFormat").and_then(Value::as_str) == Some("GZIP"),
        buffer_bytes: n(v, &["BufferingHints", "SizeInMBs"]).unwrap_or(5) as u64 * MIB,
        interval_ms: n(v, &["BufferingHints", "IntervalInSeconds"]).unwrap_or(300) * 1000,
    }
}

/// Reads an HTTP endpoint configuration.
pub fn http_settings(v: &Value) -> HttpSettings {
    let ep = &v["EndpointConfiguration"];
    let rc = &v["RequestConfiguration"];
    let secret = match v.get("SecretsManagerConfiguration") {
        Some(sm) if sm.get("Enabled").and_then(Value::as_bool) == Some(true) => {
            s(sm, "SecretARN").map(|a| (a, s(sm, "RoleARN")))
        }
        _ => None,
    };
    HttpSettings {
        url: s(ep, "Url").unwrap_or_default(),
        name: s(ep, "Name"),
        buffer_bytes: n(v, &["BufferingHints", "SizeInMBs"]).unwrap_or(5) as u64 * MIB,
        interval_ms: n(v, &["BufferingHints", "IntervalInSeconds"]).unwrap_or(300) * 1000,
        gzip: rc.get("ContentEncoding").and_then(Value::as_str) == Some("GZIP"),
        common_attributes: rc
            .get("CommonAttributes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| Some((s(x, "AttributeName")?, s(x, "AttributeValue")?)))
                    .collect()
            })
            .unwrap_or_default(),
        role_arn: s(v, "RoleARN"),
        retry_s: n(v, &["RetryOptions", "DurationInSeconds"]).unwrap_or(300) as u32,
        all_data: v.get("S3BackupMode").and_then(Value::as_str) == Some("AllData"),
        s3: s3_settings(&v["S3Configuration"]),
        secret,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip() {
        let recs: Vec<&[u8]> = vec![b"a", b"", b"hello"];
        let c = encode_chunk(42, recs.clone());
        let d = decode_chunk(&c).unwrap();
        assert_eq!(d.arrival_ms, 42);
        assert_eq!(d.records, recs);
        assert_eq!(chunk_header(&c), Some((42, 3)));
        assert!(decode_chunk(&c[..c.len() - 1]).is_none());
        assert!(decode_chunk(b"\x02").is_none());
    }

    #[test]
    fn chunk_builder_writes_records_in_place() {
        let mut b = ChunkBuilder::with_capacity(0);
        b.push(b"a");
        b.push_with(3, |out: &mut [u8]| {
            out.copy_from_slice(b"xyz");
            Ok::<(), ()>(())
        })
        .unwrap();
        // A failed fill leaves no trace.
        assert!(b.push_with(5, |_| Err(())).is_err());
        assert_eq!((b.records(), b.data_bytes()), (2, 4));
        let recs: Vec<&[u8]> = vec![b"a", b"xyz"];
        assert_eq!(b.finish(7), encode_chunk(7, recs));
    }

    #[test]
    fn keys_order_by_sequence() {
        let uid = [7u8; 16];
        let a = record_key(&uid, 5);
        let b = record_key(&uid, 300);
        assert!(a < b);
        assert_eq!(key_seq(&b), 300);
    }

    #[test]
    fn settings_have_aws_defaults() {
        let v = serde_json::json!({
            "EndpointConfiguration": {"Url": "https://x"},
            "S3Configuration": {"RoleARN": "r", "BucketARN": "arn:aws:s3:::b"},
            "SecretsManagerConfiguration": {"Enabled": true, "SecretARN": "arn:s"}
        });
        let h = http_settings(&v);
        assert_eq!(h.buffer_bytes, 5 * MIB);
        assert_eq!(h.interval_ms, 300_000);
        assert_eq!(h.retry_s, 300);
        assert!(!h.all_data);
        assert_eq!(h.s3.bucket, "b");
        assert_eq!(h.secret, Some(("arn:s".into(), None)));
        assert_eq!(bucket_of("arn:aws:s3:::b/x"), None);
    }
}
