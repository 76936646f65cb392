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
//! address served (DNS rebinding) and it carries the session cookie (HttpOnly,
//! SameSite=Strict), got by presenting the secret printed with the address. Cookies are not
//! kept apart by port, so the cookie alone opens only the page's files: every call and the live
//! channel also carry the session's token, which the page got in the address's fragment and
//! keeps in its own origin's storage. Anything that changes state, and the live channel, must
//! come from the app's own origin. Every answer carries a strict Content-Security-Policy.

mod answers;
mod api;
mod assets;
mod live;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use kith_client::{Client, View};
use kith_proto::Secret;
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
    /// The address to open: it hands the secret over for a session (any number of times, for
    /// as long as this app runs).
    pub url: String,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    app: Arc<App>,
}

/// The file [`Running::page_file`] writes in the profile folder.
pub const PAGE_FILE: &str = "app-open.html";

impl Running {
    /// Writes a page into the profile folder, readable by its owner only, that sends a browser
    /// on to the app with a key good for one session; returns its path. This is what to hand
    /// to a browser launcher: a secret on a command line is readable by every user of the
    /// machine, a file in the profile is not. The file goes when its key is used.
    pub fn page_file(&self) -> anyhow::Result<PathBuf> {
        let key = random_hex(32)?;
        let path = self.app.profile.join(PAGE_FILE);
        let page = format!(
            "<!doctype html><meta charset=\"utf-8\"><title>Kith</title>\
             <meta http-equiv=\"refresh\" content=\"0;url=http://{}/open?once={key}\">\
             <p>Opening the Kith app\u{2026}</p>\n",
            self.app.host
        );
        let _ = std::fs::remove_file(&path);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        std::io::Write::write_all(&mut options.open(&path)?, page.as_bytes())?;
        if let Ok(mut once) = self.app.once.lock() {
            once.push(Secret::new(key));
        }
        Ok(path)
    }
}

/// Sessions kept at most.
const MAX_SESSIONS: usize = 256;

/// A page's session with the app.
struct Session {
    cookie: Secret,
    token: Secret,
}

/// Whether two secrets are equal, in time that does not depend on where they differ.
fn same(a: &str, b: &Secret) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.as_bytes().ct_eq(b.expose().as_bytes()))
}

pub(crate) struct App {
    pub client: Mutex<Client>,
    /// What the page reads, on a connection of its own (see [`App::view`]).
    view: std::sync::Mutex<View>,
    /// Events for the pages (JSON text), from the push loop and from the page's own actions.
    pub events: broadcast::Sender<String>,
    /// The last connection status sent, for a page that connects later.
    pub status: std::sync::Mutex<String>,
    /// Woken when the profile gets an account (the push loop waits for one).
    pub registered: Notify,
    /// Asks for the upkeep `sync` runs (story channel, held invitations, expiry) now.
    pub upkeep: Notify,
    /// How the link offered last is going (see `api::offer_link`).
    pub link: std::sync::Mutex<crate::answers::LinkProgress>,
    /// A recovery code the client made in a sync (an account from before recovery codes),
    /// until the page takes it with `GET /api/me`; in memory only.
    pub fresh_code: std::sync::Mutex<Option<kith_client::RecoveryCode>>,
    /// The last word on a history transfer under way (a `LiveEvent::History`), for a page that
    /// connects later; the word that it finished is given to one page, once.
    pub history: std::sync::Mutex<Option<(String, bool)>>,
    /// The secret printed with the address (see [`open`]).
    secret: Secret,
    /// Keys good for one session each (see [`Running::page_file`]).
    once: std::sync::Mutex<Vec<Secret>>,
    /// Each session: its cookie and the token the page's calls carry. Secrets all: compared in
    /// constant time, wiped when dropped, never printed.
    sessions: std::sync::Mutex<Vec<Session>>,
    profile: PathBuf,
    host: String,
    origin: String,
    cookie: String,
    csp: String,
}

