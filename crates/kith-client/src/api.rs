//! HTTP calls to `kithd`. Cheap to clone; holds no reference into the profile, so an async
//! method can await a call without borrowing the (non-`Sync`) SQLite connection.

use kith_proto::*;
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ClientError, ClientResult, Refusal};

/// Attempts at a request whose outcome stays unknown before giving up (see
/// [`Api::until_sure`]).
const POST_ATTEMPTS: u32 = 4;
/// The longest wait between two attempts, whatever `Retry-After` says.
const MAX_POST_WAIT_SECONDS: u64 = 5;

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    /// `<device-id>:<token>` once registered.
    bearer: Option<Secret>,
    /// A CA certificate (PEM) trusted besides the web roots.
    ca: Option<String>,
}

/// The HTTP client a [`crate::Client`] keeps for all its calls (its connections are reused):
/// the web roots, and `ca` (PEM) besides when given.
pub fn http_client(ca: Option<&str>) -> ClientResult<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(60))
        // Idle connections are let go before kithd closes them (after its 10 s header
        // deadline), so the pool rarely hands out one the server has just closed.
        .pool_idle_timeout(std::time::Duration::from_secs(5));
    if let Some(pem) = ca {
        let cert = reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|e| {
            ClientError::refused(Refusal::BadServer, format!("the CA certificate: {e}"))
        })?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(|e| ClientError::Network(e.to_string()))
}

