//! The Kith app: the web interface `kith app` serves from the person's own profile.
//!
//! The keys never leave the machine: this process holds the profile (as the CLI does), keeps
//! the push connection to `kithd`, and serves a page to the browser on the loopback
//! interface only. The page is a client of *this* process, never of `kithd`.
//!
//! Map:
//! - this file: [`AppOptions`], [`serve`]: binding, the security gate every request passes;
//! - `api`: the JSON calls the page makes, each one SDK call;
//! - `live`: the push loop (kithd → this process) and the WebSocket to the page;
//! - `assets`: the built page (`assets/`, made from `web/` with Vite), embedded in the binary.
//!
//! Security (docs/app.md): a request is served only if its `Host` is exactly the loopback
//! address served (DNS rebinding), it carries the session cookie (HttpOnly, SameSite=Strict),
//! got by presenting the secret printed with the address, and — for anything that changes
//! state and for the live channel — its `Origin` is that same address. Every answer carries a
//! strict Content-Security-Policy.

mod api;
mod assets;
mod live;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kith_client::Client;
use tokio::sync::{Mutex, Notify, broadcast};

/// How `kith app` was asked to run.
#[derive(Clone, Debug)]
pub struct AppOptions {
    /// The profile folder.
    pub profile: PathBuf,
    /// The loopback port; 0 picks a free one.
    pub port: u16,
}

/// A running app: its address (with the secret) and the task serving it.
pub struct Running {
    pub addr: SocketAddr,
    /// The address to open: it hands the secret over once, for a cookie.
    pub url: String,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub(crate) struct App {
    pub client: Mutex<Client>,
    /// Events for the pages (JSON text), from the push loop and from the page's own actions.
    pub events: broadcast::Sender<String>,
    /// The last connection status sent, for a page that connects later.
    pub status: std::sync::Mutex<String>,
    /// Woken when the profile gets an account (the push loop waits for one).
    pub registered: Notify,
    secret: String,
    sessions: std::sync::Mutex<HashSet<String>>,
    host: String,
    origin: String,
    cookie: String,
    csp: String,
}

/// The name a process holding the profile is shown as, to another `kith` command.
pub const HOLDER: &str = "the Kith app (`kith app`); use the app, or stop it first";

/// Opens the profile, binds 127.0.0.1 and starts serving. The profile stays held (see
/// [`HOLDER`]) until the task ends.
pub async fn serve(options: AppOptions) -> anyhow::Result<Running> {
    let client = Client::open_as(&options.profile, HOLDER, true)?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port)).await?;
    let addr = listener.local_addr()?;
    let secret = random_hex(32)?;
    let host = format!("127.0.0.1:{}", addr.port());
    let origin = format!("http://{host}");
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         font-src 'self'; connect-src 'self' ws://{host}; manifest-src 'self'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    );
    let (events, _) = broadcast::channel(1024);
    let app = Arc::new(App {
        client: Mutex::new(client),
        events,
        status: std::sync::Mutex::new(
            serde_json::json!({ "type": "status", "online": false, "error": null }).to_string(),
        ),
        registered: Notify::new(),
        secret: secret.clone(),
        sessions: std::sync::Mutex::default(),
        // Cookies are not kept apart by port: two apps on one machine need two names.
        cookie: format!("kith_app_{}", addr.port()),
        host,
        origin,
        csp,
    });
    tokio::spawn(live::run(app.clone()));
    let router = Router::new()
        .route("/open", axum::routing::get(open))
        .merge(api::routes())
        .route("/live", axum::routing::get(live::socket))
        .fallback(assets::serve)
        .layer(axum::middleware::from_fn_with_state(app.clone(), gate))
        .with_state(app);
    let url = format!("http://127.0.0.1:{}/open?key={secret}", addr.port());
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await?;
        Ok(())
    });
    Ok(Running { addr, url, task })
}

pub(crate) fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(hex::encode(b))
}

#[derive(serde::Deserialize)]
struct OpenQuery {
    key: String,
}

/// `GET /open?key=SECRET`: the printed address. The right secret gets a session cookie and
/// is sent on to the page (so the secret leaves the address bar); a wrong one gets nothing.
async fn open(State(app): State<Arc<App>>, Query(q): Query<OpenQuery>) -> Response {
    use subtle::ConstantTimeEq;
    if !bool::from(q.key.as_bytes().ct_eq(app.secret.as_bytes())) {
        return refuse(StatusCode::FORBIDDEN, "wrong_secret", "this is not the app's address");
    }
    let Ok(session) = random_hex(32) else {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal", "no randomness");
    };
    if let Ok(mut s) = app.sessions.lock() {
        s.insert(session.clone());
    }
    let cookie = format!("{}={session}; HttpOnly; SameSite=Strict; Path=/", app.cookie);
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub(crate) fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

fn has_session(app: &App, headers: &HeaderMap) -> bool {
    let prefix = format!("{}=", app.cookie);
    let Ok(sessions) = app.sessions.lock() else { return false };
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(&prefix))
        .any(|s| sessions.contains(s))
}

/// Every request passes here: the `Host` (DNS rebinding), the session (the secret), the
/// `Origin` of anything that changes state or opens the live channel (cross-site requests);
/// every answer gets the headers that keep the page to itself.
async fn gate(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host_ok = headers.get(header::HOST).and_then(|h| h.to_str().ok()) == Some(&app.host);
    let mut response = if !host_ok {
        refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "wrong_host",
            "this app answers only at its own address",
        )
    } else if request.uri().path() == "/open" {
        next.run(request).await
    } else if !has_session(&app, headers) {
        refuse(
            StatusCode::UNAUTHORIZED,
            "no_session",
            "open the address `kith app` printed (it carries the app's secret)",
        )
    } else if changes_state(&request) && !origin_ok(&app, headers) {
        refuse(StatusCode::FORBIDDEN, "wrong_origin", "a request from another page")
    } else {
        next.run(request).await
    };
    let h = response.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(&app.csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Writes, and the live channel (a WebSocket is opened with a GET, and carries the origin).
fn changes_state(request: &Request) -> bool {
    request.method() != Method::GET && request.method() != Method::HEAD
        || request.uri().path() == "/live"
}

fn origin_ok(app: &App, headers: &HeaderMap) -> bool {
    let same_origin =
        headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) == Some(&app.origin);
    // Browsers say where a request comes from; a cross-site one is refused whatever else.
    let cross_site = headers.get("sec-fetch-site").is_some_and(|v| v == "cross-site");
    same_origin && !cross_site
}
