//! What an invite link is worth right now: looked up by the token's SHA-256 in the watch
//! cache of roster's Secrets (no LIST per request), then judged by a pure function from the
//! invite's phase and expiry, the user's state and the onboarding progress recorded in the
//! user's credentials Secret.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::{InvitePhase, User, UserInvite, UserState};
use crate::controller::Caches;
use crate::controller::names::{
    INVITE_LABEL, INVITE_TOKEN_TYPE, RETIRED_HASHES, TOKEN_EXPIRES_AT, TOKEN_HASH, credentials_secret_name,
};
use crate::credentials::record::{ONBOARDING_COMPLETED_AT, ONBOARDING_TOKEN, TOTP_PENDING};
use crate::credentials::{hash_token, token_matches};
use crate::facts::text;

/// Longest token the portal looks up; roster's are 43 characters.
const MAX_TOKEN_LEN: usize = 128;

/// Why a link cannot be used. Each says what happened and whom to ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkProblem {
    /// No such link.
    Unknown,
    /// Its time ran out.
    Expired,
    /// Onboarding with it was completed.
    Used,
    /// An admin withdrew it (or the user was removed).
    Revoked,
    /// A newer link was sent; only that one works.
    Replaced,
    /// The account is deactivated.
    UserInactive,
    /// roster is starting and has not read the cluster yet.
    Starting,
}

impl LinkProblem {
    /// 404 for an unknown link, 410 for one that is gone, 403 for a deactivated account.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Unknown => StatusCode::NOT_FOUND,
            Self::UserInactive => StatusCode::FORBIDDEN,
            Self::Starting => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::GONE,
        }
    }

    /// A stable, machine-readable name.
    pub fn code(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Expired => "expired",
            Self::Used => "used",
            Self::Revoked => "revoked",
            Self::Replaced => "replaced",
            Self::UserInactive => "userInactive",
            Self::Starting => "notReady",
        }
    }

    /// What the person reads.
    pub fn message(self) -> &'static str {
        match self {
            Self::Unknown => {
                "This link is not valid. Check that you copied all of it, or ask your administrator for a new invitation."
            }
            Self::Expired => "This invitation has expired. Ask your administrator to send you a new one.",
            Self::Used => {
                "This invitation has already been used. If that was you, your account is ready; otherwise tell your administrator."
            }
            Self::Revoked => {
                "This invitation was withdrawn. Ask your administrator if you still need access."
            }
            Self::Replaced => "A newer invitation was sent to you; only the link in the newest email works.",
            Self::UserInactive => "This account is deactivated. Ask your administrator to reactivate it.",
            Self::Starting => "The portal is starting. Try again in a moment.",
        }
    }
}

/// Where the person is with a valid link: an invite's or a re-enrolment link's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The password step first: choose one (invite), or prove the current one (reset).
    Password,
    /// The password step is done; confirm the authenticator app showing this secret
    /// (base32).
    EnrolTotp(String),
}

/// A link that can be used, with everything a step needs.
#[derive(Clone, Debug)]
pub struct OpenLink {
    /// The invite the link belongs to.
    pub invite: Arc<UserInvite>,
    /// Its user.
    pub user: Arc<User>,
    /// The user's credentials Secret, as cached.
    pub credentials: Arc<Secret>,
    /// SHA-256 of the token.
    pub token_hash: String,
    /// When the link expires.
    pub expires_at: Option<Timestamp>,
    /// The next step.
    pub stage: Stage,
}

/// The facts [`judge`] decides on.
#[derive(Clone, Debug, Default)]
pub struct LinkFacts<'a> {
    /// The invite's phase.
    pub phase: Option<InvitePhase>,
    /// When the token expires.
    pub expires_at: Option<Timestamp>,
    /// The user's desired state; `None` when the user is gone.
    pub user_state: Option<UserState>,
    /// Whether the user must enrol TOTP.
    pub mfa_required: bool,
    /// The token's hash.
    pub token_hash: &'a str,
    /// The token onboarding was started with, and whether it was completed.
    pub onboarding_token: Option<&'a str>,
    /// Whether onboarding with that token was completed.
    pub onboarding_completed: bool,
    /// A TOTP secret shown but not yet confirmed.
    pub totp_pending: Option<&'a str>,
}

