//! The changes a person makes to their own credentials on the account page: a new password
//! (the current password, a current code when an authenticator is enrolled, and the policy),
//! and a new authenticator app (a current code — the password without one — then the new
//! app's code). Each is decided again on the credentials Secret as it is at the write, under
//! its resourceVersion; a wrong password or code counts as a failed sign-in (and may lock the
//! account, which ends the session). Success is recorded for the security notices
//! (`passwordChangedAt`, `totpReplacedAt`), keeps this session signed in and ends the
//! person's other sessions: whoever else was signed in is signed out. Every write also checks
//! that the credentials are still those this session signed in with, so a session cannot
//! ride over a reset made meanwhile. A new app's secret waits in `totpReplacement` for the
//! session that proved the person, for [`PENDING_FOR`], and is shown only to it.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;

use super::proof::{self, Proof, Wrong};
use super::{AccountError, internal, sessions, unwritten};
use crate::credentials::record::{
    FAILED_LOGINS, PASSWORD_CHANGED_AT, PASSWORD_HASH, PASSWORD_SET_AT, TOTP_ENROLLED_AT, TOTP_LAST_STEP,
    TOTP_REPLACED_AT, TOTP_REPLACEMENT, TOTP_SECRET,
};
use crate::credentials::{TotpSecret, verify_totp};
use crate::facts::{self, Changes, text};
use crate::oidc::session::{self, Live};
use crate::oidc::{Issuer, grant};
use crate::portal::onboarding::{StepError, TotpOffer, caught_up, new_password_hash, offer};
use crate::signin::failures::counted;
use crate::signin::history::Attempt;
use k8s_openapi::jiff::SignedDuration;

/// Sets a new password, proven by the current one and (when enrolled) a current code.
pub async fn change_password(
    issuer: &Issuer,
    live: &Live,
    current_password: &str,
    code: &str,
    new_password: &str,
    address: IpAddr,
) -> Result<(), AccountError> {
    let portal = &issuer.portal;
    let credentials = credentials_of(issuer, live)?;
    let hash = new_password_hash(portal, &live.user, new_password).await.map_err(|e| match e {
        StepError::Policy(violation) => AccountError::Policy(violation),
        StepError::Busy => AccountError::Busy,
        StepError::Unavailable => AccountError::Unavailable,
        other => internal(other),
    })?;
    let seen = text(&credentials, PASSWORD_HASH).map(str::to_owned);
    let password_ok = verified(issuer, current_password, seen.as_deref()).await?;
    let proof = Proof { password_ok: Some(password_ok), seen_hash: seen.as_deref(), code };
    let now = Timestamp::now().to_string();
    change(issuer, live, &credentials, &proof, address, |step| {
        let mut changes = Changes::from([
            (PASSWORD_HASH, Some(hash.clone())),
            (PASSWORD_SET_AT, Some(now.clone())),
            (PASSWORD_CHANGED_AT, Some(now.clone())),
        ]);
        spent(&mut changes, step);
        changes
    })
    .await?;
    tracing::info!(user = %crate::signin::who(&live.user), "the person changed their password");
    Ok(())
}

/// Starts replacing the authenticator app: proven by a current code (the current password
/// when none is enrolled), a new secret waits to be confirmed; the offer shows it.
pub async fn begin_replacement(
    issuer: &Issuer,
    live: &Live,
    password: &str,
    code: &str,
    address: IpAddr,
) -> Result<TotpOffer, AccountError> {
    let credentials = credentials_of(issuer, live)?;
    let seen = text(&credentials, PASSWORD_HASH).map(str::to_owned);
    let password_ok = if proof::replacement_needs_password(&credentials) {
        Some(verified(issuer, password, seen.as_deref()).await?)
    } else {
        None
    };
    let proof = Proof { password_ok, seen_hash: seen.as_deref(), code };
    let pending = Pending {
        session: live.secret.metadata.uid.clone().unwrap_or_default(),
        until: Timestamp::now().checked_add(PENDING_FOR).map_err(internal)?,
        secret: TotpSecret::generate().map_err(internal)?.to_base32(),
    };
    change(issuer, live, &credentials, &proof, address, |step| {
        let mut changes = Changes::from([(TOTP_REPLACEMENT, Some(pending.line()))]);
        spent(&mut changes, step);
        changes
    })
    .await?;
    offer(&issuer.portal, &live.user, &pending.secret).map_err(internal)
}