impl App {
    /// The profile's view, for what a call only reads. Each call holds it for one local
    /// query, never across a wait on the network.
    pub(crate) fn view(&self) -> std::sync::MutexGuard<'_, View> {
        // A panic while it was held left nothing half made: it reads, and its one write (a
        // chat marked read) is a single statement.
        self.view.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The name a process holding the profile is shown as, to another `kith` command.
pub const HOLDER: &str = "the Kith app (`kith app`); use the app, or stop it first";

/// Opens the profile, binds 127.0.0.1 and starts serving. The profile stays held (see
/// [`HOLDER`]) until the task ends.
pub async fn serve(options: AppOptions) -> anyhow::Result<Running> {
    // Opening may wait on another process's lock, off the async threads.
    let dir = options.profile.clone();
    let client = tokio::task::spawn_blocking(move || Client::open_as(&dir, HOLDER, true)).await??;
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
    let view = client.view()?;
    let app = Arc::new(App {
        client: Mutex::new(client),
        view: std::sync::Mutex::new(view),
        events,
        status: std::sync::Mutex::new(
            answers::LiveEvent::Status { online: false, error: None }.json(),
        ),
        registered: Notify::new(),
        upkeep: Notify::new(),
        link: Default::default(),
        fresh_code: Default::default(),
        history: Default::default(),
        secret: Secret::new(secret.clone()),
        once: std::sync::Mutex::default(),
        sessions: std::sync::Mutex::default(),
        profile: options.profile.clone(),
        // Cookies are not kept apart by port: two apps on one machine need two names.
        cookie: format!("kith_app_{}", addr.port()),
        host,
        origin,
        csp,
    });
    tokio::spawn(live::run(app.clone()));
    tokio::spawn(live::upkeep(app.clone()));
    let router = Router::new()
        .route("/open", axum::routing::get(open))
        .merge(api::routes())
        .route("/live", axum::routing::get(live::socket))
        .fallback(assets::serve)
        .layer(axum::middleware::from_fn_with_state(app.clone(), gate))
        .with_state(app.clone());
    let url = format!("http://127.0.0.1:{}/open?key={secret}", addr.port());
    let task = tokio::spawn(serve_loop(listener, router));
    Ok(Running { addr, url, task, app })
}

/// The page's connections: another local user must not be able to make the app unreachable
/// by holding sockets open (`kith_listen`: a silent connection makes room for a new one, each
/// request's headers have a deadline, idle connections close, accepting never spins).
const LIMITS: kith_listen::Limits = kith_listen::Limits {
    max_connections: 512,
    max_per_address: 512,
    header_timeout: std::time::Duration::from_secs(10),
};

async fn serve_loop(listener: tokio::net::TcpListener, router: Router) -> anyhow::Result<()> {
    kith_listen::raise_open_file_limit();
    let gate = kith_listen::Gate::new(kith_listen::Limits {
        max_connections: kith_listen::room_for(LIMITS.max_connections),
        ..LIMITS
    });
    let mut listener = kith_listen::Acceptor::new(listener, "kith app");
    // The app runs until its process ends: nothing asks it to drain.
    let (_stop, stop) = tokio::sync::watch::channel(false);
    loop {
        let (tcp, peer) = listener.accept().await;
        let Some(permit) = gate.admit(peer.ip()) else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let app = router.clone();
        let stop = stop.clone();
        tokio::spawn(kith_listen::serve_connection(tcp, app, permit, stop, LIMITS.header_timeout));
    }
}

pub(crate) fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(hex::encode(b))
}

#[derive(serde::Deserialize)]
struct OpenQuery {
    /// The secret printed with the address.
    key: Option<String>,
    /// A key good once (from [`Running::page_file`]).
    once: Option<String>,
}

/// `GET /open?key=SECRET` (or `?once=KEY`): the printed address. The right secret gets a
/// session cookie and is sent on to the page, with the session's token in the fragment (which
/// never reaches a server, and leaves the address bar as the page starts); a wrong one gets
/// nothing.
async fn open(State(app): State<Arc<App>>, Query(q): Query<OpenQuery>) -> Response {
    let by_secret = q.key.is_some_and(|k| same(&k, &app.secret));
    let by_once = !by_secret
        && q.once.is_some_and(|k| {
            app.once.lock().is_ok_and(|mut once| {
                let before = once.len();
                once.retain(|o| !same(&k, o));
                once.len() < before
            })
        });
    if by_once {
        let _ = std::fs::remove_file(app.profile.join(PAGE_FILE));
    }
    if !by_secret && !by_once {
        return refuse_page(StatusCode::FORBIDDEN, "this is not the app's address");
    }
    let (Ok(session), Ok(token)) = (random_hex(32), random_hex(32)) else {
        return refuse_page(StatusCode::INTERNAL_SERVER_ERROR, "no randomness");
    };
    let cookie = format!("{}={session}; HttpOnly; SameSite=Strict; Path=/", app.cookie);
    if let Ok(mut s) = app.sessions.lock() {
        // Each opening makes one; the oldest go past a few hundred (tabs long closed).
        if s.len() >= MAX_SESSIONS {
            s.remove(0);
        }
        s.push(Session { cookie: Secret::new(session), token: Secret::new(token.clone()) });
    }
    let to = format!("/#session={token}");
    let mut r = StatusCode::SEE_OTHER.into_response();
    for (name, value) in [(header::LOCATION, to), (header::SET_COOKIE, cookie)] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            r.headers_mut().insert(name, v);
        }
    }
    r
}

