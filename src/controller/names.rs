//! The names roster gives the objects it creates, and the labels, types and keys in them:
//! shared by the reconcilers that write them and the portal that reads them.

/// Label naming the User an object belongs to.
pub const USER_LABEL: &str = "roster.dev/user";
/// Label naming the UserInvite a Secret belongs to.
pub const INVITE_LABEL: &str = "roster.dev/invite";
/// Label naming the MfaReset a Secret belongs to.
pub const RESET_LABEL: &str = "roster.dev/mfa-reset";
/// Type of a user's credentials Secret.
pub const CREDENTIALS_TYPE: &str = "roster.dev/credentials";
/// Type of an invite's token Secret.
pub const INVITE_TOKEN_TYPE: &str = "roster.dev/invite-token";
/// Type of an invite's admin-only link Secret.
pub const INVITE_LINK_TYPE: &str = "roster.dev/invite-link";

/// Type of an MfaReset's token Secret.
pub const RESET_TOKEN_TYPE: &str = "roster.dev/mfa-reset-token";
/// Type of an MfaReset's admin-only link Secret.
pub const RESET_LINK_TYPE: &str = "roster.dev/mfa-reset-link";

/// Label naming the PasswordReset a Secret belongs to.
pub const PASSWORD_RESET_LABEL: &str = "roster.dev/password-reset";
/// Type of a PasswordReset's token Secret.
pub const PASSWORD_RESET_TOKEN_TYPE: &str = "roster.dev/password-reset-token";
/// Type of a PasswordReset's admin-only link Secret.
pub const PASSWORD_RESET_LINK_TYPE: &str = "roster.dev/password-reset-link";

/// Label naming the OidcClient a Secret belongs to.
pub const OIDC_CLIENT_LABEL: &str = "roster.dev/oidc-client";
/// Type of the Secret holding a confidential OidcClient's generated credentials.
pub const OIDC_CLIENT_TYPE: &str = "roster.dev/oidc-client";
/// Key of the client ID in an OidcClient's Secret.
pub const CLIENT_ID: &str = "clientID";
/// Key of the client secret in an OidcClient's Secret (generated, or named by `secretRef`).
pub const CLIENT_SECRET: &str = "clientSecret";

/// Type of the issuer's signing keys Secret (`--signing-keys-secret`): the type is
/// immutable, so it marks the Secret as roster's.
pub const SIGNING_KEYS_TYPE: &str = "roster.dev/signing-keys";

/// Type of a grant Secret (`<user>-grant-<random>`): what one OpenID Connect sign-in gave
/// one client (hashes of its code and refresh token).
pub const GRANT_TYPE: &str = "roster.dev/oidc-grant";
/// Type of a sign-in session Secret (`<user>-session-<random>`): who signed in to the
/// issuer in a browser, when and how; the owner of the grants made in it.
pub const SESSION_TYPE: &str = "roster.dev/oidc-session";
/// Type of a device authorization Secret (`<client>-device-<random>`, RFC 8628): a sign-in
/// a device without a browser waits for — hashes of its device code and user code, and,
/// once the person allowed it, the grant it became.
pub const DEVICE_TYPE: &str = "roster.dev/oidc-device";
/// Label naming the session a grant was made in.
pub const SESSION_LABEL: &str = "roster.dev/session";

/// Type of a user's email-verification token Secret (`<user>-email-verification`).
pub const EMAIL_VERIFICATION_TYPE: &str = "roster.dev/email-verification-token";
/// Key of when an email-verification link was sent (RFC 3339).
pub const TOKEN_SENT_AT: &str = "sentAt";

/// Key of the token's SHA-256 in `<invite>-token` and `<reset>-token`.
pub const TOKEN_HASH: &str = "tokenHash";
/// Key of the issuance (`spec.resend`) the token belongs to.
pub const TOKEN_ISSUANCE: &str = "issuance";
/// Key of the delivery attempt (1-based, per issuance) the token was issued for, in
/// `<invite>-token`: writing it claims the attempt (see the invite reconciler).
pub const TOKEN_ATTEMPT: &str = "attempt";
/// Key of when that attempt was claimed (RFC 3339).
pub const TOKEN_ATTEMPT_AT: &str = "attemptAt";
/// Key of the token's expiry (RFC 3339), in `<invite>-token` and `<reset>-token`.
pub const TOKEN_EXPIRES_AT: &str = "expiresAt";
/// Key of the hashes of the invite's earlier tokens, space-separated, newest last: the
/// portal answers 410 (replaced), not 404, for those.
pub const RETIRED_HASHES: &str = "retiredHashes";
/// Key of the address (lowercased) an invite's link was emailed to, in `<invite>-token`:
/// using the link proves that mailbox, and only that one.
pub const TOKEN_RECIPIENT: &str = "recipient";
/// Key of the link in `<invite>-link` and `<reset>-link`.
pub const LINK_URL: &str = "url";

