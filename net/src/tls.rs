//! TLS between DM Servers: identities (certificate chain + key, PEM), trust anchors, the
//! rustls configurations (TLS 1.3 only, client certificates required), the identity a peer
//! certificate proves, and a test PKI generator.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS failure: bad PEM, unusable key, or a configuration rustls refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(pub String);

fn tls_err(what: &str) -> impl Fn(String) -> TlsError + '_ {
    move |e| TlsError(format!("{what}: {e}"))
}

/// This server's certificate chain and private key, in PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    /// Certificate chain, leaf first (PEM).
    pub cert_chain_pem: String,
    /// Private key (PEM, PKCS#8, SEC1 or PKCS#1).
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

impl Identity {
    fn chain(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let chain = CertificateDer::pem_slice_iter(self.cert_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError(format!("certificate chain: {e}")))?;
        if chain.is_empty() {
            return Err(TlsError(
                "certificate chain: no certificate in the PEM".into(),
            ));
        }
        Ok(chain)
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| TlsError(format!("private key: {e}")))
    }
}

/// Parses PEM trust anchors (CA certificates).
pub fn trust_anchors(pem: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| TlsError(format!("trust anchors: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| TlsError(format!("trust anchors: {e}")))?;
    }
    if roots.is_empty() {
        return Err(TlsError(
            "trust anchors: no CA certificate in the PEM".into(),
        ));
    }
    Ok(Arc::new(roots))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server side: TLS 1.3 only, a client certificate from `trust` required.
pub fn server_config(identity: &Identity, trust_pem: &str) -> Result<Arc<ServerConfig>, TlsError> {
    let roots = trust_anchors(trust_pem)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError(format!("client verifier: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err("server config")(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain()?, identity.key()?)
        .map_err(|e| tls_err("server certificate")(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Client side: TLS 1.3 only, this server's certificate presented, peers verified
/// against `trust`.
pub fn client_config(identity: &Identity, trust_pem: &str) -> Result<ClientConfig, TlsError> {
    let roots = trust_anchors(trust_pem)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_err("client config")(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(identity.chain()?, identity.key()?)
        .map_err(|e| tls_err("client certificate")(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client configuration that trusts no server: for clients that only speak plain HTTP
/// (reqwest needs a TLS backend even then, and this crate never relies on a process-wide
/// default crypto provider).
pub fn plain_http_client_config() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

/// The DNS names a (verified) certificate is issued for: its subjectAltName dNSName
/// entries. A peer proves the ServerID it was issued for.
pub fn certificate_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

/// A test PKI: one CA that issues server identities. For demos and tests only.
pub struct TestPki {
    ca_key: rcgen::KeyPair,
    ca_params: rcgen::CertificateParams,
    ca_pem: String,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki").finish_non_exhaustive()
    }
}

fn rcgen_err(e: rcgen::Error) -> TlsError {
    TlsError(format!("certificate generation: {e}"))
}

impl TestPki {
    /// A fresh CA named `name`.
    pub fn new(name: &str) -> Result<Self, TlsError> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(rcgen_err)?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().map_err(rcgen_err)?;
        let cert = params.self_signed(&key).map_err(rcgen_err)?;
        Ok(Self {
            ca_pem: cert.pem(),
            ca_key: key,
            ca_params: params,
        })
    }

    /// The CA certificate (PEM): what peers trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Issues an identity for `server_id` (a DNS SAN, the name peers check), also valid
    /// for the extra names or IP addresses in `also` (for example `127.0.0.1`). The
    /// certificate serves as both TLS server and TLS client certificate.
    pub fn issue(&self, server_id: &str, also: &[&str]) -> Result<Identity, TlsError> {
        let mut names = vec![server_id.to_string()];
        names.extend(also.iter().map(|s| s.to_string()));
        let mut params = rcgen::CertificateParams::new(names).map_err(rcgen_err)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, server_id);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().map_err(rcgen_err)?;
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).map_err(rcgen_err)?;
        Ok(Identity {
            cert_chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_name_their_server_and_build_configs() {
        let pki = TestPki::new("test CA").unwrap();
        let id = pki.issue("dms1.example", &["127.0.0.1"]).unwrap();
        let chain = id.chain().unwrap();
        assert_eq!(certificate_names(&chain[0]), vec!["dms1.example"]);
        server_config(&id, pki.ca_pem()).unwrap();
        client_config(&id, pki.ca_pem()).unwrap();
        assert!(format!("{id:?}").find("PRIVATE").is_none());
    }

    #[test]
    fn bad_pem_is_a_clear_error() {
        let id = Identity {
            cert_chain_pem: "nope".into(),
            key_pem: "nope".into(),
        };
        let e = server_config(&id, "nope").unwrap_err();
        assert!(e.0.contains("trust anchors"), "{e}");
    }
}
