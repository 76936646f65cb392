//! The authorisation matrix, driven by the OpenAPI document: every operation that needs a
//! token is called with none, a malformed one, a wrong one, another account's and a suspended
//! account's; no answer is a 5xx and none carries another account's data.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use kith_testkit::TestServer;
use reqwest::Method;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protected_operation_refuses_the_wrong_caller() {
    let server = TestServer::start().await;
    let mut alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let dave = server.user("dave").await;
    let carol = server.user("carol").await;
    alice.send_text("bob", "private to bob").await.unwrap();
    let conversation = bob.raw_queue().await[0].conversation_id.clone();
    let secret_ciphertext = serde_json::to_string(&bob.raw_queue().await[1].data).unwrap();
    server.store().set_suspended("carol", Some("test".into())).await.unwrap();
    server.state.auth_cache.forget_account("carol");
    let secrets = [
        secret_ciphertext.trim_matches('"').to_string(),
        bob.bearer().trim_start_matches("Bearer ").split(':').nth(1).unwrap().to_string(),
        alice.bearer().trim_start_matches("Bearer ").split(':').nth(1).unwrap().to_string(),
    ];

    let http = reqwest::Client::new();
    let doc: Value = http
        .get(format!("{}/v1/openapi.json", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let alice_device = alice.profile().unwrap().device_id;
    let callers = [
        ("no token", None, 401, "unauthorized"),
        ("malformed", Some("Bearer not-a-token".to_string()), 401, "unauthorized"),
        (
            "wrong token",
            Some(format!("Bearer {alice_device}:{}", "ab".repeat(32))),
            401,
            "unauthorized",
        ),
        ("suspended", Some(carol.bearer()), 403, "suspended"),
    ];
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if op.get("security").is_none() {
                continue; // registration and the operations endpoints are open by design
            }
            let url = format!(
                "{}{}",
                server.url,
                path.replace("{username}", "bob").replace("{id}", &conversation)
            );
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let call = |auth: Option<String>| {
                let mut req = http.request(method.clone(), &url).body("{}");
                if let Some(a) = auth {
                    req = req.header("authorization", a);
                }
                req.send()
            };
            for (who, auth, status, code) in &callers {
                let resp = call(auth.clone()).await.unwrap();
                assert_eq!(resp.status().as_u16(), *status, "{method} {path} as {who}");
                let body: Value = resp.json().await.unwrap();
                assert_eq!(body["error"]["code"], *code, "{method} {path} as {who}");
            }
            // Another account's valid token: whatever it gets, never a 5xx and never bob's
            // queue, ciphertext or anyone's token.
            let resp = call(Some(dave.bearer())).await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            assert!(status < 500, "{method} {path} as another account: {status} {text}");
            for s in &secrets {
                assert!(
                    !text.contains(s.as_str()),
                    "{method} {path} leaked to another account: {text}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} protected operations found in the document");
    // Bob still has his message: nothing above consumed it.
    assert_eq!(bob.raw_queue().await.len(), 2);
}
