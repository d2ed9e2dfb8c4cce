//! TLS for both ends, with rustls (ring) as the only crypto stack.
//!
//! - Server: a certificate chain and key from PEM files, optionally a client CA bundle that
//!   every viewer's certificate must chain to (mutual TLS). The files are checked at start-up
//!   so a wrong path or a key that does not match fails with a clear message, not at the first
//!   handshake.
//! - `camcast gen-cert`: a self-signed server certificate (or a client certificate for mutual
//!   TLS) so the appliance has TLS on first boot with nothing to buy or configure.
//! - Client (`camcast-view`): trust a given CA file or the system bundle, optionally present a
//!   client certificate, or (spelled out, with a warning) skip verification.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// Where the server's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, viewers must present a certificate that chains to one of these.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path}: {message}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{0}")]
    Config(String),
}

/// The server's identity (and client CA), checked once and built into a rustls config that
/// every port uses.
#[derive(Clone)]
pub struct ServerTls {
    /// Viewers must present a certificate that chains to the client CA bundle.
    pub mutual: bool,
    pub rustls: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads and checks the files; `alpn` lists the protocols the rustls config offers.
    pub fn load(files: &ServerTlsFiles, alpn: &[&[u8]]) -> Result<ServerTls, TlsError> {
        let cert_pem = read("certificate", &files.cert)?;
        let key_pem = read("private key", &files.key)?;
        let client_ca_pem = match &files.client_ca {
            Some(p) => Some(read("client CA bundle", p)?),
            None => None,
        };
        let certs = certs_from_pem("certificate", &files.cert, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
            what: "private key",
            path: files.key.clone(),
            message: format!("no usable PEM private key ({e})"),
        })?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match (&files.client_ca, &client_ca_pem) {
            (Some(path), Some(pem)) => {
                let roots = root_store("client CA bundle", path, pem)?;
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                )
                .build()
                .map_err(|e| {
                    TlsError::Config(format!("client CA bundle {}: {e}", path.display()))
                })?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            TlsError::Config(format!(
                "certificate {} and key {} do not make an identity: {e}",
                files.cert.display(),
                files.key.display()
            ))
        })?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(ServerTls {
            mutual: client_ca_pem.is_some(),
            rustls: Arc::new(config),
        })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn certs_from_pem(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            path: path.to_owned(),
            message: format!("bad PEM ({e})"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            path: path.to_owned(),
            message: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

fn root_store(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs_from_pem(what, path, pem)? {
        roots.add(cert).map_err(|e| TlsError::Pem {
            what,
            path: path.to_owned(),
            message: format!("certificate not usable as a trust anchor ({e})"),
        })?;
    }
    Ok(roots)
}

/// What `camcast gen-cert` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    /// A server certificate for the names given (TLS server auth).
    Server,
    /// A viewer certificate for mutual TLS (TLS client auth); its PEM goes into the server's
    /// client CA bundle.
    Client,
}

/// Writes `cert.pem` and `key.pem` (mode 0600) into `dir`, refusing to overwrite unless `force`.
/// Returns the certificate's SHA-256 fingerprint, for comparing out of band.
pub fn generate(
    dir: &Path,
    kind: CertKind,
    names: &[String],
    force: bool,
) -> Result<String, TlsError> {
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    for p in [&cert_path, &key_path] {
        if p.exists() && !force {
            return Err(TlsError::Config(format!(
                "{} exists; pass --force to replace it",
                p.display()
            )));
        }
    }
    let (cert_pem, key_pem, der) = make_cert(kind, names)?;
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Read {
        what: "directory",
        path: dir.to_owned(),
        source,
    })?;
    write_private(&key_path, key_pem.as_bytes())?;
    write_private(&cert_path, cert_pem.as_bytes())?;
    Ok(fingerprint(&der))
}

