//! The server's parsing of MLS: message framing, Welcomes, KeyPackages, group state and
//! franking commitments.
#![no_main]

use kith_server::groups::state::Tracked;
use kith_server::mls;
use kith_server::safety::franking::commitment_of;
use libfuzzer_sys::fuzz_target;
use openmls_rust_crypto::OpenMlsRustCrypto;

fuzz_target!(|bytes: &[u8]| {
    let crypto = OpenMlsRustCrypto::default();
    let _ = mls::check_application_message(bytes, &[0; 16]);
    let _ = mls::check_welcome(bytes);
    let _ = mls::check_key_package(&crypto, bytes, "alice", &[0; 32]);
    let _ = commitment_of(bytes);
    let half = bytes.len() / 2;
    let _ = Tracked::bootstrap(&crypto, &[0; 16], &bytes[..half], &bytes[half..]);
    let _ = Tracked::load(&[0; 16], bytes);
});
