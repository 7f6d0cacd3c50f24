//! Security notices: the person is emailed when their password was changed, their
//! authenticator replaced or their account locked — each says what to do if it was not
//! them. (A recovery they asked for is told by the reset's own email.) The credentials
//! Secret records when each happened and which occurrence was told. A notice due on the
//! cache is decided again on the API server's copy (one GET, only then), sent, and recorded
//! under that copy's resourceVersion: a lagging cache does not send it twice; a crash between
//! sending and recording sends it again. A failed sending writes nothing (no write wakes the
//! reconcile again) and is retried with the reconcile's backoff. Lock notices go out at most
//! once a day per person: anyone who knows an address can lock it every quarter hour.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::Api;

use super::invite::addressed_as;
use super::{Context, SetupError};
use crate::api::User;
use crate::credentials::record::{
    LOCKED_AT, NOTICED_LOCK, NOTICED_PASSWORD_CHANGE, NOTICED_TOTP_REPLACEMENT, PASSWORD_CHANGED_AT,
    TOTP_REPLACED_AT,
};
use crate::credentials::{CredentialFacts, Lockout, Standing};
use crate::facts::{self, Changes, text};
use crate::mail::{SecurityNotice, for_people};
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

/// What to do about one occurrence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    /// What happened.
    pub event: Event,
    /// When, as recorded.
    pub happened: String,
    /// Email it; `false`: only record it as told (a lock within a day of the last one told).
    pub send: bool,
}

/// How long after a lock notice no other is sent.
const LOCK_NOTICE_QUIET: SignedDuration = SignedDuration::from_hours(24);

/// The notices due for `credentials` at `now`: an occurrence not told yet — a lock only
/// while it lasts (one that ended before anyone looked, or before notices existed, is news
/// to no one), and recorded without an email within a day of the last lock told.
pub fn due(credentials: &Secret, lockout: &Lockout, now: Timestamp) -> Vec<Due> {
    let locked = matches!(lockout.of(&CredentialFacts::of(credentials), now), Standing::Locked { .. });
    Event::ALL
        .into_iter()
        .filter(|event| *event != Event::Locked || locked)
        .filter_map(|event| {
            let happened = text(credentials, event.happened()).filter(|v| !v.is_empty())?;
            let told = text(credentials, event.told());
            if told == Some(happened) {
                return None;
            }
            let time = |v: &str| v.parse::<Timestamp>().ok();
            let quiet = event == Event::Locked
                && told
                    .and_then(time)
                    .zip(time(happened))
                    .is_some_and(|(last, new)| new < last + LOCK_NOTICE_QUIET);
            Some(Due { event, happened: happened.to_owned(), send: !quiet })
        })
        .collect()
}

/// Sends the notices due for `user`: decided on the cached Secret, then again on the API
/// server's copy. Without SMTP settings, nothing is sent or recorded.
pub(super) async fn send_due(ctx: &Context, user: &User, credentials: &Secret) -> Result<()> {
    let lockout = ctx.settings.lockout;
    if due(credentials, &lockout, Timestamp::now()).is_empty() {
        return Ok(());
    }
    let (mailer, templates) = match (ctx.mail.mailer().await, ctx.mail.templates().await) {
        (Ok(mailer), Ok(templates)) => (mailer, templates),
        (Err(SetupError::Smtp(_)), _) => {
            tracing::debug!("security notices due, and no SMTP settings to send them with");
            return Ok(());
        }
        (Err(e), _) | (_, Err(e)) => {
            return Err(Error::Mail { what: "a security notice", reason: e.to_string() });
        }
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &credentials.namespace().unwrap_or_default());
    let live = api.get(&credentials.name_any()).await.map_err(|source| Error::Kube {
        action: "reading",
        kind: "Secret".into(),
        object: super::cache::key(credentials),
        source: Box::new(source),
    })?;
    if !super::cache::controlled_by(&live, user) {
        return Ok(());
    }
    let now = Timestamp::now();
    let due_now = due(&live, &lockout, now);
    for notice in due_now.iter().filter(|d| d.send) {
        let until = match (notice.event, lockout.of(&CredentialFacts::of(&live), now)) {
            (Event::Locked, Standing::Locked { until }) => until,
            _ => None,
        };
        send(ctx, &mailer, &templates, user, notice, until).await?;
        ctx.metrics.email("sent");
        tracing::info!(notice = notice.event.name(), "emailed a security notice");
    }
    facts::update(&ctx.client, &live, |current| {
        let mut changes = Changes::new();
        for notice in &due_now {
            if text(current, notice.event.happened()) == Some(notice.happened.as_str()) {
                changes.insert(notice.event.told(), Some(notice.happened.clone()));
            }
        }
        ((), changes)
    })
    .await
    .map_err(|e| Error::Facts(Box::new(e)))?;
    Ok(())
}