/// Whether a found link can be used, and for which step.
pub fn judge(facts: &LinkFacts<'_>, now: Timestamp) -> Result<Stage, LinkProblem> {
    let started_here = facts.onboarding_token == Some(facts.token_hash);
    match facts.phase {
        Some(InvitePhase::Accepted) => return Err(LinkProblem::Used),
        _ if started_here && facts.onboarding_completed => return Err(LinkProblem::Used),
        Some(InvitePhase::Revoked | InvitePhase::Failed) => return Err(LinkProblem::Revoked),
        Some(InvitePhase::Expired) => return Err(LinkProblem::Expired),
        _ => {}
    }
    match facts.user_state {
        None => return Err(LinkProblem::Revoked),
        Some(UserState::Inactive) => return Err(LinkProblem::UserInactive),
        Some(UserState::Active) => {}
    }
    if facts.expires_at.is_none_or(|at| now >= at) {
        return Err(LinkProblem::Expired);
    }
    match (started_here, facts.totp_pending) {
        (true, Some(secret)) if facts.mfa_required => Ok(Stage::EnrolTotp(secret.to_owned())),
        _ => Ok(Stage::Password),
    }
}

/// Looks the token up in the caches and judges it.
pub fn open(caches: &Caches, token: &str, now: Timestamp) -> Result<OpenLink, LinkProblem> {
    let (hash, secret) = find_token(caches, token, INVITE_TOKEN_TYPE)?;
    let secret = secret.as_ref();
    let namespace = secret.namespace().unwrap_or_default();
    let invite_name = secret.labels().get(INVITE_LABEL).ok_or(LinkProblem::Unknown)?;
    let invite =
        caches.invites.get(&ObjectRef::new(invite_name).within(&namespace)).ok_or(LinkProblem::Revoked)?;
    let (user, credentials) = account(caches, &namespace, &invite.spec.user_ref.name);
    let empty = Secret { data: Some(BTreeMap::new()), ..Default::default() };
    let progress = credentials.as_deref().unwrap_or(&empty);
    let expires_at = text(secret, TOKEN_EXPIRES_AT).and_then(|t| t.parse().ok());
    let facts = LinkFacts {
        phase: invite.status.as_ref().and_then(|s| s.phase),
        expires_at,
        user_state: user.as_ref().map(|u| u.spec.state),
        mfa_required: user.as_ref().is_none_or(|u| u.spec.mfa.required),
        token_hash: &hash,
        onboarding_token: text(progress, ONBOARDING_TOKEN),
        onboarding_completed: text(progress, ONBOARDING_COMPLETED_AT).is_some(),
        totp_pending: text(progress, TOTP_PENDING),
    };
    let stage = judge(&facts, now)?;
    let (Some(user), Some(credentials)) = (user, credentials) else {
        // The user's Secret is not there yet (the user was just created): not usable yet.
        return Err(LinkProblem::Unknown);
    };
    Ok(OpenLink { invite, user, credentials, token_hash: hash, expires_at, stage })
}

/// The User `name` in `namespace` and its credentials Secret, from the caches.
pub fn account(caches: &Caches, namespace: &str, name: &str) -> (Option<Arc<User>>, Option<Arc<Secret>>) {
    let user = caches.users.get(&ObjectRef::new(name).within(namespace));
    let credentials = user.as_ref().and_then(|u| credentials_of(caches, u));
    (user, credentials)
}

