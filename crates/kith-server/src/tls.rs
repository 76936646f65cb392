//! HTTPS and WSS: the same router behind rustls, when a certificate and key are configured.
//!
//! Plain HTTP (`run`) is for loopback and development; a public server runs this, or sits
//! behind a TLS-terminating proxy.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::ConnectInfo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::state::AppState;

/// A TLS handshake that has not finished by then is dropped (a slow client cannot hold a
/// connection open without speaking).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests get after shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);

/// Loads a PEM certificate chain and its private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot parse the certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read the private key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key do not fit: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `state` over TLS on `listener` until `shutdown` resolves.
pub async fn run_tls(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    tls: Arc<rustls::ServerConfig>,
) -> std::io::Result<()> {
    serve(listener, state, shutdown, Some(tls)).await
}

/// The accept loop for plain HTTP and TLS alike (`kith_listen`): connections capped in total
/// and per address (the oldest silent one makes room), a deadline for every request's headers
/// and for idleness, a loop that pauses rather than spins when accepting fails, and a graceful
/// drain on shutdown.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let header_timeout = state.config.header_read_timeout;
    let app = crate::app(state.clone());
    let sweeper = tokio::spawn(crate::retention::sweep_forever(state.clone()));
    let publisher = tokio::spawn(crate::kt::publish_forever(state.clone()));
    // What other nodes sharing the database did that concerns devices connected here.
    let follower = state
        .store
        .announcements()
        .map(|a| tokio::spawn(crate::push::follow_other_nodes(state.clone(), a)));
    let gate = state.gate.clone();
    let mut listener = kith_listen::Acceptor::new(listener, "kithd");
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let Some(permit) = gate.admit(peer.ip()) else {
            state.metrics.connections_refused.inc();
            continue; // dropped: closed at once
        };
        // Small answers and pushes go out at once rather than waiting to be coalesced.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone().layer(Extension(ConnectInfo::<SocketAddr>(peer)));
        let stop = state.shutdown_signal();
        connections.spawn(async move {
            match acceptor {
                None => kith_listen::serve_connection(tcp, app, permit, stop, header_timeout).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                    // A connection evicted while still shaking hands closes at once.
                    let shaken = tokio::select! {
                        done = handshake => done,
                        _ = permit.closing() => return,
                    };
                    if let Ok(Ok(stream)) = shaken {
                        kith_listen::serve_connection(stream, app, permit, stop, header_timeout)
                            .await;
                    }
                }
            }
        });
    }
    tracing::info!("shutting down: closing connections");
    state.begin_shutdown();
    let _ = tokio::time::timeout(DRAIN, async { while connections.join_next().await.is_some() {} })
        .await;
    sweeper.abort();
    publisher.abort();
    state.kt.step_down(state.now()).await;
    if let Some(f) = follower {
        f.abort();
    }
    Ok(())
}
