//! Verifying a changed email address: when a person who finished onboarding gets a new
//! `spec.email` (with `invite.policy: Auto`), roster emails a single-use link (72 h) to the
//! new address; using it marks that address verified and changes nothing else. The token's
//! SHA-256, the address and the expiry live in `<user>-email-verification`, which the User
//! owns. Delivery is at-least-once like an invite's: the attempt is recorded first, an
//! attempt without a result is presumed running for a minute and a failed one waits its
//! backoff (doubling to 10 minutes), then a new link is tried; an expired link is replaced.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::Api;

use super::invite::{addressed_as, delivery_backoff};
use super::names::{
    EMAIL_VERIFICATION_TYPE, TOKEN_EXPIRES_AT, TOKEN_HASH, TOKEN_RECIPIENT, TOKEN_SENT_AT, USER_LABEL,
    verification_secret_name,
};
use super::{Context, apply_owned_secret};
use crate::api::User;
use crate::credentials::Token;
use crate::facts::text;
use crate::mail::ResetNotice;
use crate::{Error, Result};

/// How long a verification link works.
pub const LINK_TTL: SignedDuration = SignedDuration::from_hours(72);
/// How long an attempt without a recorded result is presumed still running.
const ATTEMPT_TIMEOUT: SignedDuration = SignedDuration::from_secs(60);
/// Key of when the current attempt started (RFC 3339).
const ATTEMPT_AT: &str = "attemptAt";
/// Key of the attempts made for the current address (for the retry backoff).
const ATTEMPTS: &str = "attempts";

/// What a verification Secret says about the user's current `email`.
enum Standing {
    /// A live link went out to it.
    Sent,
    /// An attempt is (presumed) under way, or waits its backoff, until then.
    Waiting(Timestamp),
    /// A new link is due; `attempts` were made for this address before.
    Due { attempts: u32 },
}

fn standing(secret: Option<&Secret>, email: &str, now: Timestamp) -> Standing {
    let Some(secret) = secret.filter(|s| text(s, TOKEN_RECIPIENT) == Some(email)) else {
        return Standing::Due { attempts: 0 };
    };
    let expires = text(secret, TOKEN_EXPIRES_AT).and_then(|t| t.parse::<Timestamp>().ok());
    if text(secret, TOKEN_SENT_AT).is_some() && expires.is_some_and(|at| now < at) {
        return Standing::Sent;
    }
    let attempts = text(secret, ATTEMPTS).and_then(|v| v.parse().ok()).unwrap_or(0u32);
    if text(secret, TOKEN_SENT_AT).is_some() {
        return Standing::Due { attempts: 0 }; // sent, and expired: a fresh one
    }
    let wait = ATTEMPT_TIMEOUT.max(delivery_backoff(attempts));
    match text(secret, ATTEMPT_AT).and_then(|t| t.parse::<Timestamp>().ok()).map(|at| at + wait) {
        Some(until) if now < until => Standing::Waiting(until),
        _ => Standing::Due { attempts },
    }
}

