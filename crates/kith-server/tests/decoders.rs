//! The server's decoders of untrusted bytes are total: MLS framing, Welcomes, KeyPackages,
//! group state, franking commitments. Arbitrary input is refused with an error, never a panic.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use kith_server::groups::state::Tracked;
use kith_server::mls;
use kith_server::safety::franking::commitment_of;
use openmls_rust_crypto::OpenMlsRustCrypto;
use proptest::prelude::*;

proptest! {
    #![proptest_config(kith_testkit::proptest_config(3000))]

    #[test]
    fn mls_decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let crypto = OpenMlsRustCrypto::default();
        let _ = mls::check_application_message(&bytes, &[0; 16]);
        let _ = mls::check_welcome(&bytes);
        let owner = mls::Owner { account: "alice", account_key: Some(&[7; 32]), device: Some(1) };
        let _ = mls::check_key_package(&crypto, &bytes, &owner, &[0; 32], mls::Slot::OneTime);
        let _ = commitment_of(&bytes);
        let half = bytes.len() / 2;
        let _ = Tracked::bootstrap(&crypto, &[0; 16], &bytes[..half], &bytes[half..]);
        let _ = Tracked::load(&[0; 16], &bytes);
    }

    /// Inputs that start like MLS messages (version 1, each wire format) reach deeper.
    #[test]
    fn mls_shaped_input_never_panics(
        wire in 1u16..=5,
        body in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut bytes = vec![0, 1];
        bytes.extend_from_slice(&wire.to_be_bytes());
        bytes.extend_from_slice(&body);
        let _ = mls::check_application_message(&bytes, &[0; 16]);
        let _ = mls::check_welcome(&bytes);
        let _ = commitment_of(&bytes);
    }
}
