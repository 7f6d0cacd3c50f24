//! Whether a person may still hold what a sign-in gave them — a session, a grant's tokens,
//! userinfo — decided the same way for each: the same User (by uid), not deactivated,
//! locked, refused by the directory or re-enrolling, the credentials they signed in with
//! unchanged, and (for a client) still admitted.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use super::grant;
use crate::api::{OidcClient, User};
use crate::registration;
use crate::signin::SignIn;

/// Why the person may not hold tokens now. Every refusal ends what it judged for good —
/// a lock too (failed sign-ins may be someone guessing; the person signs in again once it
/// ends, though whoever knows an address can so sign its person out).
#[derive(Debug)]
pub struct Denied {
    /// For the log.
    pub reason: &'static str,
    /// Whether it is about the person (deactivated, locked, credentials changed), not one
    /// client: then the whole sign-in session ends, not only this grant.
    pub person: bool,
}

/// Whether `user` is still the person (`user_uid`) who signed in with the credentials
/// fingerprinted as `stamp`, and may sign in now.
pub fn of_person(
    signin: &SignIn,
    user: &User,
    user_uid: &str,
    stamp: &str,
    now: Timestamp,
) -> Result<(), Denied> {
    let ends = |reason| Denied { reason, person: true };
    if user.metadata.uid.as_deref() != Some(user_uid) {
        return Err(ends("another User of that name"));
    }
    let credentials = signin.caches.credentials_of(user).ok_or(ends("no credentials"))?;
    if let Some(barrier) = signin.barrier(user, &credentials, now) {
        return Err(ends(barrier.message()));
    }
    if grant::stamp(&credentials) != stamp {
        return Err(ends("credentials changed since the sign-in"));
    }
    Ok(())
}

/// [`of_person`], and `client` still admits them.
pub fn with_client(
    signin: &SignIn,
    client: &OidcClient,
    user: &User,
    user_uid: &str,
    stamp: &str,
    now: Timestamp,
) -> Result<(), Denied> {
    of_person(signin, user, user_uid, stamp, now)?;
    if !registration::admits(&client.spec, &client.namespace().unwrap_or_default(), user) {
        return Err(Denied { reason: "the client no longer admits this user", person: false });
    }
    Ok(())
}

/// [`with_client`] for a grant made in a session: the person as the session knows them —
/// a session carried over a change of credentials on the account page stays theirs — and
/// the grant made with the session's credentials (one made before the change ends alone;
/// the application signs in again through the session).
pub fn of_grant(
    signin: &SignIn,
    client: &OidcClient,
    user: &User,
    grant: &super::grant::Grant,
    session_stamp: &str,
    now: Timestamp,
) -> Result<(), Denied> {
    with_client(signin, client, user, &grant.user_uid, session_stamp, now)?;
    if grant.stamp != session_stamp {
        return Err(Denied { reason: "credentials changed since this grant was made", person: false });
    }
    Ok(())
}