/// The credentials Secret of `user`, from the cache — only one the User controls: a Secret
/// of that name made by anyone else holds no credentials of theirs.
pub fn credentials_of(caches: &Caches, user: &User) -> Option<Arc<Secret>> {
    let namespace = user.namespace().unwrap_or_default();
    let secret =
        caches.secrets.get(&ObjectRef::new(&credentials_secret_name(&user.name_any())).within(&namespace))?;
    let uid = user.uid()?;
    let owned = secret.owner_references().iter().any(|r| r.controller == Some(true) && r.uid == uid);
    owned.then_some(secret)
}

/// The token Secret of `type_` whose hash matches `token` (compared in constant time), from
/// the cache, with the token's hash. A token only found among a Secret's retired hashes was
/// replaced by a newer one.
pub fn find_token(caches: &Caches, token: &str, type_: &str) -> Result<(String, Arc<Secret>), LinkProblem> {
    if !caches.is_ready() {
        return Err(LinkProblem::Starting);
    }
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(LinkProblem::Unknown);
    }
    let tokens = caches.secrets.state_filter(|s| s.type_.as_deref() == Some(type_));
    let matches =
        |hashes: Option<&str>| hashes.is_some_and(|h| h.split_whitespace().any(|h| token_matches(token, h)));
    match tokens.iter().find(|s| matches(text(s, TOKEN_HASH))) {
        Some(secret) => Ok((hash_token(token), secret.clone())),
        None if tokens.iter().any(|s| matches(text(s, RETIRED_HASHES))) => Err(LinkProblem::Replaced),
        None => Err(LinkProblem::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    fn sent() -> LinkFacts<'static> {
        LinkFacts {
            phase: Some(InvitePhase::Sent),
            expires_at: Some(at(1000)),
            user_state: Some(UserState::Active),
            mfa_required: true,
            token_hash: "h1",
            ..Default::default()
        }
    }

    #[test]
    fn a_fresh_link_starts_with_the_password() {
        assert_eq!(judge(&sent(), at(10)), Ok(Stage::Password));
    }

    #[test]
    fn after_the_password_the_same_link_enrols_totp() {
        let facts = LinkFacts { onboarding_token: Some("h1"), totp_pending: Some("SECRET"), ..sent() };
        assert_eq!(judge(&facts, at(10)), Ok(Stage::EnrolTotp("SECRET".into())));
        let other_link = LinkFacts { onboarding_token: Some("h0"), totp_pending: Some("SECRET"), ..sent() };
        assert_eq!(judge(&other_link, at(10)), Ok(Stage::Password), "a new link starts over");
    }

    #[test]
    fn spent_withdrawn_and_late_links_are_gone() {
        let cases = [
            (LinkFacts { phase: Some(InvitePhase::Accepted), ..sent() }, LinkProblem::Used),
            (
                LinkFacts { onboarding_token: Some("h1"), onboarding_completed: true, ..sent() },
                LinkProblem::Used,
            ),
            (LinkFacts { phase: Some(InvitePhase::Revoked), ..sent() }, LinkProblem::Revoked),
            (LinkFacts { phase: Some(InvitePhase::Expired), ..sent() }, LinkProblem::Expired),
            (LinkFacts { expires_at: Some(at(10)), ..sent() }, LinkProblem::Expired),
            (LinkFacts { user_state: None, ..sent() }, LinkProblem::Revoked),
            (LinkFacts { user_state: Some(UserState::Inactive), ..sent() }, LinkProblem::UserInactive),
        ];
        for (facts, problem) in cases {
            assert_eq!(judge(&facts, at(10)), Err(problem), "{facts:?}");
        }
    }

    #[test]
    fn problems_map_to_404_410_403() {
        assert_eq!(LinkProblem::Unknown.status(), StatusCode::NOT_FOUND);
        for gone in [LinkProblem::Expired, LinkProblem::Used, LinkProblem::Revoked, LinkProblem::Replaced] {
            assert_eq!(gone.status(), StatusCode::GONE);
        }
        assert_eq!(LinkProblem::UserInactive.status(), StatusCode::FORBIDDEN);
    }
}