/// Name of the Secret roster generates for a confidential OidcClient.
pub fn oidc_secret_name(client: &str) -> String {
    format!("{client}-oidc")
}

/// Name of a user's credentials Secret.
pub fn credentials_secret_name(user: &str) -> String {
    format!("{user}-credentials")
}

/// Name of the invite roster creates for a user with `invite.policy: Auto`.
pub fn auto_invite_name(user: &str) -> String {
    format!("{user}-invite")
}

/// Name of an invite's or reset's token Secret.
pub fn token_secret_name(owner: &str) -> String {
    format!("{owner}-token")
}

/// Name of a user's email-verification token Secret.
pub fn verification_secret_name(user: &str) -> String {
    format!("{user}-email-verification")
}

/// Name of an invite's or reset's admin-only link Secret.
pub fn link_secret_name(owner: &str) -> String {
    format!("{owner}-link")
}

/// The token index's terms for a Secret: `<type>:<hash>` of its current and retired tokens,
/// for the token Secrets of invites and resets and the user codes of device sign-ins;
/// `None` for every other Secret.
pub fn token_terms(secret: &k8s_openapi::api::core::v1::Secret) -> crate::index::Filing<crate::index::Named> {
    use kube::ResourceExt;
    let type_ = secret.type_.as_deref().filter(|t| {
        [INVITE_TOKEN_TYPE, RESET_TOKEN_TYPE, PASSWORD_RESET_TOKEN_TYPE, EMAIL_VERIFICATION_TYPE, DEVICE_TYPE]
            .contains(t)
    })?;
    let data = secret.data.as_ref()?;
    let text = |key: &str| data.get(key).and_then(|v| std::str::from_utf8(&v.0).ok()).unwrap_or_default();
    let terms = text(TOKEN_HASH)
        .split_whitespace()
        .chain(text(RETIRED_HASHES).split_whitespace())
        .map(|hash| token_term(type_, hash))
        .collect();
    Some(((secret.namespace().unwrap_or_default(), secret.name_any()), terms))
}

/// The token index's term for `hash` among token Secrets of `type_`.
pub fn token_term(type_: &str, hash: &str) -> String {
    format!("{type_}:{hash}")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;

    use super::*;
    use crate::index::Index;

    fn secret(name: &str, type_: &str, current: &str, retired: &str) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            type_: Some(type_.into()),
            data: Some(
                [(TOKEN_HASH, current), (RETIRED_HASHES, retired)]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn a_token_is_found_by_its_hash_among_many_current_or_retired_and_by_type() {
        let mut index = Index::default();
        for n in 0..10_000 {
            let s = secret(
                &format!("invite-{n}-token"),
                INVITE_TOKEN_TYPE,
                &format!("h{n}"),
                &format!("old{n}a old{n}b"),
            );
            let (value, terms) = token_terms(&s).unwrap();
            index.set(&format!("ns/invite-{n}-token"), value, terms);
        }
        let named = |name: &str| vec![("ns".to_owned(), name.to_owned())];
        assert_eq!(index.get(&token_term(INVITE_TOKEN_TYPE, "h4242")), named("invite-4242-token"));
        assert_eq!(index.get(&token_term(INVITE_TOKEN_TYPE, "old17b")), named("invite-17-token"));
        assert!(index.get(&token_term(RESET_TOKEN_TYPE, "h4242")).is_empty(), "another kind's token");
        let resent = secret("invite-17-token", INVITE_TOKEN_TYPE, "h17-new", "old17b h17");
        let (value, terms) = token_terms(&resent).unwrap();
        index.set("ns/invite-17-token", value, terms);
        assert!(index.get(&token_term(INVITE_TOKEN_TYPE, "old17a")).is_empty(), "forgotten once dropped");
        assert!(token_terms(&secret("x", CREDENTIALS_TYPE, "h", "")).is_none(), "only token Secrets");
    }
}
