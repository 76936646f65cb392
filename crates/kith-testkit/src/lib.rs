//! Test fixtures shared by every crate's tests: a real `kithd` on a loopback port, and users
//! with profiles in temporary folders.
//!
//! - [`TestServer::start`]: the server in-process on `127.0.0.1:0` with SQLite in a temporary
//!   folder; [`TestServer::start_postgres`] the same on PostgreSQL (`None` when
//!   `KITH_TEST_DATABASE_URL` is unset);
//! - [`FaultProxy`]: a TCP proxy that cuts, stalls and restores a path (to the database, to
//!   `kithd`); [`AnswerLoser`]: an HTTP proxy that lets `kithd` carry a request out and loses
//!   its answer;
//! - [`TestUser`]: a registered [`Client`] and its profile folder;
//! - [`Rng`]: a seeded generator for simulations and model-based tests, and
//!   [`proptest_config`]: the property tests' fixed seed and case count;
//! - [`hostile`]: a hostile client — messages a normal client never sends, built with
//!   OpenMLS from a real member's state and posted straight to `kithd`.
#![allow(clippy::unwrap_used)]

mod fault;
pub mod hostile;
mod lose;
pub use fault::FaultProxy;
pub use lose::{AnswerLoser, AnswerRewrite, HostileServer, Rewrite};

use std::sync::Arc;

use kith_client::{AccountKind, Client};
use kith_server::AppState;
pub use kith_server::{Clock, ManualClock, ServerConfig, SystemClock};
use kith_store::Store;
use tempfile::TempDir;
use tokio::sync::oneshot;

/// `KITH_TEST_DATABASE_URL`, or `None` after saying the PostgreSQL run is skipped.
fn database_url() -> Option<String> {
    let url = std::env::var("KITH_TEST_DATABASE_URL").ok();
    if url.is_none() {
        eprintln!(
            "skipped: KITH_TEST_DATABASE_URL is not set, so the PostgreSQL run did not happen"
        );
    }
    url
}

/// The default settings, with registrations from one address unlimited.
pub fn test_config() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.safety.registrations_per_ip_per_hour = u32::MAX;
    config.safety.registration_attempts_per_ip_per_hour = u32::MAX;
    // Keys are published within a tick: clients wait for them before using them.
    config.kt_publish_interval = std::time::Duration::from_millis(50);
    config
}

/// A running server. Dropping it stops the server (without waiting).
pub struct TestServer {
    pub url: String,
    pub state: AppState,
    pub data: TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// How to open the same store again, for [`TestServer::restart`].
    reopen: Option<Reopen>,
}

/// A test server that is down (see [`TestServer::down`]).
pub struct Down {
    reopen: Reopen,
    addr: std::net::SocketAddr,
    config: ServerConfig,
    clock: Arc<dyn Clock>,
    data: TempDir,
}

impl Down {
    /// Starts the server again on the same address with the same data (its store opened anew,
    /// nothing kept in memory).
    pub async fn up(self) -> TestServer {
        let Down { reopen, addr, config, clock, data } = self;
        let store: Arc<dyn Store> = match &reopen {
            Reopen::Sqlite(path) => Arc::new(kith_store_sqlite::SqliteStore::open(path).unwrap()),
            Reopen::Postgres { url, schema } => Arc::new(
                kith_store_postgres::PgStore::connect_in_schema(url, schema).await.unwrap(),
            ),
        };
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(_) if tries < 50 => {
                    // The old listener's port is not free yet.
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("could not listen on {addr} again: {e}"),
            }
        };
        let mut server = TestServer::serve_on(listener, store, config, clock, data).await;
        server.reopen = Some(reopen);
        server
    }
}

/// Where a test server's data lives, to open it again after a restart.
#[derive(Clone)]
enum Reopen {
    Sqlite(std::path::PathBuf),
    Postgres { url: String, schema: String },
}

impl TestServer {
    /// SQLite in a temporary folder, the wall clock, default settings — but for the per-IP
    /// registration limit, since every test user registers from 127.0.0.1.
    pub async fn start() -> Self {
        Self::start_with(test_config(), Arc::new(SystemClock)).await
    }

