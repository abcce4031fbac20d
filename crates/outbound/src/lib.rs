//! Outbound HTTP for sluice's delivery workers (EventBridge API destinations, Firehose HTTP
//! endpoints): which destinations an operator allows, and one client that enforces it.
//!
//! # The destination policy
//!
//! A destination is an `http` or `https` URL. What else is allowed is the operator's choice
//! ([`OutboundPolicy`]):
//!
//! | address class | examples | allowed when |
//! |---|---|---|
//! | public | everything not below | always (https; http only with `allow_http`) |
//! | loopback | 127.0.0.0/8, ::1, `localhost` | `allow_loopback` |
//! | private | 10/8, 172.16/12, 192.168/16, 100.64/10 (CGNAT), fc00::/7 | `allow_private` |
//! | link-local | 169.254/16 (cloud metadata at 169.254.169.254), fe80::/10 | **never** |
//! | unspecified, multicast, broadcast, documentation, reserved | 0.0.0.0, ::, 224/4, 255.255.255.255 | **never** |
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are judged as the IPv4 address they carry.
//!
//! The check runs twice: on the URL when a resource is created or updated (so the API can refuse
//! it with a clear message), and on **every address the name resolves to, at connect time**,
//! through the client's DNS resolver, so a name that later resolves to a forbidden address (DNS
//! rebinding) is refused too. A host written as an IP literal is checked before sending.
//!
//! # The client
//!
//! [`Outbound::send`] sends one request with: no redirects followed (a 3xx is an answer, not a
//! hop), one deadline over connect, request and the whole response body, and the response body
//! read to at most a given number of bytes (the rest is discarded and the response marked
//! truncated). Errors are classified ([`SendErrorKind`]) so that callers can name them the way
//! AWS does (timeout, connection failed, connection reset, refused by policy). Error texts never
//! contain request headers or bodies: callers put credentials there.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

pub use reqwest;
pub use url::Url;

/// Which destinations outbound requests may reach. See the crate docs for the classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundPolicy {
    /// Plain `http://` URLs (AWS accepts only https).
    pub allow_http: bool,
    /// Loopback addresses and `localhost`.
    pub allow_loopback: bool,
    /// Private (RFC 1918, CGNAT, unique-local IPv6) addresses.
    pub allow_private: bool,
}

impl Default for OutboundPolicy {
    /// The default of a local `sluice serve`: http and loopback allowed (a developer's receiver
    /// on 127.0.0.1), private networks refused, link-local always refused.
    fn default() -> Self {
        Self {
            allow_http: true,
            allow_loopback: true,
            allow_private: false,
        }
    }
}

/// What the policy thinks of one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// A public address.
    Public,
    /// Loopback.
    Loopback,
    /// A private network.
    Private,
    /// Link-local (including the cloud metadata address): always refused.
    LinkLocal,
    /// Unspecified, multicast, broadcast, documentation or reserved: always refused.
    Special,
}

/// Classifies `ip`.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return classify_v4(v4);
            }
            let seg0 = v6.segments()[0];
            if v6.is_loopback() {
                AddressClass::Loopback
            } else if v6.is_unspecified() || v6.is_multicast() {
                AddressClass::Special
            } else if seg0 & 0xffc0 == 0xfe80 {
                AddressClass::LinkLocal
            } else if seg0 & 0xfe00 == 0xfc00 {
                AddressClass::Private
            } else if seg0 == 0x2001 && v6.segments()[1] == 0x0db8 {
                AddressClass::Special
            } else {
                AddressClass::Public
            }
        }
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let o = ip.octets();
    if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if ip.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
        AddressClass::Private
    } else if ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || o[0] == 0
        || o[0] >= 240
    {
        AddressClass::Special
    } else {
        AddressClass::Public
    }
}

/// Why a destination was refused or a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// The class of failure.
    pub kind: SendErrorKind,
    /// A message naming the destination host and the reason, never headers or bodies.
    pub message: String,
}

/// Classes of outbound failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendErrorKind {
    /// The URL is malformed or its scheme is not http(s).
    InvalidUrl,
    /// The destination policy refuses the URL or an address it resolves to.
    Refused,
    /// The deadline passed before the response was read.
    Timeout,
    /// The connection could not be made (DNS failure, refused, TLS handshake).
    ConnectionFailed,
    /// The connection broke during the exchange.
    ConnectionReset,
}

