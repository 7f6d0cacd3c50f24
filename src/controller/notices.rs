//! Security notices: the person is emailed when their password was changed, their
//! authenticator replaced or their account locked — each says what to do if it was not
//! them. (A recovery they asked for is told by the reset's own email.) The credentials
//! Secret records when each happened and which occurrence was told; a notice is claimed
//! there (under its resourceVersion, on the API server's copy) before it is sent, so a
//! lagging cache or a second replica never sends it twice. A failed sending gives the claim
//! back and is retried with the reconcile's backoff; a crash between claim and sending loses
//! that one notice (logged as claimed).

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::Context;
use super::invite::addressed_as;
use crate::api::User;
use crate::credentials::record::{
    LOCKED_AT, NOTICED_LOCK, NOTICED_PASSWORD_CHANGE, NOTICED_TOTP_REPLACEMENT, PASSWORD_CHANGED_AT,
    TOTP_REPLACED_AT,
};
use crate::credentials::{CredentialFacts, Lockout, Standing};
use crate::facts::{self, Changes, text};
use crate::mail::SecurityNotice;
use crate::{Error, Result};

/// Something the person is told about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Their password was changed (not the first one).
    PasswordChanged,
    /// Their authenticator was replaced.
    AuthenticatorReplaced,
    /// Failed sign-ins locked the account.
    Locked,
}

impl Event {
    const ALL: [Event; 3] = [Event::PasswordChanged, Event::AuthenticatorReplaced, Event::Locked];

    /// The credentials key of when it happened.
    fn happened(self) -> &'static str {
        match self {
            Event::PasswordChanged => PASSWORD_CHANGED_AT,
            Event::AuthenticatorReplaced => TOTP_REPLACED_AT,
            Event::Locked => LOCKED_AT,
        }
    }

    /// The credentials key of the occurrence last told.
    fn told(self) -> &'static str {
        match self {
            Event::PasswordChanged => NOTICED_PASSWORD_CHANGE,
            Event::AuthenticatorReplaced => NOTICED_TOTP_REPLACEMENT,
            Event::Locked => NOTICED_LOCK,
        }
    }

    /// Its name in the template.
    pub fn name(self) -> &'static str {
        match self {
            Event::PasswordChanged => "password-changed",
            Event::AuthenticatorReplaced => "authenticator-replaced",
            Event::Locked => "locked",
        }
    }
}

/// The notices due for `credentials` at `now`, with when each happened (as recorded): an
/// occurrence not told yet — a lock only while it lasts (one that ended before anyone
/// looked, or before notices existed, is news to no one).
pub fn due(credentials: &Secret, lockout: &Lockout, now: Timestamp) -> Vec<(Event, String)> {
    let locked = matches!(lockout.of(&CredentialFacts::of(credentials), now), Standing::Locked { .. });
    Event::ALL
        .into_iter()
        .filter(|event| *event != Event::Locked || locked)
        .filter_map(|event| {
            let happened = text(credentials, event.happened()).filter(|v| !v.is_empty())?;
            (text(credentials, event.told()) != Some(happened)).then(|| (event, happened.to_owned()))
        })
        .collect()
}

/// Sends the notices due for `user` (decided on the cached Secret, claimed on the API
/// server's copy).
pub(super) async fn send_due(ctx: &Context, user: &User, credentials: &Secret) -> Result<()> {
    let lockout = ctx.settings.lockout;
    for (event, happened) in due(credentials, &lockout, Timestamp::now()) {
        let claim = facts::update(&ctx.client, credentials, |current| {
            let still_due =
                due(current, &lockout, Timestamp::now()).into_iter().any(|d| d == (event, happened.clone()));
            let changes = if still_due {
                Changes::from([(event.told(), Some(happened.clone()))])
            } else {
                Changes::new()
            };
            (still_due, changes)
        })
        .await
        .map_err(|e| Error::Facts(Box::new(e)))?;
        if !claim.0 {
            continue;
        }
        let until = (event == Event::Locked)
            .then(|| match lockout.of(&CredentialFacts::of(credentials), Timestamp::now()) {
                Standing::Locked { until } => until,
                Standing::Open { .. } => None,
            })
            .flatten();
        if let Err(error) = send(ctx, user, event, &happened, until).await {
            give_back(ctx, user, credentials, event, &happened).await;
            return Err(error);
        }
        ctx.metrics.email("sent");
        tracing::info!(notice = event.name(), "emailed a security notice");
    }
    Ok(())
}

