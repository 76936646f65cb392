//! Safety on the client: blocking, and reporting one message verifiably.

use kith_proto::*;

use crate::client::{Client, now_millis};
use crate::error::{ClientError, ClientResult, Refusal};

/// The upkeep record of this device's block list read from the server (cleared when another
/// device of the account blocks or unblocks someone).
pub(crate) const BLOCKS_READ: &str = "blocks_read";

impl Client {
    /// Takes the account's block list as the server holds it, when another device of the
    /// account changed it since this one last read it: a block holds on every device.
    pub(crate) async fn refresh_blocks(&mut self) -> ClientResult<()> {
        if self.profile.is_none() || self.local.upkeep_at(BLOCKS_READ)?.is_some() {
            return Ok(());
        }
        let held = self.api()?.blocked().await?.blocked;
        let here = self.local.blocked()?;
        let now = now_millis();
        for user in held.iter().filter(|u| !here.contains(u)) {
            self.local.set_blocked(user, true, now)?;
        }
        for user in here.iter().filter(|u| !held.contains(u)) {
            self.local.set_blocked(user, false, now)?;
        }
        self.local.set_upkeep_at(BLOCKS_READ, now)?;
        Ok(())
    }

    /// Blocks an account: the server stops delivering anything it sends to you, in any
    /// conversation, and withholds its invitations; this device drops anything that slips
    /// through and hides its stories; your stories stop reaching it, and it leaves your
    /// contacts. The blocked account is not told.
    pub async fn block(&mut self, username: &str) -> ClientResult<()> {
        validate_username(username).map_err(|e| {
            ClientError::refused(Refusal::BadUsername, format!("{username:?}: {e}"))
        })?;
        if username == self.me()?.username {
            return Err(ClientError::refused(Refusal::Yourself, "you cannot block yourself"));
        }
        self.api()?.block(username).await?;
        self.local.set_blocked(username, true, now_millis())?;
        // It stays in this account's story channel — a removal would tell it — and the server
        // stops delivering the stories to it instead.
        Ok(())
    }

    /// Lifts a block.
    pub async fn unblock(&mut self, username: &str) -> ClientResult<()> {
        validate_username(username).map_err(|e| {
            ClientError::refused(Refusal::BadUsername, format!("{username:?}: {e}"))
        })?;
        if !self.local.is_blocked(username)? {
            return Err(ClientError::refused(
                Refusal::NotBlocked,
                format!("{username} is not blocked"),
            ));
        }
        self.api()?.unblock(username).await?;
        self.local.set_blocked(username, false, now_millis())?;
        Ok(())
    }

    /// Claims one KeyPackage of each of `username`'s devices and throws them away — what a
    /// KeyPackage-draining client does. For the abuse simulator and tests only.
    #[doc(hidden)]
    pub async fn claim_for_testing(&mut self, username: &str) -> ClientResult<usize> {
        Ok(self.api()?.claim(username).await?.key_packages.len())
    }

    /// Searches the server's directory of businesses (verified ones first).
    pub async fn search_businesses(&mut self, query: &str) -> ClientResult<Vec<BusinessEntry>> {
        if query.trim().is_empty() {
            return Err(ClientError::refused(
                Refusal::BadArgument,
                "search for at least one character",
            ));
        }
        Ok(self.api()?.businesses(query).await?.businesses)
    }

    /// The accounts this device blocks.
    pub fn blocked(&self) -> ClientResult<Vec<String>> {
        Ok(self.local.blocked()?)
    }

    /// Reports one received message (by its id, as `sync --json` shows it) to the server's
    /// admins. Only that message is revealed: its text, its sender and when it was sent. The
    /// server checks it really was sent by its sender and delivered to you.
    /// Reports one received message; answers the report's id and whether it was reported
    /// already (then nothing new is recorded: the first report, and its reason, stand).
    pub async fn report(
        &mut self,
        message_id: &str,
        reason: Option<&str>,
    ) -> ClientResult<ReportResponse> {
        let request = self.report_request(message_id, reason)?;
        self.api()?.report(&request).await
    }

    /// The report [`Client::report`] would send; for tests that tamper with it.
    #[doc(hidden)]
    pub fn report_request(
        &self,
        message_id: &str,
        reason: Option<&str>,
    ) -> ClientResult<ReportRequest> {
        let frank = self.local.frank(message_id)?.ok_or_else(|| {
            ClientError::refused(
                Refusal::UnknownMessage,
                format!(
                    "no received message {message_id:?} can be reported (your own messages, and \
                 messages already deleted, cannot)"
                ),
            )
        })?;
        if reason.is_some_and(|r| r.chars().count() > 500) {
            return Err(ClientError::refused(
                Refusal::BadArgument,
                "a reason has at most 500 characters",
            ));
        }
        let request = ReportRequest {
            // Stored as they were received: a row that no longer parses cannot be reported.
            conversation_id: ConversationId::parse(&frank.conversation)
                .map_err(|e| ClientError::Protocol(e.to_string()))?,
            sender: Username::parse(&frank.sender)
                .map_err(|e| ClientError::Protocol(e.to_string()))?,
            sender_device: frank.sender_device,
            server_time: frank.server_time,
            frank: FrankTag { key_id: frank.key_id, epoch: frank.epoch, tag: B64(frank.tag) },
            core: B64(frank.core),
            fk: B64(frank.fk),
            sig: B64(frank.sig),
            reason: reason.map(str::to_string),
        };
        Ok(request)
    }
}
