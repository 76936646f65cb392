//! An HTTP proxy in front of `kithd` that can lose answers: the server carries a request out,
//! and the client never hears (the connection closes instead) — as when a network fails after
//! the request arrived. What the client does next is what such a test checks.
//!
//! It is also the hostile server: [`AnswerLoser::rewrite_queue`] rewrites, drops, reorders and
//! replays the queue entries `kithd` hands out (`GET /v1/queue`), and
//! [`AnswerLoser::rewrite_answers`] any other JSON answer, so a test can check that a client
//! believes only what MLS proves, field by field.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// Forwards every request made to [`AnswerLoser::addr`] to `kithd` (plain HTTP calls; not the
/// push WebSocket) and hands the answer back — but for requests whose path ends with what
/// [`lose_next`](AnswerLoser::lose_next) named, whose answers it drops.
pub struct AnswerLoser {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    target: SocketAddr,
    http: reqwest::Client,
    /// Endings of paths whose next answer goes wrong, one answer each, in order.
    lose: Mutex<Vec<(String, Fault)>>,
    lost: AtomicU64,
    /// Late requests (see `time_out_next`) held back so far, and those the server has answered
    /// since.
    late_taken: AtomicU64,
    late_arrived: AtomicU64,
    /// Applied to the entries of every queue page handed out (see `rewrite_queue`).
    rewrite: Mutex<Option<Rewrite>>,
    /// Applied to the JSON answers of requests whose path ends so (see `rewrite_answers`).
    answers: Mutex<Vec<(String, AnswerRewrite)>>,
}

/// What a hostile server does to one JSON answer.
pub type AnswerRewrite = Arc<dyn Fn(&mut serde_json::Value) + Send + Sync>;

/// What a hostile server does to the entries of a queue page before the client sees them.
pub type Rewrite = Arc<dyn Fn(&mut Vec<serde_json::Value>) + Send + Sync>;

/// The hostile server is the same proxy.
pub type HostileServer = AnswerLoser;

#[derive(Clone, Copy)]
enum Fault {
    /// The server carries the request out; the answer is dropped.
    Lose,
    /// A gateway gives up: `504` at once, and the request reaches the server this much later.
    Late(std::time::Duration),
}

/// The error that ends a connection without an answer.
#[derive(Debug)]
struct Lost;

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("answer lost on purpose")
    }
}

impl std::error::Error for Lost {}