async fn send(
    ctx: &Context,
    user: &User,
    event: Event,
    happened: &str,
    until: Option<Timestamp>,
) -> Result<()> {
    let failed = |reason: String| Error::Mail { what: "a security notice", reason };
    let people = |text: &str| {
        text.parse::<Timestamp>()
            .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|_| text.to_owned())
    };
    let mailer = ctx.mail.mailer().await.map_err(|e| failed(e.to_string()))?;
    let templates = ctx.mail.templates().await.map_err(|e| failed(e.to_string()))?;
    let notice = SecurityNotice {
        org: ctx.settings.org_name.clone(),
        name: addressed_as(user),
        event: event.name(),
        at: people(happened),
        until: until.map(|t| people(&t.to_string())),
    };
    let mail =
        templates.security_notice(user.spec.locale.as_deref(), &notice).map_err(|e| failed(e.to_string()))?;
    let message_id = format!("{}.{}.{}", user.uid().unwrap_or_default(), event.name(), happened);
    mailer.send(&user.spec.email, &mail, &message_id).await.map_err(|e| failed(e.to_string()))
}

/// Takes a claim back after a failed sending, so the next reconcile tries again.
async fn give_back(ctx: &Context, user: &User, credentials: &Secret, event: Event, happened: &str) {
    let undone = facts::update(&ctx.client, credentials, |current| {
        let changes = if text(current, event.told()) == Some(happened) {
            Changes::from([(event.told(), None)])
        } else {
            Changes::new()
        };
        ((), changes)
    })
    .await;
    if let Err(error) = undone {
        tracing::warn!(user = %crate::signin::who(user), notice = event.name(), %error, "a security notice was claimed, not sent, and could not be given back; it is lost");
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::jiff::SignedDuration;

    use super::*;
    use crate::credentials::record::FAILED_LOGINS;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        let data = pairs.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec()))).collect();
        Secret { data: Some(data), ..Default::default() }
    }

    const LOCKOUT: Lockout = Lockout { threshold: 5, duration: Some(SignedDuration::from_mins(15)) };

    #[test]
    fn each_occurrence_is_told_once() {
        let now: Timestamp = "2026-11-24T10:05:00Z".parse().unwrap();
        assert!(due(&secret(&[]), &LOCKOUT, now).is_empty(), "nothing happened");
        let changed = secret(&[(PASSWORD_CHANGED_AT, "2026-11-24T10:00:00Z")]);
        assert_eq!(
            due(&changed, &LOCKOUT, now),
            [(Event::PasswordChanged, "2026-11-24T10:00:00Z".to_owned())]
        );
        let told = secret(&[
            (PASSWORD_CHANGED_AT, "2026-11-24T10:00:00Z"),
            (NOTICED_PASSWORD_CHANGE, "2026-11-24T10:00:00Z"),
            (TOTP_REPLACED_AT, "2026-11-24T10:01:00Z"),
        ]);
        assert_eq!(
            due(&told, &LOCKOUT, now),
            [(Event::AuthenticatorReplaced, "2026-11-24T10:01:00Z".to_owned())]
        );
        let again = secret(&[
            (PASSWORD_CHANGED_AT, "2026-11-24T10:04:00Z"),
            (NOTICED_PASSWORD_CHANGE, "2026-11-24T10:00:00Z"),
        ]);
        assert_eq!(due(&again, &LOCKOUT, now).len(), 1, "a second change is told too");
    }

    #[test]
    fn a_lock_is_told_while_it_lasts() {
        let now: Timestamp = "2026-11-24T10:05:00Z".parse().unwrap();
        let locked = secret(&[(FAILED_LOGINS, "5"), (LOCKED_AT, "2026-11-24T10:00:00Z")]);
        assert_eq!(due(&locked, &LOCKOUT, now), [(Event::Locked, "2026-11-24T10:00:00Z".to_owned())]);
        let ended = secret(&[(FAILED_LOGINS, "5"), (LOCKED_AT, "2026-11-24T09:00:00Z")]);
        assert!(due(&ended, &LOCKOUT, now).is_empty(), "a lock that ran out is news to no one");
        let told = secret(&[
            (FAILED_LOGINS, "5"),
            (LOCKED_AT, "2026-11-24T10:00:00Z"),
            (NOTICED_LOCK, "2026-11-24T10:00:00Z"),
        ]);
        assert!(due(&told, &LOCKOUT, now).is_empty());
    }
}
