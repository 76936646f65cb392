//! WebSocket frames both ways, and every JSON answer a client parses from the server.
#![no_main]

use kith_proto::*;
use libfuzzer_sys::fuzz_target;

/// What decodes, encodes to JSON that decodes to the same thing.
fn round_trips<T>(bytes: &[u8])
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    if let Ok(value) = serde_json::from_slice::<T>(bytes) {
        let first = serde_json::to_value(&value).unwrap();
        let again: T = serde_json::from_value(first.clone()).unwrap();
        assert_eq!(serde_json::to_value(&again).unwrap(), first);
    }
}

fuzz_target!(|bytes: &[u8]| {
    round_trips::<ClientFrame>(bytes);
    round_trips::<ServerFrame>(bytes);
    let _ = serde_json::from_slice::<ErrorBody>(bytes);
    round_trips::<FetchResponse>(bytes);
    let _ = serde_json::from_slice::<ClaimResponse>(bytes);
    let _ = serde_json::from_slice::<CreateConversationResponse>(bytes);
    let _ = serde_json::from_slice::<HandshakeResponse>(bytes);
    let _ = serde_json::from_slice::<SendResponse>(bytes);
    let _ = serde_json::from_slice::<RegisterResponse>(bytes);
    let _ = serde_json::from_slice::<DeviceList>(bytes);
    let _ = serde_json::from_slice::<BusinessSearch>(bytes);
});
