//! HTTPS and WSS: kithd with a certificate the test makes; kith trusts it through
//! `--ca-cert`, and refuses a server whose certificate it has no reason to trust.

#![allow(clippy::unwrap_used)] // a panic in a test is a failed test

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use kith_client::{AccountKind, Client};
use kith_testkit::ChildKithd;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// A CA, and a certificate for 127.0.0.1 signed by it: (ca pem, cert pem, key pem).
fn certificates() -> (String, String, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

fn start_tls(dir: &Path, cert: &str, key: &str) -> (ChildKithd, String) {
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
    let args: Vec<OsString> = vec![
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data".into(),
        dir.join("store").into(),
        "--tls-cert".into(),
        dir.join("cert.pem").into(),
        "--tls-key".into(),
        dir.join("key.pem").into(),
    ];
    let log = dir.join("kithd.log");
    let kithd = ChildKithd::start(Path::new(env!("CARGO_BIN_EXE_kithd")), &args, &[], &log);
    assert!(std::fs::read_to_string(&log).unwrap().contains("https"));
    let url = format!("https://{}", kithd.addr);
    (kithd, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_with_a_trusted_ca_and_refusals_without() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates();
    let (_kithd, url) = start_tls(dir.path(), &cert, &key);

    let open = |name: &str| Client::open(dir.path().join(name)).unwrap();
    let mut alice = open("alice");
    alice.trust_ca_pem(&ca).unwrap();
    alice.register(&url, "alice", AccountKind::Person).await.unwrap();
    let mut bob = open("bob");
    bob.trust_ca_pem(&ca).unwrap();
    bob.register(&url, "bob", AccountKind::Person).await.unwrap();

    // WSS push and HTTPS requests both work, and the CA stays in the profile.
    let mut push = bob.connect_push().await.unwrap();
    alice.send_text("bob", "over TLS").await.unwrap();
    let mut texts = Vec::new();
    while texts.is_empty() {
        let r = tokio::time::timeout(Duration::from_secs(10), bob.receive_push(&mut push))
            .await
            .unwrap()
            .unwrap();
        texts.extend(r.messages.into_iter().map(|m| m.text));
    }
    assert_eq!(texts, ["over TLS"]);
    drop(bob);
    let mut bob = open("bob");
    bob.send_text("alice", "still over TLS").await.unwrap();
    assert_eq!(alice.sync().await.unwrap().messages[0].text, "still over TLS");

    // Without the CA, or with another one, the certificate is refused.
    let mut stranger = open("stranger");
    let err = stranger.register(&url, "stranger", AccountKind::Person).await.unwrap_err();
    assert!(err.to_string().contains("cannot reach the server"), "{err}");
    let (other_ca, _, _) = certificates();
    let mut fooled = open("fooled");
    fooled.trust_ca_pem(&other_ca).unwrap();
    assert!(fooled.register(&url, "fooled", AccountKind::Person).await.is_err());
    assert!(open("x").trust_ca_pem("not a certificate").is_err());
}