/// How long a new app's secret waits to be confirmed.
pub const PENDING_FOR: SignedDuration = SignedDuration::from_mins(10);

/// A new authenticator app's secret waiting to be confirmed: for which session, until when.
/// Its `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Pending {
    /// The uid of the session that proved the person.
    pub session: String,
    /// Until when it may be confirmed.
    pub until: Timestamp,
    /// The new secret (base32).
    pub secret: String,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("session", &self.session)
            .field("until", &self.until)
            .finish_non_exhaustive()
    }
}

impl Pending {
    fn line(&self) -> String {
        format!("{} {} {}", self.session, self.until, self.secret)
    }

    fn parse(text: &str) -> Option<Self> {
        let mut words = text.split_whitespace();
        let session = words.next()?.to_owned();
        let until = words.next()?.parse().ok()?;
        let secret = words.next()?.to_owned();
        Some(Self { session, until, secret })
    }

    /// What `credentials` hold waiting for the session with uid `session` at `now`, if
    /// anything: another session's, or a late one, is nobody's.
    pub fn for_session(credentials: &Secret, session: Option<&str>, now: Timestamp) -> Option<Self> {
        let pending = Self::parse(text(credentials, TOTP_REPLACEMENT)?)?;
        (Some(pending.session.as_str()) == session && now < pending.until).then_some(pending)
    }
}

/// Confirms the new authenticator app with its code: it replaces the old one.
pub async fn confirm_replacement(issuer: &Issuer, live: &Live, code: &str) -> Result<(), AccountError> {
    let credentials = credentials_of(issuer, live)?;
    let session = live.secret.metadata.uid.as_deref();
    let pending =
        Pending::for_session(&credentials, session, Timestamp::now()).ok_or(AccountError::NothingPending)?;
    let secret = TotpSecret::from_base32(&pending.secret).map_err(internal)?;
    let unix = u64::try_from(Timestamp::now().as_second()).unwrap_or(0);
    let step = verify_totp(&secret, code, unix, None).map_err(|_| AccountError::WrongCode)?;
    let now = Timestamp::now().to_string();
    let written = facts::update(&issuer.portal.signin.client, &credentials, |current: &Secret| {
        if Pending::for_session(current, session, Timestamp::now()).as_ref() != Some(&pending) {
            return (Err(AccountError::NothingPending), Changes::new());
        }
        if grant::stamp(current) != live.session.stamp {
            return (Err(AccountError::CredentialsChanged), Changes::new());
        }
        let changes = Changes::from([
            (TOTP_SECRET, Some(pending.secret.clone())),
            (TOTP_ENROLLED_AT, Some(now.clone())),
            (TOTP_REPLACED_AT, Some(now.clone())),
            (TOTP_LAST_STEP, Some(step.to_string())),
            (TOTP_REPLACEMENT, None),
        ]);
        (Ok(stamp_after(current, &changes)), changes)
    })
    .await
    .map_err(unwritten)?;
    let stamp = caught_up(&issuer.portal, &credentials, written).await?;
    keep_signed_in(issuer, live, &stamp).await;
    tracing::info!(user = %crate::signin::who(&live.user), "the person replaced their authenticator app");
    Ok(())
}

