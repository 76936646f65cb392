//! The HTTP API against a real in-process kithd: every refusal has its own stable code and
//! status, nothing answers 500, and nothing but registration and operations works unauthenticated.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::sync::Arc;
use std::time::Duration;

use kith_proto::{ErrorBody, ErrorCode, FetchResponse};
use kith_server::{ManualClock, ServerConfig};
use kith_testkit::{TestServer, TestUser, test_config};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

struct Http {
    base: String,
    http: reqwest::Client,
}

impl Http {
    fn new(server: &TestServer) -> Self {
        Http { base: server.url.clone(), http: reqwest::Client::new() }
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> (StatusCode, Vec<u8>) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.bytes().await.unwrap().to_vec())
    }

    /// Asserts the answer is the given error, with its documented status.
    async fn refuses(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Vec<u8>>,
        code: ErrorCode,
    ) {
        let (status, bytes) = self.raw(method.clone(), path, auth, body).await;
        let parsed: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!("{method} {path}: not an error body: {}", String::from_utf8_lossy(&bytes))
        });
        assert_eq!(parsed.error.code, code, "{method} {path}: {}", parsed.error.message);
        assert_eq!(status.as_u16(), code.status(), "{method} {path}");
        assert!(!parsed.error.message.is_empty());
    }
}

