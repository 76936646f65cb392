//! The history a linking device hands the device it linked: its conversations and the messages
//! still within their timers (`local::history`), as JSON sealed with the link's channel in
//! chunks of [`CHUNK`] bytes, through the server (which keeps them only until the new device
//! has them, and never reads them). The new device keeps each chunk as it comes and where it
//! is, so a transfer cut half-way resumes at the next chunk (at its next sync).

use kith_proto::*;
use zeroize::Zeroizing;

use super::code::{Channel, What};
use super::{Approved, link_refused};
use crate::client::Client;
use crate::error::{ClientError, ClientResult};
use crate::local::History;

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 192 * 1024;

/// A chunk's plaintext: its index and the count, then its part of the history.
fn framed(n: u32, total: u32, part: &[u8]) -> Vec<u8> {
    [&n.to_be_bytes()[..], &total.to_be_bytes(), part].concat()
}

impl Client {
    /// On the linking device, once the new device is in: seals and puts up the history for
    /// it, chunk by chunk; `progress(done, total)` after each. Returns the number of chunks.
    pub async fn send_history(
        &mut self,
        approved: &Approved,
        mut progress: impl FnMut(usize, usize),
    ) -> ClientResult<usize> {
        let history = self.local.export_history(self.expiry_now())?;
        let bytes = Zeroizing::new(
            serde_json::to_vec(&history).map_err(|e| ClientError::Protocol(e.to_string()))?,
        );
        let parts: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
        let total = u32::try_from(parts.len())
            .map_err(|_| ClientError::Protocol("a history too large to hand over".into()))?;
        let api = self.api()?;
        progress(0, parts.len());
        for (n, part) in (0u32..).zip(&parts) {
            let sealed = approved.channel.seal(What::History, &framed(n, total, part))?;
            let chunk = HistoryChunk { total, data: Some(B64(sealed)) };
            api.put_history_chunk(&approved.link, n, &chunk).await?;
            progress(n as usize + 1, parts.len());
        }
        Ok(parts.len())
    }

    /// On a new device: fetches what the linking device has put up of its history since the
    /// last call, and takes it all in once every chunk is here. `Some((done, total))` while
    /// under way (`total` 0 before the first chunk); `None` when no transfer is under way (or
    /// this call finished it).
    pub async fn continue_history(&mut self) -> ClientResult<Option<(u32, u32)>> {
        self.continue_history_upto(u32::MAX).await
    }

    /// The same, one chunk at a time: for a progress bar (`Some((done, total))` after each;
    /// `None` once it is all in, or when no transfer is under way).
    pub async fn continue_history_chunk(&mut self) -> ClientResult<Option<(u32, u32)>> {
        self.continue_history_upto(1).await
    }

    /// Whether a history another device of this account hands this one is under way.
    pub fn history_under_way(&self) -> ClientResult<bool> {
        Ok(self.local.transfer()?.is_some())
    }

    /// The same, fetching at most `max` chunks (a test cuts a transfer so).
    pub(crate) async fn continue_history_upto(
        &mut self,
        max: u32,
    ) -> ClientResult<Option<(u32, u32)>> {
        let Some(t) = self.local.transfer()? else { return Ok(None) };
        let channel = Channel::for_new_device(t.key.expose())?;
        let api = self.api()?;
        let (mut next, mut total) = (t.next, t.total);
        let stop = t.next.saturating_add(max);
        while total.is_none_or(|all| next < all) {
            if next >= stop {
                return Ok(Some((next, total.unwrap_or(0))));
            }
            let chunk = match api.history_chunk(&t.link, next).await {
                Ok(c) => c,
                Err(e)
                    if matches!(
                        e.code(),
                        Some(ErrorCode::UnknownLink | ErrorCode::LinkExpired)
                    ) =>
                {
                    self.local.end_transfer()?;
                    return Err(link_refused(
                        "the history transfer was given up (the other device cancelled it, or \
                         it waited too long); this device keeps what arrives from now on",
                    ));
                }
                Err(e) => return Err(e),
            };
            let Some(sealed) = chunk.data else {
                return Ok(Some((next, total.unwrap_or(0))));
            };
            let plain = channel
                .open(What::History, &sealed.0)
                .ok_or_else(|| link_refused("a history chunk does not open"))?;
            let (head, part) =
                plain.split_at_checked(8).ok_or_else(|| link_refused("a short chunk"))?;
            let n = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            let all = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            if n != next || all != chunk.total || total.is_some_and(|t| t != all) || all == 0 {
                return Err(link_refused("a history chunk out of its place"));
            }
            self.local.keep_chunk(n, all, part)?;
            (next, total) = (n + 1, Some(all));
        }
        let bytes = Zeroizing::new(self.local.kept_chunks()?);
        let history: History = serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Protocol(format!("the history handed over: {e}")))?;
        self.local.import_history(&history)?;
        self.local.end_transfer()?;
        if let Err(e) = api.cancel_link(&t.link).await {
            tracing::debug!(error = %e, "a finished transfer's link could not be dropped");
        }
        Ok(None)
    }
}