    /// SQLite in a temporary folder with these settings (listen and data are replaced).
    pub async fn start_with(config: ServerConfig, clock: Arc<dyn Clock>) -> Self {
        let data = tempfile::tempdir().unwrap();
        let path = data.path().join("kithd.db");
        let store = kith_store_sqlite::SqliteStore::open(&path).unwrap();
        let mut server = Self::serve(Arc::new(store), config, clock, data).await;
        server.reopen = Some(Reopen::Sqlite(path));
        server
    }

    /// PostgreSQL in a fresh schema of `KITH_TEST_DATABASE_URL`; `None` (after saying so) when
    /// the variable is unset.
    pub async fn start_postgres() -> Option<Self> {
        Self::start_postgres_with(test_config()).await
    }

    /// The same with these settings (listen and data are replaced).
    pub async fn start_postgres_with(config: ServerConfig) -> Option<Self> {
        let url = database_url()?;
        let (store, schema) =
            kith_store_postgres::PgStore::connect_fresh_schema(&url).await.unwrap();
        let data = tempfile::tempdir().unwrap();
        let mut server = Self::serve(Arc::new(store), config, Arc::new(SystemClock), data).await;
        server.reopen = Some(Reopen::Postgres { url, schema });
        Some(server)
    }

    /// `n` servers sharing one fresh schema of `KITH_TEST_DATABASE_URL`, as nodes of one
    /// deployment behind a load balancer would; `None` (after saying so) when the variable is
    /// unset.
    pub async fn start_postgres_nodes(n: usize) -> Option<Vec<Self>> {
        Self::start_postgres_nodes_with(n, test_config()).await
    }

    /// The same with these settings (listen and data are replaced).
    pub async fn start_postgres_nodes_with(n: usize, config: ServerConfig) -> Option<Vec<Self>> {
        let url = database_url()?;
        let (first, schema) =
            kith_store_postgres::PgStore::connect_fresh_schema(&url).await.unwrap();
        let mut stores = vec![first];
        for _ in 1..n {
            stores.push(
                kith_store_postgres::PgStore::connect_in_schema(&url, &schema).await.unwrap(),
            );
        }
        let mut nodes = Vec::with_capacity(n);
        for store in stores {
            let data = tempfile::tempdir().unwrap();
            let mut node =
                Self::serve(Arc::new(store), config.clone(), Arc::new(SystemClock), data).await;
            node.reopen = Some(Reopen::Postgres { url: url.clone(), schema: schema.clone() });
            nodes.push(node);
        }
        Some(nodes)
    }

    /// PostgreSQL in a fresh schema of `KITH_TEST_DATABASE_URL`, reached through a
    /// [`FaultProxy`] the test can cut; `None` (after saying so) when the variable is unset.
    pub async fn start_postgres_behind_proxy() -> Option<(Self, FaultProxy)> {
        Self::start_postgres_behind_proxy_with(test_config()).await
    }

    /// The same with these settings (listen and data are replaced).
    pub async fn start_postgres_behind_proxy_with(
        config: ServerConfig,
    ) -> Option<(Self, FaultProxy)> {
        let url = database_url()?;
        let (store, schema) =
            kith_store_postgres::PgStore::connect_fresh_schema(&url).await.unwrap();
        drop(store);
        let mut via = reqwest::Url::parse(&url).unwrap();
        let host = via.host_str().unwrap_or("127.0.0.1").to_string();
        let port = via.port().unwrap_or(5432);
        let target = tokio::net::lookup_host((host.as_str(), port)).await.unwrap().next().unwrap();
        let proxy = FaultProxy::start(target).await.unwrap();
        via.set_host(Some("127.0.0.1")).unwrap();
        via.set_port(Some(proxy.addr.port())).unwrap();
        via.query_pairs_mut().append_pair("options", &format!("-csearch_path={schema}"));
        let store = kith_store_postgres::PgStore::connect(via.as_str()).await.unwrap();
        let data = tempfile::tempdir().unwrap();
        Some((Self::serve(Arc::new(store), config, Arc::new(SystemClock), data).await, proxy))
    }