/// The device's bearer header, read from its profile database as only the device could: the
/// SDK does not hand its token out.
fn token_of(user: &TestUser) -> String {
    let conn = rusqlite::Connection::open(user.dir.path().join("kith.db")).unwrap();
    let token: String = conn.query_row("SELECT token FROM kith_profile", [], |r| r.get(0)).unwrap();
    format!("Bearer {}:{token}", user.profile().unwrap().device_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_operation_but_registration_needs_credentials() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let conv = "ab".repeat(16);
    let protected: Vec<(Method, String)> = vec![
        (Method::GET, "/v1/me".into()),
        (Method::GET, "/v1/accounts/alice/devices".into()),
        (Method::POST, "/v1/key-packages".into()),
        (Method::POST, "/v1/accounts/alice/key-packages/claim".into()),
        (Method::POST, "/v1/conversations".into()),
        (Method::POST, format!("/v1/conversations/{conv}/messages")),
        (Method::GET, "/v1/queue".into()),
        (Method::POST, "/v1/queue/ack".into()),
        (Method::GET, "/v1/ws".into()),
        (Method::POST, format!("/v1/conversations/{conv}/handshake")),
        (Method::POST, "/v1/reports".into()),
        (Method::POST, "/v1/blocks".into()),
        (Method::GET, "/v1/blocks".into()),
        (Method::DELETE, "/v1/blocks/alice".into()),
    ];
    let alice = server.user("alice").await;
    let right = token_of(&alice);
    let device = alice.profile().unwrap().device_id;
    let wrong = format!("Bearer {device}:{}", "0".repeat(64));
    let unknown_device = format!("Bearer {}:{}", device + 999, "0".repeat(64));
    for (method, path) in &protected {
        for auth in [
            None,
            Some("Bearer"),
            Some("Basic abc"),
            Some(wrong.as_str()),
            Some(unknown_device.as_str()),
            Some("Bearer 1:"),
        ] {
            http.refuses(method.clone(), path, auth, Some(b"{}".to_vec()), ErrorCode::Unauthorized)
                .await;
        }
    }
    // The right token works.
    let (status, _) = http.raw(Method::GET, "/v1/me", Some(&right), None).await;
    assert_eq!(status, StatusCode::OK);
    // The open endpoints answer without one.
    for path in ["/healthz", "/metrics", "/v1/openapi.json"] {
        let (status, _) = http.raw(Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_own_code() {
    let config = ServerConfig { max_body_bytes: 64 * 1024, ..kith_testkit::test_config() };
    let server = TestServer::start_with(config, Arc::new(kith_server::SystemClock)).await;
    let http = Http::new(&server);
    let alice = server.user("alice").await;
    let auth = token_of(&alice);
    let a = Some(auth.as_str());

    let register = |username: &str, kp: &str| {
        json!({"username": username, "credential_key": "AAAA", "key_packages": [kp], "last_resort_key_package": kp})
            .to_string()
            .into_bytes()
    };
    use ErrorCode::*;
    // Registration.
    http.refuses(Method::POST, "/v1/accounts", None, Some(b"{not json".to_vec()), MalformedJson)
        .await;
    http.refuses(Method::POST, "/v1/accounts", None, Some(b"{}".to_vec()), MalformedJson).await;
    http.refuses(
        Method::POST,
        "/v1/accounts",
        None,
        Some(register("Bad Name", "AAAA")),
        InvalidUsername,
    )
    .await;
    http.refuses(Method::POST, "/v1/accounts", None, Some(register("ab", "AAAA")), InvalidUsername)
        .await;
    http.refuses(
        Method::POST,
        "/v1/accounts",
        None,
        Some(register("carol", "!!notbase64")),
        BadBase64,
    )
    .await;
    http.refuses(
        Method::POST,
        "/v1/accounts",
        None,
        Some(register("carol", "AAAA")),
        InvalidKeyPackage,
    )
    .await;
    let big = vec![b' '; 65 * 1024];
    http.refuses(Method::POST, "/v1/accounts", None, Some(big), BodyTooLarge).await;
    let dir = tempfile::tempdir().unwrap();
    let mut dup = kith_client::Client::open(dir.path()).unwrap();
    let err =
        dup.register(&server.url, "alice", kith_client::AccountKind::Person).await.unwrap_err();
    assert_eq!(err.code(), Some(UsernameTaken));

    // Users and devices.
    http.refuses(Method::GET, "/v1/accounts/nobody/devices", a, None, UnknownUser).await;
    http.refuses(Method::GET, "/v1/accounts/NoBody/devices", a, None, InvalidUsername).await;
    http.refuses(Method::POST, "/v1/accounts/nobody/key-packages/claim", a, None, UnknownUser)
        .await;
    // KeyPackages.
    http.refuses(
        Method::POST,
        "/v1/key-packages",
        a,
        Some(br#"{"key_packages": ["AAAA"]}"#.to_vec()),
        InvalidKeyPackage,
    )
    .await;
    http.refuses(
        Method::POST,
        "/v1/key-packages",
        a,
        Some(br#"{"key_packages": ["@@"]}"#.to_vec()),
        BadBase64,
    )
    .await;
    // Conversations.
    let create = |id: &str| {
        format!(
            r#"{{"conversation_id": "{id}", "welcome": "AAAA", "group_info": "AAAA", "ratchet_tree": "AAAA"}}"#
        )
        .into_bytes()
    };
    let conv = "ab".repeat(16);
    http.refuses(Method::POST, "/v1/conversations", a, Some(create("xyz")), InvalidConversationId)
        .await;
    http.refuses(Method::POST, "/v1/conversations", a, Some(create(&conv)), InvalidMessage).await;
    let handshake = br#"{"message": "AAAA"}"#.to_vec();
    let path = format!("/v1/conversations/{conv}/handshake");
    // The body is checked before any group state is looked up.
    http.refuses(Method::POST, &path, a, Some(handshake.clone()), InvalidMessage).await;
    http.refuses(
        Method::POST,
        "/v1/conversations/x/handshake",
        a,
        Some(handshake),
        InvalidConversationId,
    )
    .await;
    let send = br#"{"message": "AAAA"}"#.to_vec();
    http.refuses(
        Method::POST,
        &format!("/v1/conversations/{}/messages", "cd".repeat(16)),
        a,
        Some(send.clone()),
        UnknownConversation,
    )
    .await;
    http.refuses(
        Method::POST,
        "/v1/conversations/ZZ/messages",
        a,
        Some(send),
        InvalidConversationId,
    )
    .await;
    // Queue.
    http.refuses(Method::GET, "/v1/queue?after=-1", a, None, BadRequest).await;
    http.refuses(Method::GET, "/v1/queue?limit=abc", a, None, BadRequest).await;
    http.refuses(
        Method::POST,
        "/v1/queue/ack",
        a,
        Some(br#"{"seqs": "x"}"#.to_vec()),
        MalformedJson,
    )
    .await;
    // Routes.
    http.refuses(Method::GET, "/v1/nothing-here", None, None, NotFound).await;
    http.refuses(Method::DELETE, "/v1/accounts", None, None, MethodNotAllowed).await;

    // None of that was a 500.
    let (_, metrics) = http.raw(Method::GET, "/metrics", None, None).await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(!metrics.contains("status=\"500\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_reads_only_its_own_mailbox_and_members_only_send() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let sent = alice.send_text("bob", "for bob only").await.unwrap();

    // Carol's queue is empty, and acking bob's entries from carol removes nothing.
    let carol_auth = token_of(&carol);
    let (_, body) = http.raw(Method::GET, "/v1/queue", Some(&carol_auth), None).await;
    let page: FetchResponse = serde_json::from_slice(&body).unwrap();
    assert!(page.entries.is_empty());
    let bob_auth = token_of(&bob);
    let (_, body) = http.raw(Method::GET, "/v1/queue", Some(&bob_auth), None).await;
    let bobs: FetchResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(bobs.entries.len(), 2);
    let seqs: Vec<u64> = bobs.entries.iter().map(|e| e.seq).collect();
    let (status, body) = http
        .raw(
            Method::POST,
            "/v1/queue/ack",
            Some(&carol_auth),
            Some(json!({"seqs": seqs}).to_string().into_bytes()),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["removed"], 0);

    // Carol cannot post into alice and bob's conversation, even a well-formed MLS message.
    let mls_message = bobs.entries[1].data.clone();
    http.refuses(
        Method::POST,
        &format!("/v1/conversations/{}/messages", sent.conversation),
        Some(&carol_auth),
        Some(json!({"message": mls_message}).to_string().into_bytes()),
        ErrorCode::NotAMember,
    )
    .await;
    // A member cannot post a message of another conversation into this one.
    let other = "ef".repeat(16);
    let alice_auth = token_of(&alice);
    http.refuses(
        Method::POST,
        &format!("/v1/conversations/{other}/messages"),
        Some(&alice_auth),
        Some(json!({"message": mls_message}).to_string().into_bytes()),
        ErrorCode::UnknownConversation,
    )
    .await;

    // Bob still gets his message.
    let r = bob.sync().await.unwrap();
    assert_eq!(r.messages[0].text, "for bob only");
    let _ = alice.sync().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_sweep_deletes_undelivered_ciphertext() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let server = TestServer::start_with(kith_testkit::test_config(), clock.clone()).await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    alice.send_text("bob", "never fetched").await.unwrap();
    assert_eq!(server.store().counts().await.unwrap().messages, 2);

    // 29 days later nothing is swept...
    clock.advance(Duration::from_secs(29 * 86_400));
    assert_eq!(kith_server::retention::sweep_once(&server.state).await.unwrap(), 0);
    // ...at 31 days both the Welcome and the message are gone.
    clock.advance(Duration::from_secs(2 * 86_400));
    assert_eq!(kith_server::retention::sweep_once(&server.state).await.unwrap(), 2);
    let counts = server.store().counts().await.unwrap();
    assert_eq!((counts.messages, counts.queue_entries), (0, 0));
    assert!(bob.sync().await.unwrap().messages.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_health_and_metrics() {
    let server = TestServer::start().await;
    let http = Http::new(&server);
    let (_, body) = http.raw(Method::GET, "/v1/openapi.json", None, None).await;
    let doc: Value = serde_json::from_slice(&body).unwrap();
    for path in [
        "/v1/accounts",
        "/v1/me",
        "/v1/accounts/{username}/devices",
        "/v1/key-packages",
        "/v1/accounts/{username}/key-packages/claim",
        "/v1/conversations",
        "/v1/conversations/{id}/messages",
        "/v1/conversations/{id}/handshake",
        "/v1/reports",
        "/v1/blocks",
        "/v1/blocks/{username}",
        "/v1/queue",
        "/v1/queue/ack",
        "/v1/ws",
        "/healthz",
        "/metrics",
        "/v1/openapi.json",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
    assert!(doc["components"]["schemas"]["ErrorCode"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());

    let (_, body) = http.raw(Method::GET, "/healthz", None, None).await;
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["status"], "ok");

    let mut alice = server.user("alice").await;
    let _bob = server.user("bob").await;
    alice.send_text("bob", "count me").await.unwrap();
    let (_, body) = http.raw(Method::GET, "/metrics", None, None).await;
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("kith_registrations_total 2"), "{text}");
    assert!(text.contains("kith_messages_accepted_total 2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_cannot_hold_a_connection_open() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = ServerConfig { header_read_timeout: Duration::from_secs(1), ..test_config() };
    let server = TestServer::start_with(config, Arc::new(kith_server::SystemClock)).await;
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Headers that never finish.
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: kith\r\n").await.unwrap();
    let mut buf = [0u8; 512];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // an error answer before closing is fine too
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept a half-sent request open for 10 s");
    // A well-behaved client on the same server is served as usual.
    let resp = reqwest::get(format!("{}/healthz", server.url)).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

/// Opens a WebSocket upgrade on a raw socket and returns the status code of the answer, with
/// the socket (kept open while the caller holds it).
async fn ws_upgrade(addr: &str, bearer: &str) -> (u16, String, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: kith\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: {bearer}\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte))
            .await
            .expect("no answer to the upgrade")
            .unwrap();
        assert_eq!(n, 1, "connection closed before the answer's headers ended");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, tcp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_connections_per_device_are_limited() {
    let config = ServerConfig { max_connections_per_device: 2, ..test_config() };
    let server = TestServer::start_with(config, Arc::new(kith_server::SystemClock)).await;
    let addr = server.url.trim_start_matches("http://").to_string();
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let (s1, _, c1) = ws_upgrade(&addr, &alice.bearer()).await;
    let (s2, _, _c2) = ws_upgrade(&addr, &alice.bearer()).await;
    assert_eq!((s1, s2), (101, 101));
    // The third is refused with a stable code and a Retry-After, before any upgrade.
    let (s3, head, _) = ws_upgrade(&addr, &alice.bearer()).await;
    assert_eq!(s3, 429, "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    // Another device is not affected by alice's limit.
    let (sb, _, _cb) = ws_upgrade(&addr, &bob.bearer()).await;
    assert_eq!(sb, 101);
    // Closing one frees its slot (the server notices the closed socket shortly).
    drop(c1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let _c3 = loop {
        let (s, _, c) = ws_upgrade(&addr, &alice.bearer()).await;
        if s == 101 {
            break c;
        }
        assert_eq!(s, 429);
        assert!(
            std::time::Instant::now() < deadline,
            "the closed connection's slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The refused attempts took no slot, and the new pair is again the limit.
    let (s, _, _) = ws_upgrade(&addr, &alice.bearer()).await;
    assert_eq!(s, 429);
}

#[tokio::test]
async fn queued_messages_per_device_are_limited() {
    let config = ServerConfig { max_queued_per_device: 5, ..test_config() };
    let server = TestServer::start_with(config, Arc::new(kith_server::SystemClock)).await;
    let mut alice = server.user("alice").await;
    let mut bob = server.user("bob").await;
    let mut carol = server.user("carol").await;

    // Bob never fetches: alice's sends fill his queue, then are refused with a stable code.
    let mut accepted = Vec::new();
    let refusal = loop {
        let text = format!("message {}", accepted.len());
        match alice.send_text("bob", &text).await {
            Ok(_) => accepted.push(text),
            Err(e) => break e,
        }
        assert!(accepted.len() < 20, "the limit never applied");
    };
    assert_eq!(refusal.code(), Some(ErrorCode::QueueFull), "{refusal}");
    assert!(refusal.to_string().contains("5 undelivered messages"), "{refusal}");
    assert_eq!(bob.raw_queue().await.len(), 5, "the Welcome and four messages, no more");

    // The answer carries Retry-After (the same ciphertext sent again, raw).
    let conversation = bob.raw_queue().await[1].conversation_id.clone();
    let ciphertext = bob.raw_queue().await[1].data.clone();
    let raw = reqwest::Client::new()
        .post(format!("{}/v1/conversations/{conversation}/messages", server.url))
        .header("authorization", alice.bearer())
        .json(&json!({ "message": ciphertext }))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(raw.headers().contains_key("retry-after"));
    assert_eq!(raw.json::<ErrorBody>().await.unwrap().error.code, ErrorCode::QueueFull);

    // Once bob catches up, alice can write again; he has every accepted message and nothing
    // else.
    let got: Vec<String> = bob.sync().await.unwrap().messages.into_iter().map(|m| m.text).collect();
    assert_eq!(got, accepted);
    alice.send_text("bob", "after catching up").await.unwrap();
    assert_eq!(bob.sync().await.unwrap().messages[0].text, "after catching up");

    // In a group, a full device is left out and the others still get the message.
    let group = alice.create_group("trio", &["bob".into(), "carol".into()]).await.unwrap();
    carol.sync().await.unwrap();
    for i in 0.. {
        alice.send_text("bob", &format!("filler {i}")).await.unwrap();
        if bob.raw_queue().await.len() >= 5 {
            break;
        }
    }
    let before = bob.raw_queue().await.len();
    alice.send_group(&group, "to the group").await.unwrap();
    assert_eq!(bob.raw_queue().await.len(), before, "a full queue grew");
    let at_carol = carol.sync().await.unwrap();
    assert!(at_carol.messages.iter().any(|m| m.text == "to the group"));
    let metrics = reqwest::get(format!("{}/metrics", server.url)).await.unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("queue_full_refusals_total 2"), "{metrics}");
    assert!(metrics.contains("queue_full_skips_total 1"), "{metrics}");
}

/// A masked client text frame, as RFC 6455 wants from a client.
fn client_text_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![0x81];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Whether the server closed the WebSocket within `wait` (a close frame or the end).
async fn closed_within(tcp: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(n)) => {
                // A close frame (opcode 8) from the server, unmasked.
                if buf[..n].first().is_some_and(|b| b & 0x0F == 8) {
                    return true;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_over_the_limit_close_the_connection() {
    use tokio::io::AsyncWriteExt;
    let config = ServerConfig { max_ws_message_bytes: 1024, ..test_config() };
    let server = TestServer::start_with(config, Arc::new(kith_server::SystemClock)).await;
    let addr = server.url.trim_start_matches("http://").to_string();
    let alice = server.user("alice").await;
    let (status, _, mut ws) = ws_upgrade(&addr, &alice.bearer()).await;
    assert_eq!(status, 101);
    // An acknowledgement (a few bytes) is fine; the connection stays.
    ws.write_all(&client_text_frame(br#"{"type":"ack","seqs":[]}"#)).await.unwrap();
    assert!(!closed_within(&mut ws, Duration::from_millis(500)).await);
    // One byte over the limit: the server closes the connection.
    let mut big = br#"{"type":"ack","seqs":["#.to_vec();
    big.resize(1025 - 2, b' ');
    big.extend_from_slice(b"]}");
    assert_eq!(big.len(), 1025);
    ws.write_all(&client_text_frame(&big)).await.unwrap();
    assert!(closed_within(&mut ws, Duration::from_secs(5)).await, "the oversize frame was taken");
    // Exactly the limit is still accepted on a new connection.
    let (_, _, mut ws) = ws_upgrade(&addr, &alice.bearer()).await;
    big.truncate(1024 - 2);
    big.extend_from_slice(b"]}");
    ws.write_all(&client_text_frame(&big)).await.unwrap();
    assert!(!closed_within(&mut ws, Duration::from_millis(500)).await);
}

#[tokio::test]
async fn key_packages_per_upload_and_per_device_are_limited() {
    // Registration uploads the SDK's 50 one-time KeyPackages, so both limits sit above that.
    let config = ServerConfig {
        max_key_packages_per_upload: 60,
        max_key_packages_per_device: 55,
        ..test_config()
    };
    let server = TestServer::start_with(config, Arc::new(kith_server::SystemClock)).await;
    let alice = server.user("alice").await;
    let upload = |n: usize| {
        let body = json!({ "key_packages": vec!["AAAA"; n] });
        reqwest::Client::new()
            .post(format!("{}/v1/key-packages", server.url))
            .header("authorization", alice.bearer())
            .json(&body)
            .send()
    };
    // 61 in one request: over the per-request limit, refused before any is read.
    let r = upload(61).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body = r.json::<ErrorBody>().await.unwrap();
    assert_eq!(body.error.code, ErrorCode::TooManyKeyPackages);
    assert!(body.error.message.contains("at most 60"), "{}", body.error.message);
    // The device holds the 50 from registration: six more would pass its cap of 55.
    let r = upload(6).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body = r.json::<ErrorBody>().await.unwrap();
    assert_eq!(body.error.code, ErrorCode::TooManyKeyPackages);
    assert!(
        body.error.message.contains("at most 55 KeyPackages; it holds 50"),
        "{}",
        body.error.message
    );
}

/// A registration posted again with the token its client chose — even at the same moment as
/// the first, as when a gateway gave up on the first and the client tried again — is answered
/// as registered, once; without that token (someone else, with the same public key) it is
/// refused. Chosen tokens must be 256 bits in hex, and a rotation must change the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_registration_is_answered_once_and_only_to_its_client() {
    let server = TestServer::start().await;
    let provider = openmls_rust_crypto::OpenMlsRustCrypto::default();
    let http = reqwest::Client::new();
    let url = format!("{}/v1/accounts", server.url);
    let mut req = kith_testkit::raw_registration(&provider, "ann");
    req.token = Some(kith_proto::Secret::new("ab".repeat(32)));
    let post = |body: kith_proto::RegisterRequest| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let resp = http.post(url).json(&body).send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let (a, b) = tokio::join!(post(req.clone()), post(req.clone()));
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 201], "{a:?} {b:?}");
    assert_eq!(a.1["device_id"], b.1["device_id"]);
    assert_eq!(server.store().counts().await.unwrap().accounts, 1);
    let (later, _) = post(req.clone()).await;
    assert_eq!(later, 200);

    // The same name and public key with another token, or none: taken.
    let mut other = req.clone();
    other.token = Some(kith_proto::Secret::new("cd".repeat(32)));
    for token in [other.token.clone(), None] {
        other.token = token;
        let (status, body) = post(other.clone()).await;
        assert_eq!((status, body["error"]["code"].as_str()), (409, Some("username_taken")));
    }
    // Tokens that are not 256 bits in lowercase hex are refused with a code.
    for bad in ["", "AB".repeat(32).as_str(), "ab".repeat(31).as_str(), "zz".repeat(32).as_str()] {
        let mut fresh = kith_testkit::raw_registration(&provider, "bea");
        fresh.token = Some(kith_proto::Secret::new(bad.to_string()));
        let (status, body) = post(fresh).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{bad:?}");
    }

    // A rotation to the token in use changes nothing and is refused.
    let mut bob = server.user("bob").await;
    let current = bob.bearer();
    let token = current.rsplit(':').next().unwrap().to_string();
    let same = bob.rotation_request_to(&token);
    let resp = http
        .post(format!("{}/v1/me/token", server.url))
        .header("authorization", &current)
        .json(&same)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    bob.sync().await.unwrap();
}

/// An account key is a valid Ed25519 public key or nothing: a malformed one, or one of small
/// order (under which anything verifies), is refused and no account is made; a good one is
/// what the account's device list says from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_key_is_checked_at_registration_and_listed_with_the_devices() {
    let server = TestServer::start().await;
    let provider = openmls_rust_crypto::OpenMlsRustCrypto::default();
    let http = reqwest::Client::new();
    let post = |body: kith_proto::RegisterRequest| {
        let (http, url) = (http.clone(), format!("{}/v1/accounts", server.url));
        async move {
            let resp = http.post(url).json(&body).send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let mut small_order = [0u8; 32];
    small_order[0] = 1;
    for bad in [vec![7u8; 31], small_order.to_vec()] {
        let mut req = kith_testkit::raw_registration(&provider, "ann");
        req.account_key = Some(kith_proto::B64(bad));
        let (status, body) = post(req).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{body}");
    }
    assert_eq!(server.store().counts().await.unwrap().accounts, 0);
    let reader = server.user("cyd").await;
    let devices = |name: &'static str| {
        let (http, url) = (http.clone(), format!("{}/v1/accounts/{name}/devices", server.url));
        let bearer = reader.bearer();
        async move {
            let resp = http.get(url).header("authorization", bearer).send().await.unwrap();
            resp.json::<Value>().await.unwrap()
        }
    };

    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let public = kith_proto::account::public_key(&key);
    let mut req = kith_testkit::raw_registration(&provider, "ann");
    req.account_key = Some(kith_proto::B64(public.clone()));
    // With an account key, KeyPackages follow the registration (certified for the device id
    // it gives): none may come with it.
    let (status, body) = post(req.clone()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{body}");
    req.last_resort_key_package = None;
    let (status, body) = post(req).await;
    assert_eq!(status, 201, "{body}");
    let list = devices("ann").await;
    assert_eq!(list["account_key"], kith_proto::B64::encode(&public), "{list}");
    // An account from before account keys lists none.
    let (status, _) = post(kith_testkit::raw_registration(&provider, "bea")).await;
    assert_eq!(status, 201);
    let list = devices("bea").await;
    assert!(list.get("account_key").is_none(), "{list}");
}

/// `PUT /v1/me/account-key` gives an account from before account keys its key, once: the
/// same key again is answered as set; another is refused; a malformed one too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_key_is_given_once() {
    let server = TestServer::start().await;
    let ann = server.user("ann").await;
    let http = reqwest::Client::new();
    let put = |key: Vec<u8>| {
        let (http, url) = (http.clone(), format!("{}/v1/me/account-key", server.url));
        let bearer = ann.bearer();
        async move {
            let body = serde_json::json!({ "account_key": kith_proto::B64::encode(&key) });
            let resp = http.put(url).header("authorization", bearer).json(&body).send().await;
            let resp = resp.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let own = ann.account_key().unwrap().unwrap();
    assert_eq!(put(own.clone()).await.0, 200);
    let other = kith_proto::account::public_key(&ed25519_dalek::SigningKey::from_bytes(&[5; 32]));
    let (status, body) = put(other).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    let (status, body) = put(vec![1; 31]).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("bad_request")), "{body}");
    let listed = server.store().account_devices("ann").await.unwrap().unwrap().account_key;
    assert_eq!(listed, Some(own));
}

/// A device's name and when it was last seen are its account's alone: the public device list
/// shows neither; "last seen" is written when the device is seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_names_and_last_seen_are_the_account_s_alone() {
    let server = TestServer::start().await;
    let mut ann = server.user("ann").await;
    let mut bea = server.user("bea").await;
    let id = ann.my_devices().await.unwrap()[0].device_id;
    ann.rename_device(id, Some("phone")).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let seen = loop {
        let mine = ann.my_devices().await.unwrap();
        if let Some(at) = mine[0].last_seen {
            break at;
        }
        assert!(std::time::Instant::now() < deadline, "never seen: {mine:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(seen > 0);
    let public: Value = reqwest::Client::new()
        .get(format!("{}/v1/accounts/ann/devices", server.url))
        .header("authorization", bea.bearer())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let device = &public["devices"][0];
    assert!(device.get("name").is_none() && device.get("last_seen").is_none(), "{public}");
    assert!(!public.to_string().contains("phone"), "{public}");
    // Bea's own list holds only her device.
    assert_eq!(bea.my_devices().await.unwrap().len(), 1);
}