impl SendError {
    fn new(kind: SendErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl OutboundPolicy {
    /// Whether an address of class `c` may be reached.
    pub fn allows(&self, c: AddressClass) -> bool {
        match c {
            AddressClass::Public => true,
            AddressClass::Loopback => self.allow_loopback,
            AddressClass::Private => self.allow_private,
            AddressClass::LinkLocal | AddressClass::Special => false,
        }
    }

    fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), SendError> {
        let c = classify(ip);
        if self.allows(c) {
            return Ok(());
        }
        let why = match c {
            AddressClass::Loopback => {
                "loopback destinations are not allowed by this server's outbound policy \
                 (outbound_allow_loopback)"
            }
            AddressClass::Private => {
                "private-network destinations are not allowed by this server's outbound policy \
                 (outbound_allow_private)"
            }
            AddressClass::LinkLocal => {
                "link-local destinations (such as 169.254.169.254) are never allowed"
            }
            _ => "unspecified, multicast, broadcast and reserved addresses are never allowed",
        };
        Err(SendError::new(
            SendErrorKind::Refused,
            if host == ip.to_string() {
                format!("destination {ip} refused: {why}")
            } else {
                format!("destination {host} ({ip}) refused: {why}")
            },
        ))
    }

    /// Checks a destination URL without resolving its name: scheme, host present, no user
    /// info, IP literals against the address classes, `localhost` as loopback. Names are
    /// checked again on every connection (see the crate docs).
    pub fn check_url(&self, url: &str) -> Result<Url, SendError> {
        let u = Url::parse(url)
            .map_err(|e| SendError::new(SendErrorKind::InvalidUrl, format!("invalid URL: {e}")))?;
        self.check_parsed(&u)?;
        Ok(u)
    }

    /// [`OutboundPolicy::check_url`] of a URL already parsed.
    pub fn check_parsed(&self, u: &Url) -> Result<(), SendError> {
        match u.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err(SendError::new(
                    SendErrorKind::Refused,
                    "plain http destinations are not allowed by this server's outbound policy \
                     (outbound_allow_http); use https",
                ));
            }
            s => {
                return Err(SendError::new(
                    SendErrorKind::InvalidUrl,
                    format!("unsupported URL scheme {s:?}: use https"),
                ));
            }
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err(SendError::new(
                SendErrorKind::InvalidUrl,
                "URLs with user information are not allowed; use a connection's credentials",
            ));
        }
        match u.host() {
            None => {
                return Err(SendError::new(SendErrorKind::InvalidUrl, "URL has no host"));
            }
            Some(url::Host::Ipv4(ip)) => self.check_ip(&ip.to_string(), IpAddr::V4(ip))?,
            Some(url::Host::Ipv6(ip)) => self.check_ip(&ip.to_string(), IpAddr::V6(ip))?,
            Some(url::Host::Domain(d)) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                if (d == "localhost" || d.ends_with(".localhost")) && !self.allow_loopback {
                    self.check_ip(&d, IpAddr::V4(Ipv4Addr::LOCALHOST))?;
                }
            }
        }
        Ok(())
    }
}

/// A DNS resolver that refuses names resolving to addresses the policy forbids.
#[derive(Debug)]
struct PolicyResolver {
    policy: OutboundPolicy,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let lookup = host.clone();
            let addrs: Vec<SocketAddr> =
                tokio::task::spawn_blocking(move || (lookup.as_str(), 0).to_socket_addrs())
                    .await
                    .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?
                    .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?
                    .collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no addresses").into());
            }
            for a in &addrs {
                policy
                    .check_ip(&host, a.ip())
                    .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?;
            }
            let it: Addrs = Box::new(addrs.into_iter());
            Ok(it)
        })
    }
}

/// A response read within the limits of [`Outbound::send`].
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body, at most the requested number of bytes.
    pub body: Bytes,
    /// Whether the body was longer than the limit (the rest was discarded).
    pub truncated: bool,
}

/// The outbound client: a policy and a connection pool.
#[derive(Debug, Clone)]
pub struct Outbound {
    policy: OutboundPolicy,
    client: reqwest::Client,
}

