//! Every decoder of untrusted input is total: arbitrary bytes are refused or accepted, never a
//! panic; and what a decoder accepts, its encoder gives back. (Seeded property tests; see
//! docs/testing.md.)

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use kith_proto::payload::{Franked, Payload};
use kith_proto::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(kith_testkit::proptest_config(2000))]

    #[test]
    fn payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Some(p) = Payload::decode(&bytes) {
            prop_assert_eq!(Payload::decode(&p.encode()), Some(p));
        }
        if let Some(f) = Franked::decode(&bytes) {
            prop_assert_eq!(Franked::decode(&f.encode()), Some(f));
        }
        let _ = GroupMeta::decode(&bytes);
    }

    #[test]
    fn json_shaped_payloads_never_panic(text in r#"\{("[a-z_]{1,8}":("[ -~]{0,12}"|[0-9]{1,3}|null),?){0,6}\}"#) {
        let _ = Payload::decode(text.as_bytes());
        let _ = Franked::decode(text.as_bytes());
        let _ = GroupMeta::decode(text.as_bytes());
        let _ = serde_json::from_str::<RegisterRequest>(&text);
        let _ = serde_json::from_str::<ReportRequest>(&text);
        let _ = serde_json::from_str::<ClientFrame>(&text);
    }

    #[test]
    fn ids_never_panic(text in r"\PC{0,80}") {
        let _ = validate_username(&text);
        if let Ok(id) = ConversationId::parse(&text) {
            prop_assert_eq!(ConversationId::parse(&id.to_hex()).unwrap(), id);
        }
    }

    #[test]
    fn base64_fields_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let json = serde_json::to_string(&B64(bytes.clone())).unwrap();
        prop_assert_eq!(serde_json::from_str::<B64>(&json).unwrap().0, bytes);
    }

    #[test]
    fn wire_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = serde_json::from_slice::<ServerFrame>(&bytes);
        let _ = serde_json::from_slice::<ClientFrame>(&bytes);
        let _ = serde_json::from_slice::<FetchResponse>(&bytes);
        let _ = serde_json::from_slice::<ErrorBody>(&bytes);
    }
}
