//! Cross-cutting types shared by every sluice layer.
//!
//! Design constraints:
//! - No I/O and no async: this crate is depended on by services, the server and tests alike.
//! - [`AwsError`] is the one error every service returns to the wire layer. Its `code` is the
//!   AWS error shape name (the `__type` of the JSON 1.1 envelope) and its `status` the HTTP
//!   status AWS uses. Internal failures are turned into `InternalFailure` *without* their text
//!   (see [`AwsError::internal`]) so nothing private leaks to a client.
//! - Time comes from an injected [`Clock`] so that SigV4 skew, key deletion windows and retries
//!   are testable deterministically.

pub mod clock;
pub mod error;
pub mod principal;
pub mod service;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::AwsError;
pub use principal::{CallContext, Principal, PrincipalKind};
pub use service::{
    CredentialLookupError, CredentialSource, JsonService, QueryResponse, QueryService,
};