impl Outbound {
    /// A client enforcing `policy`.
    pub fn new(policy: OutboundPolicy) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(PolicyResolver { policy }))
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .expect("the outbound client's configuration is valid");
        Self { policy, client }
    }

    /// The policy enforced.
    pub fn policy(&self) -> &OutboundPolicy {
        &self.policy
    }

    /// The underlying client, to build requests with ([`reqwest::Client::request`]); send them
    /// with [`Outbound::send`] so that the policy and the limits apply.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends `req`, waiting at most `timeout` for the whole exchange, and reads at most
    /// `max_body` bytes of the response body.
    pub async fn send(
        &self,
        req: reqwest::Request,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Response, SendError> {
        let host = req.url().host_str().unwrap_or("").to_string();
        self.policy.check_parsed(req.url())?;
        let exchange = async {
            let mut resp = self
                .client
                .execute(req)
                .await
                .map_err(|e| classify_reqwest(&host, &e))?;
            let status = resp.status().as_u16();
            let headers = std::mem::take(resp.headers_mut());
            let mut body = BytesMut::new();
            let mut truncated = false;
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| classify_reqwest(&host, &e))?
            {
                let room = max_body.saturating_sub(body.len());
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Response {
                status,
                headers,
                body: body.freeze(),
                truncated,
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(SendError::new(
                SendErrorKind::Timeout,
                format!(
                    "no complete response from {host} within {} ms",
                    timeout.as_millis()
                ),
            )),
        }
    }
}

/// Maps a reqwest error to a kind and a message naming only the host.
fn classify_reqwest(host: &str, e: &reqwest::Error) -> SendError {
    // A policy refusal travels as the resolver's error inside the connect error.
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(p) = s.downcast_ref::<SendError>() {
            return p.clone();
        }
        src = s.source();
    }
    if e.is_timeout() {
        SendError::new(
            SendErrorKind::Timeout,
            format!("request to {host} timed out"),
        )
    } else if e.is_connect() {
        SendError::new(
            SendErrorKind::ConnectionFailed,
            format!("cannot connect to {host}: {}", root_cause(e)),
        )
    } else if e.is_builder() {
        SendError::new(
            SendErrorKind::InvalidUrl,
            format!("invalid request to {host}"),
        )
    } else {
        SendError::new(
            SendErrorKind::ConnectionReset,
            format!(
                "connection to {host} failed during the exchange: {}",
                root_cause(e)
            ),
        )
    }
}