impl Api {
    /// Calls to `base` over `http` (built by [`http_client`] with the same `ca`).
    pub fn new(
        http: reqwest::Client,
        base: &str,
        bearer: Option<Secret>,
        ca: Option<&str>,
    ) -> ClientResult<Self> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::refused(
                Refusal::BadServer,
                format!("the server URL must start with http:// or https://, not {base:?}"),
            ));
        }
        Ok(Api { http, base, bearer, ca: ca.map(str::to_string) })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn ca_pem(&self) -> Option<&str> {
        self.ca.as_deref()
    }

    pub fn bearer(&self) -> Option<&Secret> {
        self.bearer.as_ref()
    }

    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> ClientResult<R> {
        let repeatable = method == Method::GET;
        self.call_once_more_if(repeatable, method, path, body).await
    }

    /// One call; when `repeatable` (asking twice changes nothing and answers the same), a
    /// connection that failed before an answer came is tried again (twice at most). A
    /// kept-alive connection the server closed (it restarted, or ended an idle connection)
    /// can be picked from the pool in the moment before the client notices; the request then
    /// fails although the server is up. Timeouts are not repeated: the server may be busy
    /// with the first request still.
    async fn call_once_more_if<B: Serialize, R: DeserializeOwned>(
        &self,
        repeatable: bool,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> ClientResult<R> {
        let url = format!("{}{}", self.base, path);
        // The pool may hold more than one connection the server closed (after a restart, or
        // when a server at its connection cap made room): a few more tries, each taking the
        // failed connection out of the pool.
        let mut tries_left = 2;
        let resp = loop {
            let mut req = self.http.request(method.clone(), &url);
            if let Some(b) = &self.bearer {
                req = req.bearer_auth(b.expose());
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            match req.send().await {
                Ok(resp) => break resp,
                Err(e) if repeatable && tries_left > 0 && !e.is_timeout() => {
                    tracing::debug!(error = %e.without_url(), "call failed before an answer; once more");
                    tries_left -= 1;
                }
                Err(e) => return Err(failed(e)),
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let bytes = resp.bytes().await.map_err(failed)?;
        // `204 No Content` reads as JSON `null` (a `()` answer).
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        if status.is_success() {
            serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol(e.to_string()))
        } else {
            match serde_json::from_slice::<ErrorBody>(bytes) {
                Ok(body) => Err(ClientError::Server {
                    status: status.as_u16(),
                    code: body.error.code,
                    message: body.error.message,
                    retry_after,
                }),
                // A gateway in front of the server (a reverse proxy) that could not reach it
                // or gave up waiting answers in its own words: unavailable, and whether the
                // server acted is not known.
                Err(_) if status.is_server_error() => Err(ClientError::Server {
                    status: status.as_u16(),
                    code: ErrorCode::Unavailable,
                    message: format!("HTTP {status} from a gateway in front of the server"),
                    retry_after,
                }),
                Err(_) => {
                    Err(ClientError::Protocol(format!("HTTP {status} without an error body")))
                }
            }
        }
    }

    /// Registers, again when unsure (see [`Api::until_sure`]): with the token the client chose
    /// in the request, the server answers a repeat of a registration that went through as
    /// registered. Taken for a refusal, a lost answer burned the username.
    pub async fn register(&self, req: &RegisterRequest) -> ClientResult<RegisterResponse> {
        Self::until_sure(|| self.call(Method::POST, "/v1/accounts", Some(req))).await
    }

    pub async fn rotate_token(
        &self,
        req: &RotateTokenRequest,
    ) -> ClientResult<RotateTokenResponse> {
        self.call(Method::POST, "/v1/me/token", Some(req)).await
    }

    pub async fn set_account_key(&self, req: &SetAccountKey) -> ClientResult<SetAccountKey> {
        self.call(Method::PUT, "/v1/me/account-key", Some(req)).await
    }

    pub async fn set_recovery_key(&self, req: &SetRecoveryKey) -> ClientResult<()> {
        self.call(Method::PUT, "/v1/me/recovery-key", Some(req)).await
    }

    pub async fn recover(&self, username: &str, req: &RecoverAccount) -> ClientResult<Recovered> {
        self.call(Method::POST, &format!("/v1/accounts/{username}/recover"), Some(req)).await
    }

    pub async fn my_devices(&self) -> ClientResult<MyDevices> {
        self.call::<(), _>(Method::GET, "/v1/me/devices", None).await
    }

    pub async fn remove_device(&self, device: u64) -> ClientResult<MyDevices> {
        self.call::<(), _>(Method::DELETE, &format!("/v1/me/devices/{device}"), None).await
    }

    pub async fn rename_device(&self, device: u64, req: &RenameDevice) -> ClientResult<MyDevices> {
        self.call(Method::PUT, &format!("/v1/me/devices/{device}/name"), Some(req)).await
    }

    pub async fn offer_link(&self, req: &OfferLink) -> ClientResult<LinkOffered> {
        self.call(Method::POST, "/v1/links", Some(req)).await
    }

    pub async fn look_link(&self, link: &str) -> ClientResult<LinkOffered> {
        self.call::<(), _>(Method::GET, &format!("/v1/links/{link}"), None).await
    }

    pub async fn join_link(&self, link: &str, req: &JoinLink) -> ClientResult<()> {
        self.call(Method::POST, &format!("/v1/links/{link}/join"), Some(req)).await
    }

    pub async fn link_request(&self, link: &str) -> ClientResult<LinkRequest> {
        self.call::<(), _>(Method::GET, &format!("/v1/links/{link}/request"), None).await
    }

    pub async fn approve_link(&self, link: &str, req: &ApproveLink) -> ClientResult<LinkApproved> {
        self.call(Method::POST, &format!("/v1/links/{link}/approve"), Some(req)).await
    }

    pub async fn link_result(&self, link: &str) -> ClientResult<LinkResult> {
        self.call::<(), _>(Method::GET, &format!("/v1/links/{link}/result"), None).await
    }

    pub async fn answer_link(&self, link: &str, req: &AnswerLink) -> ClientResult<()> {
        self.call(Method::POST, &format!("/v1/links/{link}/key-packages"), Some(req)).await
    }

    pub async fn put_history_chunk(
        &self,
        link: &str,
        n: u32,
        req: &HistoryChunk,
    ) -> ClientResult<()> {
        self.call(Method::PUT, &format!("/v1/links/{link}/history/{n}"), Some(req)).await
    }

    pub async fn history_chunk(&self, link: &str, n: u32) -> ClientResult<HistoryChunk> {
        self.call::<(), _>(Method::GET, &format!("/v1/links/{link}/history/{n}"), None).await
    }

    pub async fn cancel_link(&self, link: &str) -> ClientResult<()> {
        self.call::<(), _>(Method::DELETE, &format!("/v1/links/{link}"), None).await
    }

    pub async fn whoami(&self) -> ClientResult<WhoAmI> {
        self.call::<(), _>(Method::GET, "/v1/me", None).await
    }

    pub async fn kt_keys(&self) -> ClientResult<kith_proto::kt::KtKeys> {
        self.call::<(), _>(Method::GET, "/v1/kt/keys", None).await
    }

    pub async fn kt_roots(&self, from: u64) -> ClientResult<kith_proto::kt::KtRoots> {
        self.call::<(), _>(Method::GET, &format!("/v1/kt/roots?from={from}"), None).await
    }

    pub async fn kt_audit(&self, from: u64, to: u64) -> ClientResult<kith_proto::kt::KtAudit> {
        self.call::<(), _>(Method::GET, &format!("/v1/kt/audit?from={from}&to={to}"), None).await
    }

    pub async fn kt_lookup(&self, username: &str) -> ClientResult<kith_proto::kt::KtLookup> {
        self.call::<(), _>(Method::GET, &format!("/v1/kt/lookup/{username}"), None).await
    }

    pub async fn kt_history(&self) -> ClientResult<kith_proto::kt::KtHistory> {
        self.call::<(), _>(Method::GET, "/v1/kt/history", None).await
    }

    pub async fn devices(&self, username: &str) -> ClientResult<DeviceList> {
        self.call::<(), _>(Method::GET, &format!("/v1/accounts/{username}/devices"), None).await
    }

    pub async fn upload_key_packages(
        &self,
        req: &UploadKeyPackages,
    ) -> ClientResult<UploadKeyPackagesResponse> {
        self.call(Method::POST, "/v1/key-packages", Some(req)).await
    }

    /// Asked once more when the connection broke before an answer (a kept-alive connection the
    /// server had just closed): at worst one more KeyPackage is used up, which its owner tops
    /// up, where failing would stop a send or a group's creation for nothing.
    pub async fn claim(&self, username: &str) -> ClientResult<ClaimResponse> {
        self.call_once_more_if::<(), _>(
            true,
            Method::POST,
            &format!("/v1/accounts/{username}/key-packages/claim"),
            None,
        )
        .await
    }

    /// Registers a new conversation, again when unsure (see [`Api::until_sure`]): the server
    /// answers its creator's repeat as created, without creating or delivering it twice. A
    /// creation whose answer was lost and that was taken for refused left the others in a
    /// group its creator had dropped.
    pub async fn create_conversation(
        &self,
        req: &CreateConversation,
    ) -> ClientResult<CreateConversationResponse> {
        Self::until_sure(|| self.call(Method::POST, "/v1/conversations", Some(req))).await
    }

    /// Posts a sealed message, again when unsure (see [`Api::until_sure`]): the server stores a
    /// message with the same client id once.
    /// Also says whether it was posted more than once (a later refusal then does not tell
    /// whether an earlier attempt went through).
    pub async fn send(
        &self,
        conversation: &str,
        req: &SendMessage,
    ) -> (ClientResult<SendResponse>, bool) {
        let path = format!("/v1/conversations/{conversation}/messages");
        // Each attempt after the first says it is a repeat (the server looks for the first).
        let again = SendMessage { repeat: req.client_id.is_some(), ..req.clone() };
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let result = Self::until_sure(|| {
            let n = attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.call(Method::POST, &path, Some(if n == 0 { req } else { &again }))
        })
        .await;
        (result, attempts.into_inner() > 1)
    }

    pub async fn pending_leaves(&self, conversation: &str) -> ClientResult<PendingLeaves> {
        let path = format!("/v1/conversations/{conversation}/pending-leaves");
        self.call::<(), _>(Method::GET, &path, None).await
    }

    /// Posts a commit or a proposal, again when unsure (see [`Api::until_sure`]): the server
    /// answers a repeat of a handshake it applied as applied, without applying it twice. A
    /// commit whose answer was lost and that was taken for refused would leave this device
    /// behind its group for good.
    pub async fn handshake(
        &self,
        conversation: &str,
        req: &HandshakeRequest,
    ) -> ClientResult<HandshakeResponse> {
        let path = format!("/v1/conversations/{conversation}/handshake");
        Self::until_sure(|| self.call(Method::POST, &path, Some(req))).await
    }

    /// Makes a call that changes something again — the *same* request — when its outcome is
    /// unknown: the server was unavailable (`503`, after its `Retry-After`), a gateway in
    /// front of it got no answer (`502`, `504`), or the answer was lost (the network failed),
    /// at most [`POST_ATTEMPTS`] times. Only for requests the server carries out once however
    /// often they come.
    async fn until_sure<T, F, Fut>(mut call: F) -> ClientResult<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ClientResult<T>>,
    {
        let mut attempt = 1;
        loop {
            let wait = match call().await {
                // Unknown (`crate::unsure::outcome_unknown`) — but a wait that ran out is not
                // repeated at once: the server may be busy with the first still.
                Err(e)
                    if attempt < POST_ATTEMPTS
                        && crate::unsure::outcome_unknown(&e)
                        && !matches!(e, ClientError::NoAnswer { timed_out: true }) =>
                {
                    match e {
                        // Unavailable, or a gateway in front of it that got no answer in time.
                        ClientError::Server { retry_after, .. } => {
                            retry_after.unwrap_or(1).clamp(1, MAX_POST_WAIT_SECONDS)
                        }
                        // Not sent, or the connection broke: again after a second.
                        _ => 1,
                    }
                }
                done => return done,
            };
            tracing::debug!(attempt, wait, "outcome unknown; posting the same request again");
            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            attempt += 1;
        }
    }

    pub async fn businesses(&self, query: &str) -> ClientResult<BusinessSearch> {
        let mut url = reqwest::Url::parse(&format!("{}/v1/businesses", self.base))
            .map_err(|e| ClientError::refused(Refusal::BadArgument, e.to_string()))?;
        url.query_pairs_mut().append_pair("q", query);
        let path = format!("/v1/businesses?{}", url.query().unwrap_or_default());
        self.call::<(), _>(Method::GET, &path, None).await
    }

    pub async fn report(&self, req: &ReportRequest) -> ClientResult<ReportResponse> {
        self.call(Method::POST, "/v1/reports", Some(req)).await
    }

    pub async fn block(&self, username: &str) -> ClientResult<BlockList> {
        let username = Username::parse(username)
            .map_err(|e| ClientError::refused(Refusal::BadUsername, e.to_string()))?;
        self.call(Method::POST, "/v1/blocks", Some(&BlockRequest { username })).await
    }

    pub async fn post_note(&self, req: &PostNote) -> ClientResult<()> {
        self.call(Method::POST, "/v1/me/notes", Some(req)).await
    }

    pub async fn blocked(&self) -> ClientResult<BlockList> {
        self.call::<(), _>(Method::GET, "/v1/blocks", None).await
    }

    pub async fn unblock(&self, username: &str) -> ClientResult<BlockList> {
        self.call::<(), _>(Method::DELETE, &format!("/v1/blocks/{username}"), None).await
    }

    /// A page of the queue, each entry read on its own (see [`kith_proto::read_entries`]).
    pub async fn fetch(&self, after: u64, limit: u32) -> ClientResult<Page> {
        let raw: RawPage = self
            .call::<(), _>(Method::GET, &format!("/v1/queue?after={after}&limit={limit}"), None)
            .await?;
        Ok(Page { entries: read_entries(raw.entries), more: raw.more, missed: raw.missed })
    }

    /// Acknowledges entries and the missed counts this device took in (subtracted, so a repeat
    /// of this call after a lost answer could only forget a message missed meanwhile — never
    /// tell one twice).
    pub async fn ack_told(&self, seqs: &[u64], missed: &[Missed]) -> ClientResult<AckResponse> {
        // Acknowledging an entry twice removes it once.
        let body = AckRequest { seqs: seqs.to_vec(), missed: missed.to_vec() };
        self.call_once_more_if(true, Method::POST, "/v1/queue/ack", Some(&body)).await
    }

    /// The WebSocket URL of the push channel.
    pub fn ws_url(&self) -> String {
        let rest = self
            .base
            .strip_prefix("https://")
            .map(|r| format!("wss://{r}"))
            .or_else(|| self.base.strip_prefix("http://").map(|r| format!("ws://{r}")))
            .unwrap_or_else(|| self.base.clone());
        format!("{rest}/v1/ws")
    }
}

/// `GET /v1/queue`'s answer before its entries are read one by one.
#[derive(serde::Deserialize)]
struct RawPage {
    entries: Vec<serde_json::Value>,
    more: bool,
    #[serde(default)]
    missed: Vec<Missed>,
}

/// A page of the queue.
pub struct Page {
    pub entries: Vec<Incoming>,
    pub more: bool,
    /// Messages this device missed because its queue was full, by conversation.
    pub missed: Vec<Missed>,
}

/// reqwest's errors name the URL, which may carry a username; keep only the kind.
/// What a request that got no answer tells: not sent at all (the server could not be reached),
/// or sent with the outcome unknown.
fn failed(e: reqwest::Error) -> ClientError {
    if e.is_timeout() {
        ClientError::NoAnswer { timed_out: true }
    } else if e.is_connect() || e.is_builder() {
        ClientError::Network(without_url(e))
    } else {
        ClientError::NoAnswer { timed_out: false }
    }
}

fn without_url(e: reqwest::Error) -> String {
    // reqwest's own words ("error sending request") say little; the innermost cause says why
    // ("Connection refused", a name that does not resolve, a certificate not trusted).
    let e = e.without_url();
    let mut cause: &dyn std::error::Error = &e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    let why = cause.to_string();
    if why == e.to_string() { why } else { format!("{e} ({why})") }
}
