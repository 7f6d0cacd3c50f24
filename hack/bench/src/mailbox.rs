//! Mailpit's HTTP API, as the benchmark needs it: how many messages arrived, to whom, and
//! a clean slate between runs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// Messages fetched per page when counting recipients.
const PAGE: usize = 1000;

/// A Mailpit instance's API.
#[derive(Clone)]
pub struct Mailbox {
    http: reqwest::Client,
    base: String,
}

/// Who got how many messages.
#[derive(Clone, Debug, Serialize)]
pub struct Deliveries {
    /// Messages held.
    pub messages: usize,
    /// Distinct recipients.
    pub recipients: usize,
    /// Messages beyond the first to each recipient.
    pub duplicates: usize,
}

#[derive(Deserialize)]
struct Page {
    total: usize,
    #[serde(default)]
    messages: Vec<Message>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(rename = "To", default)]
    to: Vec<Address>,
}

#[derive(Deserialize)]
struct Address {
    #[serde(rename = "Address")]
    address: String,
}

impl Mailbox {
    pub fn new(base: &str) -> Self {
        Self { http: crate::http_client(), base: base.trim_end_matches('/').to_owned() }
    }

    async fn page(&self, start: usize, limit: usize) -> anyhow::Result<Page> {
        let url = format!("{}/api/v1/messages?start={start}&limit={limit}", self.base);
        let response = self.http.get(&url).send().await.context("asking Mailpit for messages")?;
        response.error_for_status()?.json().await.context("reading Mailpit's answer")
    }

    /// How many messages Mailpit holds.
    pub async fn total(&self) -> anyhow::Result<usize> {
        Ok(self.page(0, 1).await?.total)
    }

    /// Waits until Mailpit holds at least `count` messages.
    pub async fn wait_for(&self, count: usize, deadline: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + deadline;
        loop {
            let total = self.total().await?;
            if total >= count {
                return Ok(());
            }
            if Instant::now() > until {
                bail!("Mailpit holds {total} of {count} messages after {deadline:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Every message's recipients, counted.
    pub async fn deliveries(&self) -> anyhow::Result<Deliveries> {
        let mut per_recipient: BTreeMap<String, usize> = BTreeMap::new();
        let mut messages = 0;
        loop {
            let page = self.page(messages, PAGE).await?;
            if page.messages.is_empty() {
                break;
            }
            messages += page.messages.len();
            for message in page.messages {
                for to in message.to {
                    *per_recipient.entry(to.address.to_lowercase()).or_default() += 1;
                }
            }
            if messages >= page.total {
                break;
            }
        }
        let recipients = per_recipient.len();
        let duplicates = per_recipient.values().map(|n| n.saturating_sub(1)).sum();
        Ok(Deliveries { messages, recipients, duplicates })
    }

    /// Deletes every message.
    pub async fn clear(&self) -> anyhow::Result<()> {
        let url = format!("{}/api/v1/messages", self.base);
        self.http.delete(&url).send().await.context("clearing Mailpit")?.error_for_status()?;
        Ok(())
    }
}
