//! The person's sign-in sessions, as their account page lists them — which applications
//! each signed in to, when it started and was last used, from where — and signing them out:
//! one, every other one, or all. Found through the sweeper's per-user index (at most
//! [`crate::oidc::sweeper::SESSIONS_PER_USER`] each, no listing), which files only sessions
//! whose controller is the User: a session ID names one of the person's own or nothing.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::AccountError;
use crate::oidc::Issuer;
use crate::oidc::session::{self, Live};
use crate::oidc::state::StateError;

/// One session, as the person sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    /// What names it when signing it out (its Secret's name).
    pub id: String,
    /// Whether it is the one this browser holds.
    pub current: bool,
    /// The applications (client IDs) signed in through it.
    pub clients: Vec<String>,
    /// When it started.
    pub started: Timestamp,
    /// When it, or an application's refresh token, was last used.
    pub last_used: Timestamp,
    /// The client address it started from.
    pub address: Option<String>,
    /// When it ends unless used again, or at its lifetime.
    pub ends: Timestamp,
}

/// The person's sessions, oldest first.
pub fn list(issuer: &Issuer, live: &Live) -> Vec<SessionView> {
    own(issuer, live)
        .into_iter()
        .filter_map(|Live { secret, session, .. }| {
            let uses = issuer.sweeper.uses_of(secret.metadata.uid.as_deref()?);
            let latest_use = uses.iter().filter_map(|used| used.last_used).max();
            Some(SessionView {
                id: secret.name_any(),
                current: secret.metadata.uid == live.secret.metadata.uid,
                clients: uses.into_iter().map(|used| used.client).collect(),
                started: session.created_at,
                last_used: latest_use.map_or(session.last_used(), |at| at.max(session.last_used())),
                address: session.address.clone(),
                ends: session.ends(),
            })
        })
        .collect()
}

/// Signs out the session `id`; whether it was this browser's.
pub async fn end(issuer: &Issuer, live: &Live, id: &str) -> Result<bool, AccountError> {
    let Live { secret, .. } = own(issuer, live)
        .into_iter()
        .find(|s| s.secret.name_any() == id)
        .ok_or(AccountError::NoSuchSession)?;
    session::end(issuer, &secret).await.map_err(super::unwritten)?;
    log(live, 1);
    Ok(secret.metadata.uid == live.secret.metadata.uid)
}

/// Signs out every session of the person, this one too; how many.
pub async fn end_all(issuer: &Issuer, live: &Live) -> Result<usize, AccountError> {
    let ended = end_each(issuer, own(issuer, live)).await.map_err(super::unwritten)?;
    log(live, ended);
    Ok(ended)
}

/// Signs out every session of the person but this one; how many.
pub async fn end_others(issuer: &Issuer, live: &Live) -> Result<usize, StateError> {
    let others = own(issuer, live).into_iter().filter(|s| s.secret.metadata.uid != live.secret.metadata.uid);
    end_each(issuer, others.collect()).await
}

async fn end_each(issuer: &Issuer, sessions: Vec<Live>) -> Result<usize, StateError> {
    for ended in &sessions {
        session::end(issuer, &ended.secret).await?;
    }
    Ok(sessions.len())
}

fn log(live: &Live, ended: usize) {
    tracing::info!(user = %crate::signin::who(&live.user), ended, "the person signed sessions out on their account page");
}

/// The person's live sessions (of their User, by uid), oldest first.
fn own(issuer: &Issuer, live: &Live) -> Vec<Live> {
    let now = Timestamp::now();
    let uid = live.user.metadata.uid.as_deref();
    issuer
        .sweeper
        .sessions_of(uid.unwrap_or_default())
        .into_iter()
        .filter_map(|filed| {
            let key = ObjectRef::new(&filed.name).within(&filed.namespace);
            let found = session::live(issuer, issuer.portal.signin.caches.secrets.get(&key)?, now)?;
            let mine = found.user.metadata.uid.as_deref() == uid
                && Some(found.session.user_uid.as_str()) == uid
                && found.secret.metadata.uid == filed.uid;
            mine.then_some(found)
        })
        .collect()
}