impl AnswerLoser {
    /// Listens on `127.0.0.1:0` and forwards to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let http = reqwest::Client::builder().build().map_err(std::io::Error::other)?;
        let state = Arc::new(State {
            target,
            http,
            lose: Mutex::new(Vec::new()),
            lost: AtomicU64::new(0),
            late_taken: AtomicU64::new(0),
            late_arrived: AtomicU64::new(0),
            rewrite: Mutex::new(None),
            answers: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        Ok(AnswerLoser { addr, state, task })
    }

    /// The next request whose path ends with `suffix` reaches the server; its answer does not
    /// reach the client. Called again, one more answer is lost (the same ending twice: the
    /// next two such answers).
    pub fn lose_next(&self, suffix: &str) {
        if let Ok(mut lose) = self.state.lose.lock() {
            lose.push((suffix.to_string(), Fault::Lose));
        }
    }

    /// The next request whose path ends with `suffix` is answered `504` at once, as by a
    /// gateway that gave up, and reaches the server `after` that (its answer goes nowhere).
    pub fn time_out_next(&self, suffix: &str, after: std::time::Duration) {
        if let Ok(mut lose) = self.state.lose.lock() {
            lose.push((suffix.to_string(), Fault::Late(after)));
        }
    }

    /// From now on, every page of queue entries (`GET /v1/queue`) goes through `f` on its way
    /// to the client: it may change any field, drop, reorder, duplicate or add entries (JSON,
    /// as `kithd` sends them). `None` stops rewriting.
    pub fn rewrite_queue(&self, f: Option<Rewrite>) {
        if let Ok(mut r) = self.state.rewrite.lock() {
            *r = f;
        }
    }

    /// From now on, the JSON answer of every request whose path ends with `suffix` goes
    /// through `f` (a claim's KeyPackages, a device list's kind, `whoami`'s limits…).
    pub fn rewrite_answers(&self, suffix: &str, f: AnswerRewrite) {
        if let Ok(mut a) = self.state.answers.lock() {
            a.push((suffix.to_string(), f));
        }
    }

    /// Stops every rewrite `rewrite_answers` set.
    pub fn clear_answer_rewrites(&self) {
        if let Ok(mut a) = self.state.answers.lock() {
            a.clear();
        }
    }

    /// The address clients reach the server at through this proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits (up to `within`) until every request that `time_out_next` held back has reached
    /// the server and been answered there; whether they all did.
    pub async fn late_ones_arrived(&self, within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let held = self.state.lose.lock().map_or(0, |l| {
                l.iter().filter(|(_, f)| matches!(f, Fault::Late(_))).count() as u64
            });
            let late = self.state.late_arrived.load(Ordering::SeqCst);
            // Every late fault was taken from the list and has arrived.
            if held == 0 && late >= self.state.late_taken.load(Ordering::SeqCst) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Answers lost (or given up on) so far.
    pub fn lost(&self) -> u64 {
        self.state.lost.load(Ordering::SeqCst)
    }
}

impl Drop for AnswerLoser {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, state: Arc<State>) {
    while let Ok((tcp, _)) = listener.accept().await {
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| forward(req, state.clone()));
            // A lost answer ends the connection with an error: that is the point.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

async fn forward(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let mut out = state.http.request(parts.method, format!("http://{}{path}", state.target));
    for (name, value) in &parts.headers {
        if name != hyper::header::HOST && name != hyper::header::CONTENT_LENGTH {
            out = out.header(name, value);
        }
    }
    let fault = state.lose.lock().ok().and_then(|mut lose| {
        let hit = lose.iter().position(|(s, _)| parts.uri.path().ends_with(s.as_str()))?;
        Some(lose.remove(hit).1)
    });
    if let Some(Fault::Late(after)) = fault {
        state.lost.fetch_add(1, Ordering::SeqCst);
        state.late_taken.fetch_add(1, Ordering::SeqCst);
        let arrived = state.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = out.body(body).send().await;
            arrived.late_arrived.fetch_add(1, Ordering::SeqCst);
        });
        return Ok(Response::builder().status(504).body(Full::new(Bytes::new()))?);
    }
    let answer = out.body(body).send().await?;
    if let Some(Fault::Lose) = fault {
        state.lost.fetch_add(1, Ordering::SeqCst);
        return Err(Box::new(Lost));
    }
    let mut back = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != hyper::header::CONTENT_LENGTH && name != hyper::header::TRANSFER_ENCODING {
            back = back.header(name, value);
        }
    }
    let mut bytes = answer.bytes().await?;
    let rewrite = state.rewrite.lock().ok().and_then(|r| r.clone());
    let answer_rewrites: Vec<AnswerRewrite> = state
        .answers
        .lock()
        .map(|a| {
            a.iter()
                .filter(|(suffix, _)| parts.uri.path().ends_with(suffix.as_str()))
                .map(|(_, f)| f.clone())
                .collect()
        })
        .unwrap_or_default();
    if !answer_rewrites.is_empty()
        && let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&bytes)
    {
        for f in answer_rewrites {
            f(&mut value);
        }
        bytes = Bytes::from(serde_json::to_vec(&value)?);
    }
    if let Some(f) = rewrite.filter(|_| parts.uri.path() == "/v1/queue") {
        let mut page: serde_json::Value = serde_json::from_slice(&bytes)?;
        if let Some(entries) = page.get_mut("entries").and_then(|e| e.as_array_mut()) {
            f(entries);
        }
        bytes = Bytes::from(serde_json::to_vec(&page)?);
    }
    Ok(back.body(Full::new(bytes))?)
}