fn make_cert(kind: CertKind, names: &[String]) -> Result<(String, String, Vec<u8>), TlsError> {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
    let err = |e: rcgen::Error| TlsError::Config(format!("cannot make certificate: {e}"));
    let mut params = CertificateParams::new(names.to_vec()).map_err(err)?;
    let first = names.first().map_or("camcast", String::as_str);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("camcast {first}"));
    params.extended_key_usages = vec![match kind {
        CertKind::Server => ExtendedKeyUsagePurpose::ServerAuth,
        CertKind::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.self_signed(&key).map_err(err)?;
    Ok((cert.pem(), key.serialize_pem(), cert.der().to_vec()))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| TlsError::Read {
        what: "output file",
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)
}

/// SHA-256 of a DER certificate as colon-separated hex, the form browsers and openssl show.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Default names for a server certificate: this host as itself and under mDNS, plus loopback.
pub fn default_server_names() -> Vec<String> {
    let host = hostname();
    let mut names = vec![host.clone()];
    if !host.ends_with(".local") && host != "localhost" {
        names.push(format!("{host}.local"));
    }
    names.extend(["localhost".into(), "127.0.0.1".into(), "::1".into()]);
    names.dedup();
    names
}

fn hostname() -> String {
    crate::host::name()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// How a viewer checks the server, and what it presents.
#[derive(Debug, Clone, Default)]
pub struct ClientTlsOptions {
    /// Trust anchors; `None` means the system bundle.
    pub ca: Option<PathBuf>,
    /// Accept any server certificate (still encrypted, but open to a man in the middle).
    pub insecure_skip_verify: bool,
    /// Client certificate and key for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Name to verify the server's certificate against, when dialling an address that is not
    /// in it (e.g. an IP address from DHCP).
    pub server_name: Option<String>,
}

/// Debian's (and most distributions') bundle of public CAs.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl ClientTlsOptions {
    /// Builds the rustls client config (ALPN h2, as gRPC requires).
    pub fn rustls_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = if self.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider())))
        } else {
            let path = self
                .ca
                .clone()
                .unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
            let pem = read("CA file", &path)?;
            builder.with_root_certificates(root_store("CA file", &path, &pem)?)
        };
        let mut config = match &self.identity {
            Some((cert, key)) => {
                let cert_pem = read("client certificate", cert)?;
                let certs = certs_from_pem("client certificate", cert, &cert_pem)?;
                let key_pem = read("client key", key)?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
                    what: "client key",
                    path: key.clone(),
                    message: format!("no usable PEM private key ({e})"),
                })?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| TlsError::Config(format!("client certificate: {e}")))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }

    /// The name the certificate must carry: the override, else the host dialled.
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let name = name.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(name.to_string())
            .map_err(|e| TlsError::Config(format!("`{name}` is not a usable TLS server name: {e}")))
    }
}

/// `--insecure-skip-verify`: any certificate is accepted, but the handshake signatures are
/// still checked, so the session is at least bound to the key the server showed.
#[derive(Debug)]
struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["cam.local".into(), "127.0.0.1".into()]
    }

    #[test]
    fn generated_server_cert_loads_and_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let fp = generate(dir.path(), CertKind::Server, &names(), false).unwrap();
        assert_eq!(fp.len(), 32 * 3 - 1);
        let files = ServerTlsFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            client_ca: None,
        };
        ServerTls::load(&files, &[b"h2"]).unwrap();
        let again = generate(dir.path(), CertKind::Server, &names(), false).unwrap_err();
        assert!(again.to_string().contains("--force"), "{again}");
        let replaced = generate(dir.path(), CertKind::Server, &names(), true).unwrap();
        assert_ne!(fp, replaced);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&files.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "key must not be group/world readable");
    }

    #[test]
    fn mismatched_or_missing_files_are_explained() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        generate(a.path(), CertKind::Server, &names(), false).unwrap();
        generate(b.path(), CertKind::Server, &names(), false).unwrap();
        let crossed = ServerTlsFiles {
            cert: a.path().join("cert.pem"),
            key: b.path().join("key.pem"),
            client_ca: None,
        };
        let e = ServerTls::load(&crossed, &[]).unwrap_err().to_string();
        assert!(e.contains("do not make an identity"), "{e}");
        let missing = ServerTlsFiles {
            cert: a.path().join("nope.pem"),
            ..crossed.clone()
        };
        let e = ServerTls::load(&missing, &[]).unwrap_err().to_string();
        assert!(
            e.contains("cannot read certificate") && e.contains("nope.pem"),
            "{e}"
        );
        let not_pem = ServerTlsFiles {
            cert: a.path().join("key.pem"),
            ..crossed
        };
        let e = ServerTls::load(&not_pem, &[]).unwrap_err().to_string();
        assert!(e.contains("no CERTIFICATE"), "{e}");
    }

    #[test]
    fn client_options_need_a_readable_ca_unless_skipping() {
        let opts = ClientTlsOptions {
            ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let e = opts.rustls_config().unwrap_err().to_string();
        assert!(e.contains("cannot read CA file"), "{e}");
        let skip = ClientTlsOptions {
            insecure_skip_verify: true,
            ..opts
        };
        assert_eq!(skip.rustls_config().unwrap().alpn_protocols, vec![b"h2"]);
        assert!(skip.server_name("[::1]").is_ok());
        assert!(skip.server_name("bad name!").is_err());
    }
}