/// The innermost error's text (I/O errors: "connection refused" ...). reqwest's own outer texts
/// include the URL, which may carry secret query parameters, so only the root cause is used.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    let t = cur.to_string();
    if t.contains("://") {
        "transport error".to_string()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> AddressClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn address_classes() {
        assert_eq!(c("127.0.0.1"), AddressClass::Loopback);
        assert_eq!(c("127.9.9.9"), AddressClass::Loopback);
        assert_eq!(c("::1"), AddressClass::Loopback);
        assert_eq!(c("::ffff:127.0.0.1"), AddressClass::Loopback);
        assert_eq!(c("169.254.169.254"), AddressClass::LinkLocal);
        assert_eq!(c("::ffff:169.254.169.254"), AddressClass::LinkLocal);
        assert_eq!(c("fe80::1"), AddressClass::LinkLocal);
        assert_eq!(c("10.1.2.3"), AddressClass::Private);
        assert_eq!(c("172.16.0.1"), AddressClass::Private);
        assert_eq!(c("172.32.0.1"), AddressClass::Public);
        assert_eq!(c("192.168.1.1"), AddressClass::Private);
        assert_eq!(c("100.64.0.1"), AddressClass::Private);
        assert_eq!(c("fd00::1"), AddressClass::Private);
        assert_eq!(c("0.0.0.0"), AddressClass::Special);
        assert_eq!(c("::"), AddressClass::Special);
        assert_eq!(c("224.0.0.1"), AddressClass::Special);
        assert_eq!(c("255.255.255.255"), AddressClass::Special);
        assert_eq!(c("8.8.8.8"), AddressClass::Public);
        assert_eq!(c("2606:4700::1111"), AddressClass::Public);
    }

    #[test]
    fn url_checks() {
        let p = OutboundPolicy::default();
        assert!(p.check_url("http://127.0.0.1:9000/x").is_ok());
        assert!(p.check_url("https://example.com/x").is_ok());
        assert!(p.check_url("http://localhost:1/").is_ok());
        let e = p
            .check_url("http://169.254.169.254/latest/meta-data")
            .unwrap_err();
        assert_eq!(e.kind, SendErrorKind::Refused);
        assert!(e.message.contains("169.254.169.254"), "{}", e.message);
        assert_eq!(
            p.check_url("http://[fe80::1]/").unwrap_err().kind,
            SendErrorKind::Refused
        );
        assert_eq!(
            p.check_url("http://10.0.0.1/").unwrap_err().kind,
            SendErrorKind::Refused
        );
        assert_eq!(
            p.check_url("ftp://example.com/").unwrap_err().kind,
            SendErrorKind::InvalidUrl
        );
        assert_eq!(
            p.check_url("https://u:p@example.com/").unwrap_err().kind,
            SendErrorKind::InvalidUrl
        );
        assert_eq!(
            p.check_url("not a url").unwrap_err().kind,
            SendErrorKind::InvalidUrl
        );

        let strict = OutboundPolicy {
            allow_http: false,
            allow_loopback: false,
            allow_private: false,
        };
        assert_eq!(
            strict.check_url("http://example.com/").unwrap_err().kind,
            SendErrorKind::Refused
        );
        assert_eq!(
            strict.check_url("https://127.0.0.1/").unwrap_err().kind,
            SendErrorKind::Refused
        );
        assert_eq!(
            strict.check_url("https://localhost/").unwrap_err().kind,
            SendErrorKind::Refused
        );
        let private = OutboundPolicy {
            allow_private: true,
            ..OutboundPolicy::default()
        };
        assert!(private.check_url("http://192.168.0.10/").is_ok());
        assert!(private.check_url("http://169.254.169.254/").is_err());
    }

    async fn one_shot_server(reply: &'static [u8]) -> SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply).await;
                let _ = s.shutdown().await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn redirects_are_answers_and_bodies_are_capped() {
        let out = Outbound::new(OutboundPolicy::default());
        let addr = one_shot_server(
            b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        let req = out.client().get(format!("http://{addr}/")).build().unwrap();
        let r = out.send(req, Duration::from_secs(5), 10).await.unwrap();
        assert_eq!(r.status, 302);

        let addr =
            one_shot_server(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n01234567890123456789")
                .await;
        let req = out.client().get(format!("http://{addr}/")).build().unwrap();
        let r = out.send(req, Duration::from_secs(5), 10).await.unwrap();
        assert_eq!(&r.body[..], b"0123456789");
        assert!(r.truncated);
    }

    #[tokio::test]
    async fn refusals_timeouts_and_connect_failures_are_classified() {
        let strict = Outbound::new(OutboundPolicy {
            allow_loopback: false,
            ..OutboundPolicy::default()
        });
        let req = strict.client().get("http://127.0.0.1:9/").build().unwrap();
        let e = strict
            .send(req, Duration::from_secs(5), 10)
            .await
            .unwrap_err();
        assert_eq!(e.kind, SendErrorKind::Refused);
        // A name that resolves to loopback is refused at connect time.
        let req = strict.client().get("http://localhost.:9/").build().unwrap();
        let e = strict
            .send(req, Duration::from_secs(5), 10)
            .await
            .unwrap_err();
        assert_eq!(e.kind, SendErrorKind::Refused, "{e}");

        let out = Outbound::new(OutboundPolicy::default());
        // A listener that never answers.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let req = out
            .client()
            .post(format!("http://{addr}/?api_key=SECRET"))
            .body("x")
            .build()
            .unwrap();
        let e = out
            .send(req, Duration::from_millis(200), 10)
            .await
            .unwrap_err();
        assert_eq!(e.kind, SendErrorKind::Timeout);
        assert!(!e.message.contains("SECRET"));

        // Nothing listens on a port just released.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let req = out
            .client()
            .post(format!("http://127.0.0.1:{port}/?api_key=SECRET"))
            .build()
            .unwrap();
        let e = out.send(req, Duration::from_secs(5), 10).await.unwrap_err();
        assert_eq!(e.kind, SendErrorKind::ConnectionFailed, "{e}");
        assert!(!e.message.contains("SECRET"), "{}", e.message);
    }
}