/// A refusal for a call: `{"error": {"code", "message"}}`.
pub(crate) fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

/// A refusal for a person (a page load): a few lines of HTML, no script.
fn refuse_page(status: StatusCode, message: &str) -> Response {
    let mut chars = message.chars();
    let message: String =
        chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default();
    let page = format!(
        "<!doctype html><meta charset=\"utf-8\"><title>Kith</title>\
         <h1>Kith</h1><p>{message}.</p><p>Open the address the Kith app (<code>kith app</code>) \
         printed in its terminal. Each start of the app prints a new one, and the old one stops \
         working.</p>\n"
    );
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

/// The token of the session the request's cookie names.
fn session_token(app: &App, headers: &HeaderMap) -> Option<Secret> {
    let prefix = format!("{}=", app.cookie);
    let sessions = app.sessions.lock().ok()?;
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(&prefix))
        .find_map(|c| sessions.iter().find(|s| same(c, &s.cookie)).map(|s| s.token.clone()))
}

/// The token a call presents: the `X-Kith-Session` header, or (for the live channel, which a
/// browser opens without custom headers) the `session` query parameter.
fn presented_token(request: &Request) -> Option<&str> {
    if let Some(t) = request.headers().get("x-kith-session") {
        return t.to_str().ok();
    }
    request.uri().query()?.split('&').find_map(|pair| pair.strip_prefix("session="))
}

/// Why a request is refused, if it is: (status, code, words).
type Refusal = (StatusCode, &'static str, &'static str);

fn check(app: &App, request: &Request, call: bool) -> Result<(), Refusal> {
    let headers = request.headers();
    if headers.get(header::HOST).and_then(|h| h.to_str().ok()) != Some(&app.host) {
        return Err((
            StatusCode::MISDIRECTED_REQUEST,
            "wrong_host",
            "this app answers only at its own address",
        ));
    }
    if request.uri().path() == "/open" {
        return Ok(());
    }
    let no_session = (
        StatusCode::UNAUTHORIZED,
        "no_session",
        "this window has no session with the app (it was restarted, or the address was not \
         the one it printed)",
    );
    let token = session_token(app, headers).ok_or(no_session)?;
    if call {
        let presented = presented_token(request).ok_or(no_session)?;
        if !same(presented, &token) {
            return Err(no_session);
        }
    }
    if changes_state(request) && !origin_ok(app, headers) {
        return Err((StatusCode::FORBIDDEN, "wrong_origin", "a request from another page"));
    }
    Ok(())
}

/// Every request passes here: the `Host` (DNS rebinding), the session (the secret), the
/// `Origin` of anything that changes state or opens the live channel (cross-site requests);
/// every answer gets the headers that keep the page to itself, and every call's error is
/// JSON.
async fn gate(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let call = path.starts_with("/api/") || path == "/live";
    let mut response = match check(&app, &request, call) {
        Err((status, code, message)) if call => refuse(status, code, message),
        Err((status, _, message)) => refuse_page(status, message),
        Ok(()) if call => as_json(next.run(request).await).await,
        Ok(()) => next.run(request).await,
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

/// A call's failure that did not come from a handler (a body that is not JSON, too large,
/// the wrong method, a path that does not decode) in the calls' JSON shape, with a code.
async fn as_json(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::METHOD_NOT_ALLOWED => "wrong_method",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "not_json",
        StatusCode::NOT_FOUND => "not_found",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let text = axum::body::to_bytes(response.into_body(), 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match text.trim() {
        "" => status.canonical_reason().unwrap_or("refused"),
        t => t,
    };
    refuse(status, code, message)
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
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("cross-site"));
    same_origin && !cross_site
}