    async fn serve(
        store: Arc<dyn Store>,
        config: ServerConfig,
        clock: Arc<dyn Clock>,
        data: TempDir,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve_on(listener, store, config, clock, data).await
    }

    async fn serve_on(
        listener: tokio::net::TcpListener,
        store: Arc<dyn Store>,
        mut config: ServerConfig,
        clock: Arc<dyn Clock>,
        data: TempDir,
    ) -> Self {
        let addr = listener.local_addr().unwrap();
        config.listen = addr;
        config.data = data.path().to_path_buf();
        let state = AppState::build(store, config, clock).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(kith_server::run(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        TestServer {
            url: format!("http://{addr}"),
            state,
            data,
            stop: Some(stop),
            task: Some(task),
            reopen: None,
        }
    }

    /// Stops the server gracefully and starts it again on the same address with the same data
    /// (its store opened anew, nothing kept in memory), as `kithd` restarted by an operator.
    pub async fn restart(self) -> Self {
        self.down().await.up().await
    }

    /// Stops the server gracefully; [`Down::up`] starts it again on the same address with the
    /// same data. Meanwhile its address answers nothing (a server that is down).
    pub async fn down(mut self) -> Down {
        let reopen = self.reopen.clone().expect("a server started on a store it can reopen");
        let addr = self.state.config.listen;
        let config = (*self.state.config).clone();
        let clock = self.state.clock.clone();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
        let data = std::mem::replace(&mut self.data, tempfile::tempdir().unwrap());
        drop(self);
        Down { reopen, addr, config, clock, data }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.state.store
    }

    /// Stops the server gracefully and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// An [`AnswerLoser`] in front of this server (register users at its [`AnswerLoser::url`]).
    pub async fn answer_loser(&self) -> AnswerLoser {
        let target = self.state.config.listen;
        AnswerLoser::start(target).await.unwrap()
    }

    /// A user whose calls go through a new [`AnswerLoser`] in front of this server.
    pub async fn user_losing_answers(&self, name: &str) -> (AnswerLoser, TestUser) {
        let proxy = self.answer_loser().await;
        let user = TestUser::register(&proxy.url(), name, AccountKind::Person).await;
        (proxy, user)
    }

    /// Registers a user with a fresh profile folder.
    pub async fn user(&self, name: &str) -> TestUser {
        TestUser::register(&self.url, name, AccountKind::Person).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A registered client and the folder that holds its profile.
pub struct TestUser {
    pub client: Client,
    pub dir: TempDir,
}

impl TestUser {
    pub async fn register(url: &str, name: &str, kind: AccountKind) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut client = Client::open(dir.path()).unwrap();
        client.register(url, name, kind).await.unwrap();
        TestUser { client, dir }
    }
}

impl TestUser {
    /// The device's `Authorization` header value, as only the device itself has it (the
    /// SDK hands it out through its `hostile` feature only).
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.raw_bearer().unwrap().expose())
    }

    /// A signed token rotation request, as only the device itself can make.
    pub fn rotation_request(&self) -> kith_proto::RotateTokenRequest {
        self.rotation(None)
    }

    /// The same, asking for `token` as the new one.
    pub fn rotation_request_to(&self, token: &str) -> kith_proto::RotateTokenRequest {
        self.rotation(Some(token))
    }

    fn rotation(&self, chosen: Option<&str>) -> kith_proto::RotateTokenRequest {
        use openmls::prelude::{HashType, OpenMlsCrypto as _};
        let bearer = self.bearer();
        let token = bearer.rsplit(':').next().unwrap();
        let crypto = openmls_rust_crypto::RustCrypto::default();
        let hash = |t: &str| crypto.hash(HashType::Sha2_256, t.as_bytes()).unwrap();
        let device = self.profile().unwrap().device_id;
        let chosen_hash = chosen.map(hash);
        let signed = kith_proto::RotateTokenRequest::signed_bytes(
            device,
            &hash(token),
            chosen_hash.as_deref(),
        );
        kith_proto::RotateTokenRequest {
            signature: kith_proto::B64(self.raw_sign(&signed).unwrap()),
            new_token: chosen.map(|t| kith_proto::Secret::new(t.to_string())),
        }
    }

    /// The device's queue as the server holds it, fetched without acknowledging anything.
    pub async fn raw_queue(&self) -> Vec<kith_proto::QueueEntry> {
        let url = format!("{}/v1/queue", self.profile().unwrap().server);
        let resp = reqwest::Client::new()
            .get(url)
            .header("authorization", self.bearer())
            .send()
            .await
            .unwrap();
        resp.json::<kith_proto::FetchResponse>().await.unwrap().entries
    }
}

impl std::ops::Deref for TestUser {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for TestUser {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// Every file under `dir`, recursively, with its bytes.
pub fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// `kithd` as a child process (for tests that need a real process: signals, crashes, TLS,
/// what it writes to disk). Dropping it kills the process.
pub struct ChildKithd {
    pub child: std::process::Child,
    /// `host:port` it listens on, read from its log.
    pub addr: String,
}

impl ChildKithd {
    /// Starts `exe` (a test's `env!("CARGO_BIN_EXE_kithd")`) with `args` and `env`, its
    /// standard error written to `log`, and waits until it says where it listens.
    pub fn start(
        exe: &std::path::Path,
        args: &[std::ffi::OsString],
        env: &[(&str, &str)],
        log: &std::path::Path,
    ) -> Self {
        let mut cmd = std::process::Command::new(exe);
        cmd.args(args)
            .envs(env.iter().copied())
            .env_remove("KITHD_DATABASE_URL")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        let child = cmd.spawn().expect("start kithd");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut kithd = ChildKithd { child, addr: String::new() };
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(rest) = text.split("addr=").nth(1) {
                kithd.addr = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                return kithd;
            }
            assert!(std::time::Instant::now() < deadline, "kithd did not start: {text}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `"TERM"`, `"KILL"`) and waits for the process to end.
    pub fn signal_and_wait(&mut self, signal: &str) -> std::process::ExitStatus {
        let sent = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "kithd did not stop on SIG{signal}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for ChildKithd {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A small, seeded, non-cryptographic generator (SplitMix64): the same seed, the same run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// The property tests' settings: `cases` cases (`PROPTEST_CASES` overrides) from a fixed seed,
/// so every run — CI's too — tries the same ones; `PROPTEST_RNG_SEED` explores others.
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(cases);
    let mut config = proptest::test_runner::Config { cases, ..Default::default() };
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = proptest::test_runner::RngSeed::Fixed(0x6b69_7468);
    }
    config
}

/// A registration request with a single (last-resort) KeyPackage: the cheapest valid device,
/// for tests and benchmarks that speak HTTP to `kithd` directly.
pub fn raw_registration(
    provider: &openmls_rust_crypto::OpenMlsRustCrypto,
    name: &str,
) -> kith_proto::RegisterRequest {
    use openmls::prelude::tls_codec::Serialize as _;
    use openmls::prelude::*;
    let signer = openmls_basic_credential::SignatureKeyPair::new(SignatureScheme::ED25519).unwrap();
    let credential = CredentialWithKey {
        credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
        signature_key: signer.public().into(),
    };
    let extensions = [
        ExtensionType::LastResort,
        ExtensionType::Unknown(kith_proto::group::GROUP_META_EXTENSION),
    ];
    let caps = Capabilities::new(None, None, Some(&extensions), None, None);
    let kp = KeyPackage::builder()
        .leaf_node_capabilities(caps)
        .mark_as_last_resort()
        .build(kith_client::CIPHERSUITE, provider, &signer, credential)
        .unwrap();
    kith_proto::RegisterRequest {
        username: kith_proto::Username::parse(name).unwrap(),
        kind: Default::default(),
        credential_key: kith_proto::B64(signer.to_public_vec()),
        account_key: None,
        recovery_key: None,
        recovery_binding: None,
        key_packages: vec![],
        last_resort_key_package: Some(kith_proto::B64(
            kp.key_package().tls_serialize_detached().unwrap(),
        )),
        display_name: None,
        description: None,
        token: None,
    }
}
