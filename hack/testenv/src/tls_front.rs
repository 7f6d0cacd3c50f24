//! HTTPS in front of a plain-HTTP server on loopback, as an Ingress terminates TLS in front
//! of roster's portal: a fresh CA, a certificate for 127.0.0.1 signed by it, and a task
//! that forwards every connection once its handshake is done. Relying parties that insist
//! on https (kube-apiserver's JWT authenticator) reach roster's issuer through it.

use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, Result, io};

/// A running TLS front; dropping it stops forwarding.
pub struct TlsFront {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The CA that signed its certificate (PEM), for clients to trust.
    pub ca_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl TlsFront {
    /// Listens on a free loopback port and forwards to `target` (call within a Tokio
    /// runtime that outlives the front).
    pub async fn start(target: SocketAddr) -> Result<Self> {
        let (ca_pem, cert_pem, key_pem) = certificates()?;
        let chain = vec![
            CertificateDer::from_pem_slice(cert_pem.as_bytes())
                .map_err(|e| Error::Setup(format!("the front's certificate: {e}")))?,
        ];
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| Error::Setup(format!("the front's key: {e}")))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
            .map_err(|e| Error::Setup(format!("the front's TLS settings: {e}")))?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(io("binding the TLS front"))?;
        let port = listener.local_addr().map_err(io("reading the TLS front's port"))?.port();
        let task = tokio::spawn(async move {
            while let Ok((incoming, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(incoming).await else { return };
                    let Ok(mut plain) = TcpStream::connect(target).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        Ok(Self { url: format!("https://127.0.0.1:{port}"), ca_pem, task })
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A CA, and a serving certificate and key for 127.0.0.1 signed by it (PEM).
fn certificates() -> Result<(String, String, String)> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, "roster-testenv-front-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let mut serving = CertificateParams::new(vec!["localhost".to_owned()])?;
    serving.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
    serving.distinguished_name.push(DnType::CommonName, "roster-issuer");
    let key = KeyPair::generate()?;
    let cert = serving.signed_by(&key, &ca)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}
