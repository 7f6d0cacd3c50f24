//! Verifying a changed email address: when a person who finished onboarding gets a new
//! `spec.email` (with `invite.policy: Auto`), roster emails a single-use link (72 h) to the
//! new address; using it marks that address verified and changes nothing else. The token's
//! SHA-256, the address and the expiry live in `<user>-email-verification`, which the User
//! owns. Delivery is at-least-once like an invite's: the attempt is recorded first, an
//! attempt without a result is presumed running for a minute, then tried again with a new
//! link.

use std::collections::BTreeMap;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use super::invite::addressed_as;
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

/// Makes sure a verification link for the user's current address went out. Returns when to
/// look again if an attempt is still under way.
pub(super) async fn ensure_sent(ctx: &Context, user: &User) -> Result<Option<Timestamp>> {
    let name = verification_secret_name(&user.name_any());
    let email = user.spec.email.trim().to_lowercase();
    let now = Timestamp::now();
    if let Some(existing) = ctx.caches.owned_secret(user, &name)
        && text(&existing, TOKEN_RECIPIENT) == Some(email.as_str())
    {
        if text(&existing, TOKEN_SENT_AT).is_some() {
            return Ok(None);
        }
        let attempt = text(&existing, ATTEMPT_AT).and_then(|t| t.parse::<Timestamp>().ok());
        if let Some(until) = attempt.map(|at| at + ATTEMPT_TIMEOUT).filter(|until| now < *until) {
            return Ok(Some(until));
        }
    }
    let token = Token::generate()?;
    let expires = now + LINK_TTL;
    let mut data = BTreeMap::from([
        (TOKEN_HASH.to_owned(), token.hash()),
        (TOKEN_RECIPIENT.to_owned(), email.clone()),
        (TOKEN_EXPIRES_AT.to_owned(), expires.to_string()),
        (ATTEMPT_AT.to_owned(), now.to_string()),
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
            expires: expires.strftime("%Y-%m-%d %H:%M UTC").to_string(),
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
