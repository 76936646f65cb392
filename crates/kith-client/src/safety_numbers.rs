//! Safety numbers: what two people compare to know no one stands between them. Computed from
//! both account keys (`kith_proto::kt::safety_number`), the same on both sides; shown as sixty
//! digits and as a QR code. Once a person marks a contact verified, a later change of that
//! contact's account key stops every message to them until the person looks at the new number
//! (`kith verify`), so the change cannot pass unseen.

use kith_proto::kt::{safety_code, safety_number, show_safety_number};

use crate::client::{Client, now_millis};
use crate::error::{ClientError, ClientResult, Refusal};

/// A safety number with a contact.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct SafetyNumber {
    pub username: String,
    /// Sixty digits.
    pub number: String,
    /// The same in twelve groups of five, as people read it.
    pub shown: String,
    /// What the QR code holds (both usernames and the number).
    pub qr: String,
    /// Verified with the contact's current account key.
    pub verified: bool,
    /// Verified before, and the contact's account key changed since: look at the new number.
    pub changed: bool,
}

impl Client {
    /// The safety number with `username`, from both account keys (theirs as the key directory
    /// proves it).
    pub async fn safety_number(&mut self, username: &str) -> ClientResult<SafetyNumber> {
        let me = self.me()?.username.clone();
        if username == me {
            return Err(ClientError::refused(
                Refusal::Yourself,
                "a safety number is between you and someone else",
            ));
        }
        kith_proto::validate_username(username)
            .map_err(|e| ClientError::refused(Refusal::BadUsername, format!("{username}: {e}")))?;
        let own = self.account_key()?.ok_or_else(|| {
            ClientError::refused(
                Refusal::BadArgument,
                "this account has no account key yet; run `kith sync` once",
            )
        })?;
        self.fetch_keys(&[username.to_string()]).await?;
        let theirs = self.local.account_key_of(username)?.flatten().ok_or_else(|| {
            let refused = self.local.key_warnings(true).ok().and_then(|ws| {
                ws.into_iter().find(|w| w.username.as_deref() == Some(username) && !w.own)
            });
            match (self.local.account_is_business(username), refused) {
                (Ok(Some(_)), _) => ClientError::refused(
                    Refusal::BadArgument,
                    format!("{username} has no account key (an app from before account keys)"),
                ),
                (_, Some(w)) => ClientError::refused(Refusal::KeyNotPublished, w.what),
                _ => ClientError::Server {
                    status: 404,
                    code: kith_proto::ErrorCode::UnknownUser,
                    message: format!("there is no user named {username} on this server"),
                    retry_after: None,
                },
            }
        })?;
        let number = safety_number((&me, &own), (username, &theirs));
        let verified_with = self.local.verified_key(username)?;
        Ok(SafetyNumber {
            username: username.to_string(),
            shown: show_safety_number(&number),
            qr: safety_code(&me, username, &number),
            number,
            verified: verified_with.as_deref() == Some(theirs.as_slice()),
            changed: verified_with.is_some_and(|k| k != theirs),
        })
    }

    /// Marks `username` verified with their current account key, after comparing the number
    /// in person; `scanned`, the text of their QR code, must be this number's.
    pub async fn confirm_safety_number(
        &mut self,
        username: &str,
        scanned: Option<&str>,
    ) -> ClientResult<SafetyNumber> {
        let mut number = self.safety_number(username).await?;
        if let Some(code) = scanned {
            let code = code.trim();
            let digits: String = code.chars().filter(|c| !c.is_whitespace()).collect();
            let is_digits = digits.len() == number.number.len();
            if !code.starts_with("kith-safety:") && !is_digits {
                return Err(ClientError::refused(
                    Refusal::BadArgument,
                    "that is not a Kith safety code: give the text of their QR code, or the \
                     sixty digits",
                ));
            }
            if code != number.qr && digits != number.number {
                return Err(ClientError::refused(
                    Refusal::BadArgument,
                    format!(
                        "the scanned code is not your safety number with {username}: do not \
                         mark them verified, and compare the numbers in person"
                    ),
                ));
            }
        }
        let key = self.local.account_key_of(username)?.flatten().unwrap_or_default();
        self.local.set_verified(username, Some(&key), now_millis())?;
        number.verified = true;
        number.changed = false;
        Ok(number)
    }

    /// Takes back a verification (and lets messages go again after a change, unverified).
    pub fn clear_safety_number(&mut self, username: &str) -> ClientResult<()> {
        Ok(self.local.set_verified(username, None, now_millis())?)
    }

    /// Refuses a send to any of `usernames` whom this person verified and whose account key
    /// changed since. Their keys are asked for first (and checked against the key directory):
    /// a change this device has not heard of yet must not let one message through.
    pub(crate) async fn check_verified_keys(&mut self, usernames: &[String]) -> ClientResult<()> {
        for user in usernames {
            let Some(verified) = self.local.verified_key(user)? else { continue };
            match self.fetch_keys(std::slice::from_ref(user)).await {
                Ok(()) => {}
                // Out of reach: the message waits in the outbox, checked again when it goes.
                Err(e) if e.is_unreached() => {}
                Err(e) => return Err(e),
            }
            let current = self.local.account_key_of(user)?.flatten();
            if current.is_some_and(|k| k != verified) {
                return Err(ClientError::refused(
                    Refusal::SafetyNumberChanged,
                    format!(
                        "{user}'s safety number changed since you verified them: their account \
                         key is new, and nothing was sent. Compare the new number with them \
                         first (Safety number in the app; `kith verify {user}`, then \
                         `kith verify {user} --confirm`, or `--clear` to write unverified)"
                    ),
                ));
            }
        }
        Ok(())
    }
}
