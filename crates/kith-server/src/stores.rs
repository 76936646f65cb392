//! Opening the store a configuration names: PostgreSQL for a `database_url`, else SQLite in
//! the data folder (created readable by its owner only).

use std::sync::Arc;

use anyhow::Context;
use kith_store::Store;

use crate::config::ServerConfig;

/// Creates the data folder readable by its owner only (it holds the franking key and
/// ciphertext), and narrows an existing one.
pub fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data folder {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict the data folder {}", dir.display()))?;
    }
    Ok(())
}

/// The store of a server that exists: admin commands never create an empty one (run from the
/// wrong folder, they would otherwise report on nothing).
pub async fn open_existing(config: &ServerConfig) -> anyhow::Result<Arc<dyn Store>> {
    if config.database_url.is_none() && !config.sqlite_path().exists() {
        anyhow::bail!(
            "there is no Kith database at {}; pass the server's --data DIR (or --config FILE, or \
             --database-url URL)",
            config.sqlite_path().display()
        );
    }
    open(config).await
}

pub async fn open(config: &ServerConfig) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &config.database_url {
        Some(url) => Arc::new(
            kith_store_postgres::PgStore::connect(url)
                .await
                .context("cannot open the PostgreSQL database")?,
        ),
        None => {
            create_private_dir(&config.data)?;
            Arc::new(
                kith_store_sqlite::SqliteStore::open(config.sqlite_path())
                    .context("cannot open the SQLite database")?,
            )
        }
    })
}