/// Makes sure a live verification link for the user's current address went out. Returns
/// when to look again while an attempt is under way or waits its backoff. Decided on the
/// cache, and confirmed on the API server before sending (the cache may lag this
/// reconciler's own last write).
pub(super) async fn ensure_sent(ctx: &Context, user: &User) -> Result<Option<Timestamp>> {
    let name = verification_secret_name(&user.name_any());
    let email = user.spec.email.trim().to_lowercase();
    let now = Timestamp::now();
    if let Standing::Sent = standing(ctx.caches.owned_secret(user, &name).as_deref(), &email, now) {
        return Ok(None);
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &user.namespace().unwrap_or_default());
    let live = api.get_opt(&name).await.map_err(|source| Error::Kube {
        action: "reading",
        kind: "Secret".into(),
        object: format!("{}/{name}", user.namespace().unwrap_or_default()),
        source: Box::new(source),
    })?;
    let live = live.filter(|s| super::cache::controlled_by(s, user));
    let attempts = match standing(live.as_ref(), &email, now) {
        Standing::Sent => return Ok(None),
        Standing::Waiting(until) => return Ok(Some(until)),
        Standing::Due { attempts } => attempts,
    };
    let token = Token::generate()?;
    let expires = now + LINK_TTL;
    let mut data = BTreeMap::from([
        (TOKEN_HASH.to_owned(), token.hash()),
        (TOKEN_RECIPIENT.to_owned(), email.clone()),
        (TOKEN_EXPIRES_AT.to_owned(), expires.to_string()),
        (ATTEMPT_AT.to_owned(), now.to_string()),
        (ATTEMPTS.to_owned(), (attempts + 1).to_string()),
    ]);
    apply_owned_secret(ctx, user, &name, (EMAIL_VERIFICATION_TYPE, USER_LABEL), data.clone()).await?;
    let link = format!("{}/verify-email/{}", ctx.settings.portal_url.trim_end_matches('/'), token.expose());
    let sent = async {
        let mailer = ctx.mail.mailer().await.map_err(|e| e.to_string())?;
        let templates = ctx.mail.templates().await.map_err(|e| e.to_string())?;
        let notice = ResetNotice {
            org: ctx.settings.org_name.clone(),
            name: addressed_as(user),
            link: Some(link),
            expires: crate::mail::for_people(expires),
            requested: false,
        };
        let mail = templates
            .notice("verify-email", user.spec.locale.as_deref(), &notice)
            .map_err(|e| e.to_string())?;
        let message_id = format!("{}.verify.{}", user.uid().unwrap_or_default(), now.as_second());
        mailer.send(&email, &mail, &message_id).await.map_err(|e| e.to_string())
    };
    drop(token);
    sent.await.map_err(|reason| Error::Mail { what: "the email-verification link", reason })?;
    data.insert(TOKEN_SENT_AT.to_owned(), Timestamp::now().to_string());
    apply_owned_secret(ctx, user, &name, (EMAIL_VERIFICATION_TYPE, USER_LABEL), data).await?;
    tracing::info!("emailed a link to verify the changed address");
    Ok(None)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn secret(pairs: &[(&str, String)]) -> Secret {
        let data = pairs.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec()))).collect();
        Secret { data: Some(data), ..Default::default() }
    }

    #[test]
    fn a_link_goes_out_once_per_address_retries_with_backoff_and_is_replaced_when_expired() {
        let to = |address: &str| (TOKEN_RECIPIENT, address.to_owned());
        let expires = |s| (TOKEN_EXPIRES_AT, at(s).to_string());
        assert!(matches!(standing(None, "a@x.io", at(0)), Standing::Due { attempts: 0 }));
        let sent = secret(&[to("a@x.io"), expires(1000), (TOKEN_SENT_AT, at(5).to_string())]);
        assert!(matches!(standing(Some(&sent), "a@x.io", at(10)), Standing::Sent));
        assert!(
            matches!(standing(Some(&sent), "b@x.io", at(10)), Standing::Due { attempts: 0 }),
            "changed again"
        );
        assert!(
            matches!(standing(Some(&sent), "a@x.io", at(1000)), Standing::Due { attempts: 0 }),
            "expired"
        );
        let trying = |n: u32| {
            secret(&[
                to("a@x.io"),
                expires(1000),
                (ATTEMPT_AT, at(100).to_string()),
                (ATTEMPTS, n.to_string()),
            ])
        };
        assert!(
            matches!(standing(Some(&trying(1)), "a@x.io", at(120)), Standing::Waiting(t) if t == at(160))
        );
        assert!(matches!(standing(Some(&trying(1)), "a@x.io", at(160)), Standing::Due { attempts: 1 }));
        assert!(
            matches!(standing(Some(&trying(10)), "a@x.io", at(300)), Standing::Waiting(t) if t == at(612)),
            "backoff"
        );
    }
}
