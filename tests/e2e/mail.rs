//! The mail module against a real SMTP server (Mailpit): what is sent is what arrives, and
//! SMTP failures are classified the way the retry policy needs.

use anyhow::{Context as _, bail, ensure};
use libtest_mimic::Trial;
use roster::mail::{Invitation, Mailer, SendError, SmtpSettings, Templates, TlsMode};
use roster_testenv::Mailpit;
use serde_json::{Value, json};

use crate::harness::{Ns, shared, trial};

pub fn trials() -> Vec<Trial> {
    vec![
        trial("mail::an_invitation_arrives_as_sent_in_the_recipients_language", |ns| async move {
            let mailpit = mailpit(&ns, false).await?;
            let link = "https://portal.example.com/invite/tok3n?a=1&b=2";
            let mail = Templates::new(&Default::default())?.invitation(Some("de-DE"), &invitation(link))?;
            Mailer::new(&settings(&mailpit))?.send("jane@example.com", &mail, "uid-123.0").await?;

            let list = api(&mailpit, "/api/v1/messages").await?;
            ensure!(list["total"] == 1, "expected one message: {list}");
            let summary = &list["messages"][0];
            ensure!(summary["To"][0]["Address"] == "jane@example.com", "{summary}");
            ensure!(summary["MessageID"] == "uid-123.0@roster.dev", "{summary}");
            ensure!(summary["Subject"].as_str().unwrap_or_default().contains("Einladung"), "{summary}");
            let id = summary["ID"].as_str().context("no ID")?;
            let message = api(&mailpit, &format!("/api/v1/message/{id}")).await?;
            ensure!(
                message["Text"].as_str().unwrap_or_default().contains(link),
                "text part: {}",
                message["Text"]
            );
            ensure!(
                message["HTML"].as_str().unwrap_or_default().contains("tok3n?a=1&amp;b=2"),
                "html part: {}",
                message["HTML"]
            );
            ensure!(message["From"]["Address"] == "no-reply@example.com", "{}", message["From"]);
            Ok(())
        }),
        trial("mail::an_unreachable_server_is_unavailable", |ns| async move {
            let mut mailpit = mailpit(&ns, false).await?;
            let mailer = Mailer::new(&settings(&mailpit))?;
            mailpit.stop();
            let mail = Templates::new(&Default::default())?
                .invitation(None, &invitation("https://x.example.com/i/t"))?;
            match mailer.send("jane@example.com", &mail, "uid-1.0").await {
                Err(SendError::Unavailable(_)) => Ok(()),
                other => bail!("expected Unavailable, got {other:?}"),
            }
        }),
        trial("mail::replies_are_classified_4xx_retry_5xx_reject", |ns| async move {
            let mailpit = mailpit(&ns, true).await?;
            let mailer = Mailer::new(&settings(&mailpit))?;
            let mail = Templates::new(&Default::default())?
                .invitation(None, &invitation("https://x.example.com/i/t"))?;
            for (code, transient) in [(451, true), (550, false)] {
                chaos(&mailpit, json!({"Recipient": {"ErrorCode": code, "Probability": 100}})).await?;
                let result = mailer.send("jane@example.com", &mail, "uid-2.0").await;
                match (result, transient) {
                    (Err(SendError::Unavailable(reply)), true) | (Err(SendError::Rejected(reply)), false) => {
                        ensure!(
                            reply.contains(&code.to_string()),
                            "the reply does not carry the code {code}: {reply}"
                        )
                    }
                    (other, _) => bail!("code {code}: unexpected {other:?}"),
                }
            }
            chaos(&mailpit, json!({"Recipient": {"ErrorCode": 451, "Probability": 0}})).await?;
            mailer.send("jane@example.com", &mail, "uid-2.0").await?;
            Ok(())
        }),
    ]
}

fn invitation(link: &str) -> Invitation {
    Invitation {
        org: "Example Corp".into(),
        name: "Jane Doe".into(),
        link: link.into(),
        expires: "2026-12-23 10:00 UTC".into(),
    }
}

async fn mailpit(ns: &Ns, chaos: bool) -> anyhow::Result<Mailpit> {
    Ok(Mailpit::start(&shared().work_dir.join(&ns.name), "mailpit", chaos).await?)
}

fn settings(mailpit: &Mailpit) -> SmtpSettings {
    SmtpSettings {
        host: "127.0.0.1".into(),
        port: mailpit.smtp_port,
        username: None,
        password: None,
        from: "Example Corp <no-reply@example.com>".parse().expect("a valid address"),
        tls: TlsMode::None,
    }
}

async fn api(mailpit: &Mailpit, path: &str) -> anyhow::Result<Value> {
    let response = reqwest::get(format!("{}{path}", mailpit.api_url)).await?;
    ensure!(response.status().is_success(), "GET {path}: {}", response.status());
    Ok(response.json().await?)
}

pub async fn chaos(mailpit: &Mailpit, triggers: Value) -> anyhow::Result<()> {
    let response = reqwest::Client::new()
        .put(format!("{}/api/v1/chaos", mailpit.api_url))
        .json(&triggers)
        .send()
        .await?;
    ensure!(
        response.status().is_success(),
        "PUT /api/v1/chaos: {} {}",
        response.status(),
        response.text().await?
    );
    Ok(())
}
