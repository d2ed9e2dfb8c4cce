//! What guards every port of one server: connection admission, the TLS identity and the viewer
//! tokens. Built once from the configuration and handed to each transport, so a peer meets one
//! per-address cap, one certificate and one token list whichever port it dials.

use crate::admission::Admission;
use crate::auth::{TokenFileError, Tokens};
use crate::config::Config;
use crate::tls::{ServerTls, TlsError};

/// ALPN protocols the rustls config offers: h2 for gRPC, http/1.1 for the HTTP port (which
/// narrows it to http/1.1 for itself).
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The protections of one server. Cloning shares the admission state: clones count a peer's
/// connections together.
#[derive(Debug, Clone, Default)]
pub struct Protection {
    /// Per-address connection cap, handshake and idle timeouts.
    pub admission: Admission,
    /// TLS on every port, with this identity.
    pub tls: Option<ServerTls>,
    /// Viewer tokens required on every call and route except health.
    pub tokens: Option<Tokens>,
}

/// A TLS file or the token file that cannot be used: a configuration error.
#[derive(Debug, thiserror::Error)]
pub enum ProtectionError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Tokens(#[from] TokenFileError),
}

impl Protection {
    /// Reads and checks the TLS files and the token file the config names.
    pub fn load(config: &Config) -> Result<Protection, ProtectionError> {
        let tls = match &config.tls {
            Some(files) => Some(ServerTls::load(files, &ALPN)?),
            None => None,
        };
        let tokens = match &config.token_file {
            Some(path) => Some(Tokens::from_file(path)?),
            None => None,
        };
        Ok(Protection {
            admission: Admission::new(config.conn.clone()),
            tls,
            tokens,
        })
    }
}
