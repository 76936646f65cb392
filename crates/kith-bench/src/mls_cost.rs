//! `mls`: what the SDK adds over raw OpenMLS for one message, on the same storage.
//!
//! - raw OpenMLS in memory (`OpenMlsRustCrypto`);
//! - raw OpenMLS on `openmls_sqlite_storage` in a WAL-mode SQLite file, as the SDK uses;
//! - the SDK: framing, franking (HMAC commitment and Ed25519 signature), MLS, and on receipt
//!   the commitment and signature checks, decryption and storing the message durably in one
//!   transaction.
//!
//! The large-group costs (add 1000, Welcome, update commit) are the `groups` scenario.

use std::time::Instant;

use kith_client::{AccountKind, CIPHERSUITE, JsonCodec};
use kith_proto::{B64, EntryKind, FrankTag, QueueEntry};
use kith_testkit::{TestServer, TestUser};
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::{OpenMlsRustCrypto, RustCrypto};
use openmls_sqlite_storage::{Connection, SqliteStorageProvider};
use openmls_traits::OpenMlsProvider;
use serde_json::json;

use crate::report::Report;

/// OpenMLS on a SQLite file, the way the SDK stores it.
struct SqliteProvider {
    crypto: RustCrypto,
    storage: SqliteStorageProvider<JsonCodec, Connection>,
}

impl OpenMlsProvider for SqliteProvider {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = SqliteStorageProvider<JsonCodec, Connection>;
    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }
    fn crypto(&self) -> &Self::CryptoProvider {
        &self.crypto
    }
    fn rand(&self) -> &Self::RandProvider {
        &self.crypto
    }
}

fn sqlite_provider(path: &std::path::Path) -> anyhow::Result<SqliteProvider> {
    let conn = Connection::open(path)?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
    let mut storage = SqliteStorageProvider::<JsonCodec, Connection>::new(conn);
    storage.run_migrations()?;
    Ok(SqliteProvider { crypto: RustCrypto::default(), storage })
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("{e:?}")
}

/// Encrypt and decrypt `n` messages between two raw OpenMLS members. Returns µs per op.
fn raw_pair<P: OpenMlsProvider>(a: &P, b: &P, n: usize, text: &[u8]) -> anyhow::Result<(f64, f64)> {
    let party = |p: &P, name: &str| -> anyhow::Result<(SignatureKeyPair, CredentialWithKey)> {
        let signer = SignatureKeyPair::new(SignatureScheme::ED25519).map_err(err)?;
        signer.store(p.storage()).map_err(|_| anyhow::anyhow!("store signer")).map_err(err)?;
        let cred = CredentialWithKey {
            credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
            signature_key: signer.public().into(),
        };
        Ok((signer, cred))
    };
    let (sa, ca) = party(a, "a").map_err(err)?;
    let (sb, cb) = party(b, "b").map_err(err)?;
    let kp = KeyPackage::builder().build(CIPHERSUITE, b, &sb, cb)?.key_package().clone();
    let config = MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .wire_format_policy(MIXED_PLAINTEXT_WIRE_FORMAT_POLICY)
        .use_ratchet_tree_extension(true)
        .build();
    let mut ga = MlsGroup::new(a, &sa, &config, ca).map_err(err)?;
    let (_, welcome, _) = ga.add_members(a, &sa, &[kp]).map_err(err)?;
    ga.merge_pending_commit(a).map_err(err)?;
    let MlsMessageBodyIn::Welcome(w) = MlsMessageIn::from(welcome).extract() else {
        anyhow::bail!("not a welcome");
    };
    let join = MlsGroupJoinConfig::builder().use_ratchet_tree_extension(true).build();
    let mut gb = StagedWelcome::new_from_welcome(b, &join, w, None)
        .map_err(err)?
        .into_group(b)
        .map_err(err)?;

    let t = Instant::now();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(ga.create_message(a, &sa, text)?.tls_serialize_detached()?);
    }
    let enc = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let t = Instant::now();
    for m in out {
        let msg = MlsMessageIn::tls_deserialize_exact_bytes(&m).map_err(err)?;
        gb.process_message(b, msg.try_into_protocol_message()?).map_err(err)?;
    }
    let dec = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    Ok((enc, dec))
}