/// Writes `success`'s changes if `proof` holds on the Secret as it is now and it still holds
/// the credentials this session signed in with; a failed proof counts a failed sign-in from
/// `address`. A change of the credentials' fingerprint keeps this session and ends the others.
async fn change(
    issuer: &Issuer,
    live: &Live,
    credentials: &Secret,
    proof: &Proof<'_>,
    address: IpAddr,
    success: impl Fn(Option<u64>) -> Changes,
) -> Result<(), AccountError> {
    let signin = &issuer.portal.signin;
    let lockout = signin.lockout;
    let now = Timestamp::now();
    let unix = u64::try_from(now.as_second()).unwrap_or(0);
    let written = facts::update(&signin.client, credentials, |current| {
        if grant::stamp(current) != live.session.stamp {
            return (Err(AccountError::CredentialsChanged), Changes::new());
        }
        match proof::judge(current, proof, unix) {
            Ok(step) => {
                let changes = success(step);
                (Ok(stamp_after(current, &changes)), changes)
            }
            Err(Wrong) => {
                let attempt = Attempt::new(now, false, Some(address));
                let changes = counted(current, 1, &[attempt], &lockout, now).map(|(_, changes)| changes);
                (Err(AccountError::WrongProof), changes.unwrap_or_default())
            }
        }
    })
    .await
    .map_err(unwritten)?;
    let stamp = caught_up(&issuer.portal, credentials, written).await.inspect_err(|e| {
        if matches!(e, AccountError::WrongProof) {
            signin.metrics.login("denied");
        }
    })?;
    if stamp != live.session.stamp {
        keep_signed_in(issuer, live, &stamp).await;
    }
    Ok(())
}

/// The credentials' fingerprint once `changes` are written over `current`.
fn stamp_after(current: &Secret, changes: &Changes) -> String {
    let value = |key| match changes.get(key) {
        Some(changed) => changed.as_deref(),
        None => text(current, key),
    };
    grant::stamp_of(value(PASSWORD_HASH), value(TOTP_SECRET))
}

/// Carries this session over to the credentials fingerprinted `stamp` and ends the person's
/// other sessions.
async fn keep_signed_in(issuer: &Issuer, live: &Live, stamp: &str) {
    if let Err(e) = session::restamp(issuer, &live.secret, &live.session.stamp, stamp).await {
        tracing::warn!(error = %e, "keeping the session over changed credentials failed; the person signs in again");
    }
    if let Err(e) = sessions::end_others(issuer, live).await {
        tracing::warn!(error = %e, "ending the person's other sessions failed; they end at their next use");
    }
}

/// The failed-sign-in count back to none and the code's step spent.
fn spent(changes: &mut Changes, step: Option<u64>) {
    changes.insert(FAILED_LOGINS, Some("0".to_owned()));
    if let Some(step) = step {
        changes.insert(TOTP_LAST_STEP, Some(step.to_string()));
    }
}

async fn verified(issuer: &Issuer, password: &str, stored: Option<&str>) -> Result<bool, AccountError> {
    issuer.portal.signin.verify_password(password, stored).await.map_err(|_| AccountError::Busy)
}

fn credentials_of(issuer: &Issuer, live: &Live) -> Result<std::sync::Arc<Secret>, AccountError> {
    issuer.portal.signin.caches.credentials_of(&live.user).ok_or_else(|| internal("no credentials Secret"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_app_waits_for_the_session_that_asked_and_not_past_its_deadline() {
        let at = |second| Timestamp::from_second(second).unwrap();
        let pending = Pending { session: "s1".into(), until: at(600), secret: "JBSWY3DPEHPK3PXP".into() };
        let data = [(TOTP_REPLACEMENT.to_owned(), k8s_openapi::ByteString(pending.line().into_bytes()))];
        let credentials = Secret { data: Some(data.into_iter().collect()), ..Default::default() };
        assert_eq!(Pending::for_session(&credentials, Some("s1"), at(10)), Some(pending.clone()));
        assert_eq!(
            Pending::for_session(&credentials, Some("s2"), at(10)),
            None,
            "another session of the person"
        );
        assert_eq!(Pending::for_session(&credentials, None, at(10)), None);
        assert_eq!(Pending::for_session(&credentials, Some("s1"), at(600)), None, "late");
        assert!(!format!("{pending:?}").contains("JBSW"), "the secret is not in Debug");
    }
}
