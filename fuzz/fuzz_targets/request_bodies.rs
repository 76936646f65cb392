//! Request bodies through the server's own extractor (`kith_server::extract::Body`), for every
//! JSON body the API takes: refused with a stable code, never a panic.
#![no_main]

use axum::extract::FromRequest;
use kith_proto::*;
use kith_server::extract::Body;
use libfuzzer_sys::fuzz_target;

async fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) {
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(bytes.to_vec()))
        .unwrap();
    if let Err(e) = Body::<T>::from_request(request, &()).await {
        // Every refusal is a client error with a code, never a server error.
        assert!(e.code.status() < 500, "{:?}", e.code);
    }
}

fuzz_target!(|bytes: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        decode::<RegisterRequest>(bytes).await;
        decode::<UploadKeyPackages>(bytes).await;
        decode::<CreateConversation>(bytes).await;
        decode::<SendMessage>(bytes).await;
        decode::<HandshakeRequest>(bytes).await;
        decode::<AckRequest>(bytes).await;
        decode::<ReportRequest>(bytes).await;
        decode::<BlockRequest>(bytes).await;
    });
    if let Ok(text) = std::str::from_utf8(bytes)
        && let Ok(id) = ConversationId::parse(text)
    {
        assert_eq!(ConversationId::parse(&id.to_hex()).unwrap(), id);
    }
});
