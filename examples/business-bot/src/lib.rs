//! A small business bot on the Kith SDK.
//!
//! A business registers with `kith register NAME --server URL --business`, then runs this bot
//! on the same profile. People who write to the business get answers about opening hours and
//! the status of their orders (from a local JSON file). The bot can only answer: Kith does not
//! let a business start a conversation, and a person can block it at any time.
//!
//! - [`Knowledge`]: what the bot knows and how it answers a question;
//! - [`Bot`]: a [`kith_client::Client`] that fetches questions and sends answers.

use std::collections::HashMap;
use std::path::Path;

use kith_client::{Client, ConversationKind};

/// The answers the bot can give.
pub struct Knowledge {
    pub hours: String,
    /// Order number → status.
    pub orders: HashMap<String, String>,
}

impl Knowledge {
    /// Opening hours as text, and orders from a JSON object such as
    /// `{"1234": "out for delivery"}`.
    pub fn load(hours: &str, orders: Option<&Path>) -> anyhow::Result<Self> {
        let orders = match orders {
            Some(path) => serde_json::from_str(&std::fs::read_to_string(path)?)?,
            None => HashMap::new(),
        };
        Ok(Knowledge { hours: hours.to_string(), orders })
    }

    /// The reply to one question.
    pub fn answer(&self, question: &str) -> String {
        let q = question.to_lowercase();
        let number: String = q
            .split(|c: char| !c.is_ascii_digit())
            .find(|part| part.len() >= 3)
            .unwrap_or_default()
            .to_string();
        if q.contains("order") || !number.is_empty() {
            if number.is_empty() {
                return "Which order? Send me its number, e.g. \"order 1234\".".into();
            }
            return match self.orders.get(&number) {
                Some(status) => format!("Order {number}: {status}."),
                None => format!("I cannot find order {number}. Please check the number."),
            };
        }
        if q.contains("open") || q.contains("hour") || q.contains("close") {
            return format!("We are open {}.", self.hours);
        }
        "Hello! Ask me about our opening hours, or the status of an order (\"order 1234\").".into()
    }
}

/// A business bot: a Kith client that answers.
pub struct Bot {
    pub client: Client,
    pub knowledge: Knowledge,
}

impl Bot {
    pub fn new(client: Client, knowledge: Knowledge) -> Self {
        Bot { client, knowledge }
    }

    /// Fetches what is waiting and answers every question asked in a 1:1 conversation.
    /// Returns how many it answered.
    pub async fn answer_pending(&mut self) -> anyhow::Result<usize> {
        let report = self.client.sync().await?;
        let mut answered = 0;
        for m in report.messages.iter().filter(|m| m.kind == ConversationKind::Direct) {
            let reply = self.knowledge.answer(&m.text);
            self.client.send_text(&m.from, &reply).await?;
            answered += 1;
        }
        Ok(answered)
    }

    /// Answers as questions arrive over the push channel, until an error it cannot recover
    /// from. Questions that came while it was away are answered first.
    pub async fn run(&mut self) -> anyhow::Result<()> {
        self.answer_pending().await?;
        loop {
            let mut push = self.client.connect_push().await?;
            loop {
                let report = match self.client.receive_push(&mut push).await {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("push channel lost ({e}); reconnecting");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        break;
                    }
                };
                for m in report.messages.iter().filter(|m| m.kind == ConversationKind::Direct) {
                    let reply = self.knowledge.answer(&m.text);
                    self.client.send_text(&m.from, &reply).await?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let k = Knowledge {
            hours: "9:00–18:00, Monday to Saturday".into(),
            orders: [("1234".to_string(), "out for delivery".to_string())].into(),
        };
        assert_eq!(k.answer("When are you OPEN?"), "We are open 9:00–18:00, Monday to Saturday.");
        assert_eq!(k.answer("status of order 1234?"), "Order 1234: out for delivery.");
        assert!(k.answer("order 9999").contains("cannot find order 9999"));
        assert!(k.answer("my order").contains("Which order"));
        assert!(k.answer("hi").contains("opening hours"));
    }
}
