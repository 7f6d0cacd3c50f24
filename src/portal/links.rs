//! What an invite link is worth right now: looked up by the token's SHA-256 in the watch
//! cache of roster's Secrets (no LIST per request), then judged by a pure function from the
//! invite's phase and expiry, the user's state and the onboarding progress recorded in the
//! user's credentials Secret.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use super::Portal;
use crate::api::{InvitePhase, User, UserInvite, UserState};
use crate::controller::Caches;
use crate::controller::names::{
    INVITE_TOKEN_TYPE, TOKEN_EXPIRES_AT, TOKEN_HASH, TOKEN_RECIPIENT, token_secret_name, token_term,
};
use crate::credentials::record::{ONBOARDING_COMPLETED_AT, ONBOARDING_TOKEN, TOTP_PENDING};
use crate::credentials::{CredentialFacts, hash_token, hashes_match};
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
    /// The person completed onboarding with another link.
    Superseded,
    /// The directory refuses the account (its email or username belongs to another User,
    /// or its email's domain is not allowed).
    Refused,
    /// A password-reset link for an account whose second factor is due but not enrolled.
    SecondFactorMissing,
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
            Self::SecondFactorMissing => StatusCode::CONFLICT,
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
            Self::Superseded => "superseded",
            Self::Refused => "refused",
            Self::SecondFactorMissing => "secondFactorMissing",
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
            Self::Superseded => {
                "Your account was already set up with another invitation; this link no longer works. Sign in instead, or ask your administrator for a password reset."
            }
            Self::Refused => {
                "This account cannot be set up until your administrator resolves a conflict with another account."
            }
            Self::SecondFactorMissing => {
                "This link needs a code from your authenticator app, and none is set up. Ask your administrator to reset your second factor first, then use that link."
            }
            Self::UserInactive => "This account is deactivated. Ask your administrator to reactivate it.",
            Self::Starting => "The portal is starting. Try again in a moment.",
        }
    }
}

/// Where the person is with a valid link: an invite's or a re-enrolment link's. Its `Debug`
/// hides the TOTP secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Stage {
    /// The password step first: choose one (invite), or prove the current one (reset).
    Password,
    /// The password step is done; confirm the authenticator app showing this secret
    /// (base32).
    EnrolTotp(String),
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stage::Password => f.write_str("Password"),
            Stage::EnrolTotp(_) => f.write_str("EnrolTotp(<redacted>)"),
        }
    }
}

/// A link that can be used, with everything a step needs. Its `Debug` leaves out the
/// credentials Secret (it holds the password hash and the TOTP secret) and the stage (a TOTP
/// secret being enrolled).
#[derive(Clone)]
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
    /// The address the link was emailed to (lowercased); `None` for a handed-over link.
    pub recipient: Option<String>,
    /// The next step.
    pub stage: Stage,
}

impl std::fmt::Debug for OpenLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenLink")
            .field("invite", &crate::index::object_key(self.invite.as_ref()))
            .field("user", &crate::index::object_key(self.user.as_ref()))
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The facts [`judge`] decides on. Its `Debug` hides the pending TOTP secret.
#[derive(Clone, Default)]
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
    /// Whether the person finished onboarding (with any link).
    pub onboarded: bool,
    /// Whether the directory refuses the account.
    pub refused: bool,
    /// A TOTP secret shown but not yet confirmed.
    pub totp_pending: Option<&'a str>,
}

