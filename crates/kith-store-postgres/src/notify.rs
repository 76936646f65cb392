//! Notify/listen between nodes sharing the database: which queues grew and which devices lost
//! access, announced inside the writing transaction (delivered on commit) and heard by a
//! listener that forwards them as [`Announcement`]s.

use super::*;

/// How this process tells the others sharing the database which queues it added to: a
/// `NOTIFY` on `channel`, inside the transaction that adds the entries (so it is delivered on
/// commit, and only then), with the payload `"<node> <device>,<device>,…"`; and which device's
/// token changed: `"<node> !<device>"`.
pub(crate) struct Announce {
    channel: String,
    /// A random name for this process, so it can skip its own announcements.
    node: String,
}

impl Announce {
    /// One channel per schema, so separate deployments (or tests) in one database do not
    /// wake each other (PostgreSQL limits a channel name to 63 bytes); a random node name.
    pub(crate) async fn for_schema_of(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let schema: String = sqlx::query_scalar("SELECT current_schema()").fetch_one(pool).await?;
        let mut channel = format!("kith_queue:{schema}");
        if channel.len() > 63 {
            channel = "kith_queue".into();
        }
        let mut node = [0u8; 8];
        getrandom::fill(&mut node).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        Ok(Announce { channel, node: format!("{:016x}", u64::from_le_bytes(node)) })
    }
}

/// Bytes of device ids per `NOTIFY` payload at most (PostgreSQL allows a little under 8000).
pub(crate) const ANNOUNCE_CHUNK: usize = 7000;

/// Announces, inside `tx`, that `devices`' queues grew.
pub(crate) async fn announce(
    tx: &mut sqlx::PgConnection,
    a: &Announce,
    devices: &[i64],
) -> Result<(), sqlx::Error> {
    use std::fmt::Write as _;
    let mut payloads: Vec<String> = Vec::new();
    let mut current = String::new();
    for d in devices {
        if current.len() >= ANNOUNCE_CHUNK {
            payloads.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            let _ = write!(current, "{} {d}", a.node);
        } else {
            let _ = write!(current, ",{d}");
        }
    }
    if !current.is_empty() {
        payloads.push(current);
    }
    if payloads.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, p) FROM UNNEST($2::TEXT[]) AS p")
        .bind(&a.channel)
        .bind(&payloads)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Announces, inside `tx`, that `device`'s access changed (its token was rotated): other
/// nodes close its push connections.
pub(crate) async fn announce_access_changed(
    tx: &mut sqlx::PgConnection,
    a: &Announce,
    device: DeviceId,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(&a.channel)
        .bind(format!("{} !{device}", a.node))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Announces, inside `tx`, that every device of `username` lost access (a suspension).
pub(crate) async fn announce_account_shut(
    tx: &mut sqlx::PgConnection,
    a: &Announce,
    username: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT pg_notify($1, $2 || ' !' || d.id::TEXT) FROM devices d
         JOIN accounts a ON a.id = d.account_id WHERE a.username = $3",
    )
    .bind(&a.channel)
    .bind(&a.node)
    .bind(username)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Reads an announcement; `None` for this process's own or a malformed one.
pub(crate) fn announced(payload: &str, own_node: &str) -> Option<Announcement> {
    let (node, rest) = payload.split_once(' ')?;
    if node == own_node {
        return None;
    }
    if let Some(device) = rest.strip_prefix('!') {
        return device.parse().ok().map(Announcement::AccessChanged);
    }
    rest.split(',').map(|d| d.parse::<u64>().ok()).collect::<Option<_>>().map(Announcement::Queued)
}

/// Listens for other processes' announcements until the receiver goes away. A new listening
/// connection (the first, or one replacing a lost one) first sends [`Announcement::Missed`]:
/// what was announced meanwhile is unknown.
pub(crate) async fn listen(
    pool: PgPool,
    announce: Arc<Announce>,
    out: tokio::sync::mpsc::Sender<Announcement>,
) {
    loop {
        let listener = async {
            let mut l = sqlx::postgres::PgListener::connect_with(&pool).await?;
            l.listen(&announce.channel).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = match listener.await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for other nodes' announcements");
                if out.is_closed() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        if out.send(Announcement::Missed).await.is_err() {
            return;
        }
        loop {
            // Stop (and give the connection back) as soon as nobody follows.
            let received = tokio::select! {
                () = out.closed() => return,
                r = listener.try_recv() => r,
            };
            match received {
                Ok(Some(n)) => {
                    if let Some(a) = announced(n.payload(), &announce.node)
                        && out.send(a).await.is_err()
                    {
                        return;
                    }
                }
                // The connection was lost and has been replaced: anything may have been missed.
                Ok(None) => {
                    if out.send(Announcement::Missed).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lost the connection listening for other nodes");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::announced;
    use kith_store::Announcement;

    #[test]
    fn announcements_name_devices_and_skip_this_node() {
        assert_eq!(
            announced("00aa 1,22,333", "00bb"),
            Some(Announcement::Queued(vec![1, 22, 333]))
        );
        assert_eq!(announced("00aa 1,22,333", "00aa"), None, "its own");
        assert_eq!(announced("00aa !42", "00bb"), Some(Announcement::AccessChanged(42)));
        assert_eq!(announced("00aa !42", "00aa"), None);
        assert_eq!(announced("00aa", "00bb"), None);
        assert_eq!(announced("00aa 1,x", "00bb"), None);
        assert_eq!(announced("00aa !x", "00bb"), None);
    }
}
