//! A `kithd` child process on loopback for the benchmarks that measure the server itself
//! (its CPU time and memory are read from `/proc`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::StoreKind;

pub struct Kithd {
    child: Child,
    pub url: String,
    _data: tempfile::TempDir,
}

/// `kithd` next to this executable, unless `KITHD` names another.
fn kithd_path() -> PathBuf {
    if let Some(p) = std::env::var_os("KITHD") {
        return p.into();
    }
    let me = std::env::current_exe().unwrap_or_default();
    me.with_file_name("kithd")
}

/// Limits that would throttle a load generator are lifted: this measures the relay.
const BENCH_CONFIG: &str = "
retention_days = 30
max_group_size = 100000
[safety]
max_messages_per_minute = 1000000000
max_new_conversations_per_hour = 1000000
max_groups_created_per_hour = 1000000
max_unused_claims_per_hour = 1000000
max_key_package_claims_per_hour = 1000000
max_claims_of_one_account_per_hour = 1000000
registrations_per_ip_per_hour = 1000000
registration_attempts_per_ip_per_hour = 1000000
max_bytes_per_hour = 1000000000000
";

impl Kithd {
    pub async fn start(store: StoreKind) -> anyhow::Result<Self> {
        Self::start_with_config(store, BENCH_CONFIG).await
    }

    /// With this configuration file instead of the benchmarks' (which lifts the limits).
    pub async fn start_with_config(store: StoreKind, config_text: &str) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let config = data.path().join("kithd.toml");
        std::fs::write(&config, config_text)?;
        let log = std::fs::File::create(data.path().join("kithd.log"))?;
        let mut cmd = Command::new(kithd_path());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(data.path().join("store"))
            .env("KITHD_LOG", "warn,kithd=info")
            .stdout(Stdio::null())
            .stderr(log);
        if store == StoreKind::Postgres {
            let url = std::env::var("KITH_TEST_DATABASE_URL")
                .map_err(|_| anyhow::anyhow!("--store postgres needs KITH_TEST_DATABASE_URL"))?;
            // A schema of its own, so runs do not meet each other's accounts.
            let (store, schema) = kith_store_postgres::PgStore::connect_fresh_schema(&url).await?;
            drop(store);
            let sep = if url.contains('?') { '&' } else { '?' };
            cmd.args(["--database-url", &format!("{url}{sep}options=-csearch_path%3D{schema}")]);
        }
        let child = cmd.spawn().map_err(|e| {
            anyhow::anyhow!(
                "cannot start {} ({e}); build it with `cargo build --release -p kith-server`",
                kithd_path().display()
            )
        })?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(data.path().join("kithd.log")).unwrap_or_default();
            if let Some(rest) = text.split("addr=").nth(1) {
                let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                return Ok(Kithd { child, url: format!("http://{addr}"), _data: data });
            }
            anyhow::ensure!(Instant::now() < deadline, "kithd did not start: {text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User plus system CPU seconds the server has used.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start after the last ')'.
        let rest = stat.rsplit(')').next().unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // utime and stime are fields 14 and 15 of the file, 12 and 13 after the name.
        (ticks(11) + ticks(12)) / 100.0
    }

    /// The server's data folder (`kithd.db`, `kithd.db-wal` for SQLite).
    pub fn data_files(&self) -> std::path::PathBuf {
        self._data.path().join("store")
    }

    /// A `/proc/PID/status` figure in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        memory_kib_of(self.pid(), field)
    }
}

impl Drop for Kithd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of `/proc/PID/status` in KiB (`VmRSS:`, `VmHWM:`), 0 when unreadable.
pub fn memory_kib_of(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