impl std::fmt::Debug for LinkFacts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkFacts")
            .field("phase", &self.phase)
            .field("expires_at", &self.expires_at)
            .field("user_state", &self.user_state)
            .field("onboarded", &self.onboarded)
            .field("refused", &self.refused)
            .field("started_here", &(self.onboarding_token == Some(self.token_hash)))
            .field("totp_pending", &self.totp_pending.map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Whether a found link can be used, and for which step.
pub fn judge(facts: &LinkFacts<'_>, now: Timestamp) -> Result<Stage, LinkProblem> {
    let started_here = facts.onboarding_token == Some(facts.token_hash);
    match facts.phase {
        Some(InvitePhase::Accepted) => return Err(LinkProblem::Used),
        _ if started_here && facts.onboarding_completed => return Err(LinkProblem::Used),
        Some(InvitePhase::Superseded) => return Err(LinkProblem::Superseded),
        Some(InvitePhase::Revoked | InvitePhase::Failed) => return Err(LinkProblem::Revoked),
        Some(InvitePhase::Expired) => return Err(LinkProblem::Expired),
        _ => {}
    }
    match facts.user_state {
        None => return Err(LinkProblem::Revoked),
        Some(UserState::Inactive) => return Err(LinkProblem::UserInactive),
        Some(UserState::Active) => {}
    }
    if facts.refused {
        return Err(LinkProblem::Refused);
    }
    if facts.onboarded && !started_here {
        return Err(LinkProblem::Superseded);
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
pub fn open(portal: &Portal, token: &str, now: Timestamp) -> Result<OpenLink, LinkProblem> {
    let caches = &portal.signin.caches;
    let (hash, secret, invite) =
        find_token(caches, token, INVITE_TOKEN_TYPE, |secret| owner(&caches.invites, secret))?;
    let namespace = secret.namespace().unwrap_or_default();
    let (user, credentials) = account(caches, &namespace, &invite.spec.user_ref.name);
    let empty = Secret { data: Some(BTreeMap::new()), ..Default::default() };
    let progress = credentials.as_deref().unwrap_or(&empty);
    let progress_facts = CredentialFacts::of(progress);
    let expires_at = text(&secret, TOKEN_EXPIRES_AT).and_then(|t| t.parse().ok());
    let mfa_required = user.as_ref().is_none_or(|u| u.spec.mfa.required);
    let facts = LinkFacts {
        phase: invite.status.as_ref().and_then(|s| s.phase),
        expires_at,
        user_state: user.as_ref().map(|u| u.spec.state_at(now)),
        mfa_required,
        token_hash: &hash,
        onboarding_token: text(progress, ONBOARDING_TOKEN),
        onboarding_completed: text(progress, ONBOARDING_COMPLETED_AT).is_some(),
        onboarded: progress_facts.onboarded(mfa_required),
        refused: user
            .as_ref()
            .is_some_and(|u| caches.directory_conflict(u, &portal.signin.allowed_email_domains).is_some()),
        totp_pending: text(progress, TOTP_PENDING),
    };
    let stage = judge(&facts, now)?;
    let (Some(user), Some(credentials)) = (user, credentials) else {
        // The user's Secret is not there yet (the user was just created): not usable yet.
        return Err(LinkProblem::Unknown);
    };
    let recipient = text(&secret, TOKEN_RECIPIENT).map(str::to_lowercase);
    Ok(OpenLink { invite, user, credentials, token_hash: hash, expires_at, recipient, stage })
}

/// The object of `store` whose token Secret `secret` is — by its controller ownerReference,
/// only if that object's uid is the one referenced, and only under the name roster gives
/// that object's token Secret: a Secret anyone else made (labels and type copied, an owner
/// named but not the one that exists, or another name) belongs to nothing.
pub fn owner<K>(store: &Store<K>, secret: &Secret) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    owner_named(store, secret, token_secret_name)
}

/// [`owner`], for a token Secret that `name_of` names after its owner.
pub fn owner_named<K>(store: &Store<K>, secret: &Secret, name_of: fn(&str) -> String) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let reference = secret.owner_references().iter().find(|r| {
        r.controller == Some(true) && r.kind == K::kind(&()) && r.api_version == K::api_version(&())
    })?;
    if secret.name_any() != name_of(&reference.name) {
        return None;
    }
    let namespace = secret.namespace().unwrap_or_default();
    let found = store.get(&ObjectRef::new(&reference.name).within(&namespace))?;
    (found.uid().as_deref() == Some(reference.uid.as_str())).then_some(found)
}

/// The User `name` in `namespace` and its credentials Secret, from the caches.
pub fn account(caches: &Caches, namespace: &str, name: &str) -> (Option<Arc<User>>, Option<Arc<Secret>>) {
    let user = caches.users.get(&ObjectRef::new(name).within(namespace));
    let credentials = user.as_ref().and_then(|u| caches.credentials_of(u));
    (user, credentials)
}

/// The token Secret of `type_` whose token is `token`, found through the token index (one
/// hash, one constant-time comparison, whatever the number of tokens), with the token's
/// hash and the Secret's owner as `owner` finds it. A Secret without a rightful owner is
/// ignored; a token only found among retired hashes was replaced by a newer one.
pub fn find_token<T>(
    caches: &Caches,
    token: &str,
    type_: &str,
    owner: impl Fn(&Secret) -> Option<T>,
) -> Result<(String, Arc<Secret>, T), LinkProblem> {
    if !caches.is_ready() {
        return Err(LinkProblem::Starting);
    }
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(LinkProblem::Unknown);
    }
    let hash = hash_token(token);
    let mut replaced = false;
    for (namespace, name) in caches.tokens.get(&token_term(type_, &hash)) {
        let Some(secret) = caches.secrets.get(&ObjectRef::new(&name).within(&namespace)) else { continue };
        let Some(found) = owner(&secret) else { continue };
        if text(&secret, TOKEN_HASH).is_some_and(|current| hashes_match(&hash, current)) {
            return Ok((hash, secret, found));
        }
        replaced = true;
    }
    Err(if replaced { LinkProblem::Replaced } else { LinkProblem::Unknown })
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
            (LinkFacts { phase: Some(InvitePhase::Superseded), ..sent() }, LinkProblem::Superseded),
            (
                LinkFacts { onboarded: true, onboarding_token: Some("other"), ..sent() },
                LinkProblem::Superseded,
            ),
            (LinkFacts { refused: true, ..sent() }, LinkProblem::Refused),
        ];
        for (facts, problem) in cases {
            assert_eq!(judge(&facts, at(10)), Err(problem), "{facts:?}");
        }
    }

    #[test]
    fn debug_never_shows_a_totp_secret() {
        let facts = LinkFacts { totp_pending: Some("PENDINGSECRETBASE32"), ..sent() };
        let stage = Stage::EnrolTotp("ENROLSECRETBASE32".into());
        for shown in [format!("{facts:?}"), format!("{stage:?}")] {
            assert!(!shown.contains("SECRETBASE32") && shown.contains("<redacted>"), "{shown}");
        }
    }

    #[test]
    fn problems_map_to_404_410_403() {
        assert_eq!(LinkProblem::Unknown.status(), StatusCode::NOT_FOUND);
        for gone in [
            LinkProblem::Expired,
            LinkProblem::Used,
            LinkProblem::Revoked,
            LinkProblem::Replaced,
            LinkProblem::Superseded,
            LinkProblem::Refused,
        ] {
            assert_eq!(gone.status(), StatusCode::GONE);
        }
        assert_eq!(LinkProblem::UserInactive.status(), StatusCode::FORBIDDEN);
    }
}
