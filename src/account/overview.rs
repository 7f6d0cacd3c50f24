//! What the account page shows a person: their profile as declared (read-only: it lives in
//! Git), their phase, whether an authenticator is enrolled and their address proven, their
//! sessions and their recent sign-ins. The same for the page and the JSON API.

use k8s_openapi::jiff::Timestamp;

use super::credentials::Pending;
use super::sessions::{self, SessionView};
use crate::api::UserPhase;
use crate::credentials::CredentialFacts;
use crate::credentials::record::{EmailProof, PASSWORD_CHANGED_AT, RECENT_SIGN_INS};
use crate::facts::text;
use crate::oidc::Issuer;
use crate::oidc::session::Live;
use crate::portal::login::Profile;
use crate::signin::history::{self, Attempt};

/// The account page's content.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    /// The profile, as declared.
    pub profile: Profile,
    /// The lifecycle phase.
    pub phase: Option<UserPhase>,
    /// When the account expires (`spec.expiresAt`).
    pub expires_at: Option<Timestamp>,
    /// Whether an authenticator app is enrolled.
    pub authenticator: bool,
    /// Whether a new authenticator this session asked for waits to be confirmed.
    pub replacement_pending: bool,
    /// Whether the person proved they receive mail at their address.
    pub email_verified: bool,
    /// When the password was last set.
    pub password_set_at: Option<Timestamp>,
    /// When the person last changed it.
    pub password_changed_at: Option<Timestamp>,
    /// Their sign-in sessions.
    pub sessions: Vec<SessionView>,
    /// Their recent sign-ins and failed attempts, newest first.
    pub recent_sign_ins: Vec<Attempt>,
}

/// The account page of the person signed in with `live`.
pub fn of(issuer: &Issuer, live: &Live) -> Overview {
    let user = &live.user;
    let credentials = issuer.portal.signin.caches.credentials_of(user);
    let facts = credentials.as_deref().map(CredentialFacts::of).unwrap_or_default();
    let value = |key| credentials.as_deref().and_then(|c| text(c, key));
    Overview {
        profile: Profile::of(user),
        phase: user.status.as_ref().and_then(|s| s.phase),
        expires_at: user.spec.expires_at.as_ref().map(|t| t.0),
        authenticator: facts.totp_enrolled,
        replacement_pending: credentials
            .as_deref()
            .and_then(|c| Pending::for_session(c, live.secret.metadata.uid.as_deref(), Timestamp::now()))
            .is_some(),
        email_verified: facts.email_verified(&user.spec.email) == EmailProof::Verified,
        password_set_at: facts.password_set_at,
        password_changed_at: value(PASSWORD_CHANGED_AT).and_then(|t| t.parse().ok()),
        sessions: sessions::list(issuer, live),
        recent_sign_ins: history::read(value(RECENT_SIGN_INS)),
    }
}
