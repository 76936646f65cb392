//! What a client decodes after decryption: payloads, franked payloads and the group
//! extension. Whatever decodes must encode back to the same value.
#![no_main]

use kith_proto::GroupMeta;
use kith_proto::payload::{Franked, Payload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Some(p) = Payload::decode(bytes) {
        assert_eq!(Payload::decode(&p.encode()), Some(p));
    }
    if let Some(f) = Franked::decode(bytes) {
        assert_eq!(Franked::decode(&f.encode()), Some(f));
    }
    let _ = GroupMeta::decode(bytes);
});
