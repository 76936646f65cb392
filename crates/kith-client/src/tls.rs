//! The push channel's transport: plain TCP for `http://` servers, rustls for `https://`, trusting
//! the web roots plus the profile's own CA certificate, if it has one. (HTTP requests go through
//! reqwest, configured the same way.)

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{ClientError, ClientResult, Refusal};

/// A connected byte stream, TLS or not.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type Stream = Box<dyn Io>;

/// Refuses text that holds no PEM certificate.
pub fn check_pem(pem: &str) -> ClientResult<()> {
    let certs =
        CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(
            |e| ClientError::refused(Refusal::BadServer, format!("the CA certificate: {e}")),
        )?;
    if certs.is_empty() {
        return Err(ClientError::refused(Refusal::BadServer, "no certificate in the CA file"));
    }
    Ok(())
}

/// Connects to the server of `base` (`http://` or `https://`).
pub async fn connect(base: &str, ca: Option<&str>) -> ClientResult<Stream> {
    let url = reqwest::Url::parse(base)
        .map_err(|e| ClientError::refused(Refusal::BadServer, e.to_string()))?;
    let host = url.host_str().ok_or_else(|| ClientError::refused(Refusal::BadServer, "no host"))?;
    let port = url.port_or_known_default().unwrap_or(443);
    let host_port = format!("{}:{port}", host.trim_start_matches('[').trim_end_matches(']'));
    let tcp = tokio::net::TcpStream::connect(&host_port)
        .await
        .map_err(|e| ClientError::Network(format!("cannot connect to {host_port}: {e}")))?;
    if url.scheme() != "https" {
        return Ok(Box::new(tcp));
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = ca {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| {
                ClientError::refused(Refusal::BadServer, format!("the CA certificate: {e}"))
            })?;
            roots.add(cert).map_err(|e| {
                ClientError::refused(Refusal::BadServer, format!("the CA certificate: {e}"))
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Network(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']').to_string())
        .map_err(|e| ClientError::refused(Refusal::BadServer, format!("server name: {e}")))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| ClientError::Network(format!("TLS with {host_port}: {e}")))?;
    Ok(Box::new(tls))
}
