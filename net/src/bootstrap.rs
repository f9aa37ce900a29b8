//! A Bootstrap Server over HTTPS (DMBOOT 1.3 client-initiated bootstrap, as Methods 3/4
//! use it): the device sends `GET <path>?device=<device id>` over TLS 1.3 (server
//! authentication only: devices have no certificates) and gets back the bootstrap
//! message, a TNDS object (`application/vnd.syncml.dmtnds+xml`) setting the DMAcc of the
//! server registered with [`SimBootstrapServer::register`] for that URL.
//!
//! The URL a bootstrap is registered under is [`BootstrapServer::url`]:
//! `https://<host>:<port><path>`, where `<host>` is a DNS name of the server certificate.
//! Devices must resolve that name to the listening address; [`BootstrapServer::resolve`]
//! gives the pair for [`DeviceOptions::resolve`](crate::device::DeviceOptions::resolve).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use dmdelegate::sim::SimBootstrapServer;
use dmdelegate::tree::TNDS_MEDIA_TYPE;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::tls::{certificate_names, Identity, TlsError};

/// TLS handshake timeout of the Bootstrap Server.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Server side for a Bootstrap Server: TLS 1.3 only, ring, ALPN `http/1.1`, and **no**
/// client authentication (devices have no certificates).
pub fn server_config_no_client_auth(identity: &Identity) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(identity.cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError(
            "certificate chain: no certificate in the PEM".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
        .map_err(|e| TlsError(format!("private key: {e}")))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError(format!("server config: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsError(format!("server certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[derive(Clone)]
struct App {
    sim: Arc<SimBootstrapServer>,
    base: String,
}

#[derive(Deserialize)]
struct DeviceQuery {
    device: Option<String>,
}

/// A running Bootstrap Server on loopback; dropping it (or [`BootstrapServer::shutdown`])
/// stops accepting connections.
#[derive(Debug)]
pub struct BootstrapServer {
    local_addr: SocketAddr,
    host: String,
    stop: watch::Sender<bool>,
}

impl BootstrapServer {
    /// Binds `127.0.0.1:0` and serves `sim` over HTTPS with `identity`. The host name of
    /// the URLs is the first DNS name of `identity`'s certificate.
    pub async fn start(
        sim: Arc<SimBootstrapServer>,
        identity: &Identity,
    ) -> Result<BootstrapServer, TlsError> {
        let host = CertificateDer::pem_slice_iter(identity.cert_chain_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .and_then(|c| certificate_names(&c).into_iter().next())
            .ok_or_else(|| TlsError("the certificate carries no DNS name".into()))?;
        Self::start_as(sim, identity, &host).await
    }

    /// Like [`BootstrapServer::start`], with the URLs' host name given (it must be a name
    /// of the certificate for devices to accept it).
    pub async fn start_as(
        sim: Arc<SimBootstrapServer>,
        identity: &Identity,
        host: &str,
    ) -> Result<BootstrapServer, TlsError> {
        Self::start_on(sim, identity, host, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// As [`BootstrapServer::start_as`], listening on `listen`.
    pub async fn start_on(
        sim: Arc<SimBootstrapServer>,
        identity: &Identity,
        host: &str,
        listen: SocketAddr,
    ) -> Result<BootstrapServer, TlsError> {
        let tls = TlsAcceptor::from(server_config_no_client_auth(identity)?);
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| TlsError(format!("listener: {e}")))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| TlsError(format!("listener: {e}")))?;
        let base = format!("https://{host}:{}", local_addr.port());
        let router = Router::new()
            .fallback(get(serve_bootstrap))
            .with_state(App { sim, base });
        let stop = crate::https::spawn_tls_server(
            listener,
            tls,
            HANDSHAKE_TIMEOUT,
            "bootstrap",
            move |_| router.clone(),
        );
        Ok(BootstrapServer {
            local_addr,
            host: host.to_string(),
            stop,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The host name of its URLs.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The URL of `path` (which starts with `/`): `https://<host>:<port><path>`. Register
    /// bootstraps with [`SimBootstrapServer::register`] under exactly this URL.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}:{}{path}", self.host, self.local_addr.port())
    }

    /// The `(host name, address)` pair devices need to reach it.
    pub fn resolve(&self) -> (String, SocketAddr) {
        (self.host.clone(), self.local_addr)
    }

    /// Stops accepting connections.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for BootstrapServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn serve_bootstrap(
    State(app): State<App>,
    uri: Uri,
    Query(query): Query<DeviceQuery>,
) -> Response {
    let Some(device) = query.device.filter(|d| !d.is_empty()) else {
        return (StatusCode::BAD_REQUEST, "missing ?device=<device id>").into_response();
    };
    let url = format!("{}{}", app.base, uri.path());
    match app.sim.bootstrap(&url, &device) {
        Ok(tree) => {
            tracing::info!(%url, %device, "bootstrap served");
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, TNDS_MEDIA_TYPE)],
                tree.to_xml(),
            )
                .into_response()
        }
        Err(e) => {
            tracing::info!(%url, %device, error = %e.message, "no bootstrap");
            let code = StatusCode::from_u16(e.status)
                .ok()
                .filter(|c| c.is_client_error() || c.is_server_error())
                .unwrap_or(StatusCode::NOT_FOUND);
            (code, e.message).into_response()
        }
    }
}