pub async fn run(n: usize, bytes: usize) -> anyhow::Result<Report> {
    let mut report = Report::new("mls");
    report.context("messages", json!(n));
    report.context("message_text_bytes", json!(bytes));
    let text = "x".repeat(bytes);

    let (mem_enc, mem_dec) =
        raw_pair(&OpenMlsRustCrypto::default(), &OpenMlsRustCrypto::default(), n, text.as_bytes())?;
    let dir = tempfile::tempdir()?;
    let (pa, pb) =
        (sqlite_provider(&dir.path().join("a.db"))?, sqlite_provider(&dir.path().join("b.db"))?);
    let (sql_enc, sql_dec) = raw_pair(&pa, &pb, n, text.as_bytes())?;

    // The SDK: two real profiles in a conversation made through a real server.
    let server = TestServer::start().await;
    let mut alice = TestUser::register(&server.url, "alice", AccountKind::Person).await;
    let mut bob = TestUser::register(&server.url, "bob", AccountKind::Person).await;
    let conv = alice.direct_conversation("bob").await?;
    bob.sync().await?;
    let bob_device = bob.profile().map(|p| p.device_id).unwrap_or_default();
    let alice_device = alice.profile().map(|p| p.device_id).unwrap_or_default();
    let t = Instant::now();
    let mut sealed = Vec::with_capacity(n);
    for _ in 0..n {
        sealed.push(alice.encrypt_for_bench(&conv, &text)?);
    }
    let sdk_enc = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let entries: Vec<QueueEntry> = sealed
        .into_iter()
        .enumerate()
        .map(|(i, data)| QueueEntry {
            seq: i as u64 + 1_000_000,
            message_id: i as u64 + 1_000_000,
            conversation_id: conv.clone(),
            kind: EntryKind::Message,
            sender: "alice".into(),
            sender_device: alice_device,
            sender_kind: AccountKind::Person,
            sender_verified: false,
            data: B64(data),
            server_time: 0,
            expires_at: None,
            // Shown only with a tag (its content is the server's business).
            frank: Some(FrankTag { key_id: 1, epoch: 0, tag: B64(vec![0; 32]) }),
        })
        .collect();
    let t = Instant::now();
    let got = bob.receive_entries(&entries).await?;
    let sdk_dec = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    anyhow::ensure!(got.messages.len() == n, "bob decrypted {} of {n}", got.messages.len());
    let _ = bob_device;
    server.stop().await;

    report.figure("raw_memory_encrypt_us", mem_enc, "µs", "raw OpenMLS, in memory: encrypt");
    report.figure("raw_memory_decrypt_us", mem_dec, "µs", "raw OpenMLS, in memory: decrypt");
    report.figure("raw_sqlite_encrypt_us", sql_enc, "µs", "raw OpenMLS, SQLite storage: encrypt");
    report.figure("raw_sqlite_decrypt_us", sql_dec, "µs", "raw OpenMLS, SQLite storage: decrypt");
    report.figure("sdk_encrypt_us", sdk_enc, "µs", "SDK: frame, frank, encrypt");
    report.figure("sdk_decrypt_us", sdk_dec, "µs", "SDK: check, decrypt, store durably");
    report.figure("sdk_encrypt_per_s", 1e6 / sdk_enc, "msg/s", "SDK encrypt rate");
    report.figure("sdk_decrypt_per_s", 1e6 / sdk_dec, "msg/s", "SDK decrypt-and-store rate");
    report.figure(
        "sdk_over_raw_encrypt",
        sdk_enc / sql_enc,
        "×",
        "SDK ÷ raw on the same storage: encrypt",
    );
    report.figure(
        "sdk_over_raw_decrypt",
        sdk_dec / sql_dec,
        "×",
        "SDK ÷ raw on the same storage: decrypt",
    );
    Ok(report)
}