async fn send(
    ctx: &Context,
    mailer: &crate::mail::Mailer,
    templates: &crate::mail::Templates,
    user: &User,
    notice: &Due,
    until: Option<Timestamp>,
) -> Result<()> {
    let failed = |reason: String| Error::Mail { what: "a security notice", reason };
    let people = |text: &str| text.parse::<Timestamp>().map_or_else(|_| text.to_owned(), for_people);
    let mail = SecurityNotice {
        org: ctx.settings.org_name.clone(),
        name: addressed_as(user),
        event: notice.event.name(),
        at: people(&notice.happened),
        until: until.map(for_people),
    };
    let rendered =
        templates.security_notice(user.spec.locale.as_deref(), &mail).map_err(|e| failed(e.to_string()))?;
    let when = notice.happened.parse::<Timestamp>().map_or(0, |t| t.as_second());
    let message_id = format!("{}.{}.{when}", user.uid().unwrap_or_default(), notice.event.name());
    mailer.send(&user.spec.email, &rendered, &message_id).await.map_err(|e| failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::SignedDuration;

    use super::*;
    use crate::credentials::record::FAILED_LOGINS;

    use crate::facts::secret_with as secret;

    const LOCKOUT: Lockout = Lockout { threshold: 5, duration: Some(SignedDuration::from_mins(15)) };

    fn due_as(event: Event, happened: &str, send: bool) -> Due {
        Due { event, happened: happened.to_owned(), send }
    }

    #[test]
    fn each_occurrence_is_told_once() {
        let now: Timestamp = "2026-11-24T10:05:00Z".parse().unwrap();
        assert!(due(&secret(&[]), &LOCKOUT, now).is_empty(), "nothing happened");
        let changed = secret(&[(PASSWORD_CHANGED_AT, "2026-11-24T10:00:00Z")]);
        assert_eq!(
            due(&changed, &LOCKOUT, now),
            [due_as(Event::PasswordChanged, "2026-11-24T10:00:00Z", true)]
        );
        let told = secret(&[
            (PASSWORD_CHANGED_AT, "2026-11-24T10:00:00Z"),
            (NOTICED_PASSWORD_CHANGE, "2026-11-24T10:00:00Z"),
            (TOTP_REPLACED_AT, "2026-11-24T10:01:00Z"),
        ]);
        assert_eq!(
            due(&told, &LOCKOUT, now),
            [due_as(Event::AuthenticatorReplaced, "2026-11-24T10:01:00Z", true)]
        );
        let again = secret(&[
            (PASSWORD_CHANGED_AT, "2026-11-24T10:04:00Z"),
            (NOTICED_PASSWORD_CHANGE, "2026-11-24T10:00:00Z"),
        ]);
        assert_eq!(due(&again, &LOCKOUT, now).len(), 1, "a second change is told too");
    }

    #[test]
    fn a_lock_is_told_while_it_lasts_and_at_most_once_a_day() {
        let now: Timestamp = "2026-11-24T10:05:00Z".parse().unwrap();
        let locked = secret(&[(FAILED_LOGINS, "5"), (LOCKED_AT, "2026-11-24T10:00:00Z")]);
        assert_eq!(due(&locked, &LOCKOUT, now), [due_as(Event::Locked, "2026-11-24T10:00:00Z", true)]);
        let ended = secret(&[(FAILED_LOGINS, "5"), (LOCKED_AT, "2026-11-24T09:00:00Z")]);
        assert!(due(&ended, &LOCKOUT, now).is_empty(), "a lock that ran out is news to no one");
        let known = secret(&[
            (FAILED_LOGINS, "5"),
            (LOCKED_AT, "2026-11-24T10:00:00Z"),
            (NOTICED_LOCK, "2026-11-24T10:00:00Z"),
        ]);
        assert!(due(&known, &LOCKOUT, now).is_empty());
        let again = secret(&[
            (FAILED_LOGINS, "5"),
            (LOCKED_AT, "2026-11-24T10:00:00Z"),
            (NOTICED_LOCK, "2026-11-24T02:00:00Z"),
        ]);
        assert_eq!(
            due(&again, &LOCKOUT, now),
            [due_as(Event::Locked, "2026-11-24T10:00:00Z", false)],
            "a second lock within a day is recorded, not mailed: no mail bomb"
        );
    }
}
