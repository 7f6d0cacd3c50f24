//! Confirming a changed email address through the link roster emailed to it: it marks that
//! address verified (`emailVerifiedAt`, `emailVerifiedFor`) and changes nothing else. The
//! page asks for a click (nothing changes on GET); the JSON API takes a POST.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;

use super::Portal;
use super::links::{LinkProblem, find_token, owner_named};
use super::onboarding::{StepError, caught_up, unwritten};
use crate::api::{User, UserState};
use crate::controller::names::{
    EMAIL_VERIFICATION_TYPE, TOKEN_EXPIRES_AT, TOKEN_RECIPIENT, verification_secret_name,
};
use crate::credentials::record::{EMAIL_VERIFIED_AT, EMAIL_VERIFIED_FOR};
use crate::facts::{self, Changes, text};

/// A verification link that can be used.
#[derive(Clone, Debug)]
pub struct OpenVerification {
    /// The user whose address it verifies.
    pub user: Arc<User>,
    /// The address it was sent to (lowercased).
    pub address: String,
}

/// Whether a found verification link can be used: for the address it was sent to, while
/// that is still the user's, not yet verified, and not expired.
pub fn judge(
    state: UserState,
    address: &str,
    current: &str,
    verified_for: Option<&str>,
    expires_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<(), LinkProblem> {
    if !address.eq_ignore_ascii_case(current.trim()) {
        return Err(LinkProblem::Replaced);
    }
    if verified_for.is_some_and(|v| v.eq_ignore_ascii_case(address)) {
        return Err(LinkProblem::Used);
    }
    if state == UserState::Inactive {
        return Err(LinkProblem::UserInactive);
    }
    if expires_at.is_none_or(|at| now >= at) {
        return Err(LinkProblem::Expired);
    }
    Ok(())
}

/// Looks the token up and judges it.
pub fn open(portal: &Portal, token: &str, now: Timestamp) -> Result<OpenVerification, LinkProblem> {
    let caches = &portal.signin.caches;
    let (_, secret, user) = find_token(caches, token, EMAIL_VERIFICATION_TYPE, |secret| {
        owner_named(&caches.users, secret, verification_secret_name)
    })?;
    let credentials = caches.credentials_of(&user).ok_or(LinkProblem::Revoked)?;
    let address = text(&secret, TOKEN_RECIPIENT).unwrap_or_default().to_lowercase();
    let expires_at = text(&secret, TOKEN_EXPIRES_AT).and_then(|t| t.parse().ok());
    let verified_for = text(&credentials, EMAIL_VERIFIED_FOR);
    judge(user.spec.state_at(now), &address, &user.spec.email, verified_for, expires_at, now)?;
    if caches.directory_conflict(&user, &portal.signin.allowed_email_domains).is_some() {
        return Err(LinkProblem::Refused);
    }
    Ok(OpenVerification { user, address })
}

/// Marks the address verified.
pub async fn verify(portal: &Portal, link: &OpenVerification) -> Result<(), StepError> {
    let credentials: Arc<Secret> =
        portal.signin.caches.credentials_of(&link.user).ok_or(StepError::Link(LinkProblem::Revoked))?;
    let now = Timestamp::now().to_string();
    let written = facts::update(&portal.signin.client, &credentials, |current| {
        if text(current, EMAIL_VERIFIED_FOR).is_some_and(|v| v.eq_ignore_ascii_case(&link.address)) {
            return (Err(StepError::Link(LinkProblem::Used)), Changes::new());
        }
        let changes = Changes::from([
            (EMAIL_VERIFIED_AT, Some(now.clone())),
            (EMAIL_VERIFIED_FOR, Some(link.address.clone())),
        ]);
        (Ok(()), changes)
    })
    .await
    .map_err(unwritten)?;
    caught_up(portal, &credentials, written).await?;
    tracing::info!(user = %super::who(&link.user), "verified a changed email address");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn a_link_verifies_only_the_address_it_went_to_while_it_is_the_users() {
        let ok = |current, verified, expires| {
            judge(UserState::Active, "new@example.com", current, verified, expires, at(10))
        };
        assert_eq!(ok("New@Example.com", None, Some(at(100))), Ok(()));
        assert_eq!(ok("other@example.com", None, Some(at(100))), Err(LinkProblem::Replaced), "changed again");
        assert_eq!(ok("new@example.com", Some("new@example.com"), Some(at(100))), Err(LinkProblem::Used));
        assert_eq!(ok("new@example.com", Some("old@example.com"), Some(at(5))), Err(LinkProblem::Expired));
        let inactive =
            judge(UserState::Inactive, "new@example.com", "new@example.com", None, Some(at(100)), at(10));
        assert_eq!(inactive, Err(LinkProblem::UserInactive));
    }
}
