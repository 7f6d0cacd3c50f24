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

/// Key of the token's SHA-256 in `<invite>-token` and `<reset>-token`.
pub const TOKEN_HASH: &str = "tokenHash";
/// Key of the issuance (`spec.resend`) the token belongs to.
pub const TOKEN_ISSUANCE: &str = "issuance";
/// Key of the token's expiry (RFC 3339), in `<invite>-token` and `<reset>-token`.
pub const TOKEN_EXPIRES_AT: &str = "expiresAt";
/// Key of the hashes of the invite's earlier tokens, space-separated, newest last: the
/// portal answers 410 (replaced), not 404, for those.
pub const RETIRED_HASHES: &str = "retiredHashes";
/// Key of the link in `<invite>-link` and `<reset>-link`.
pub const LINK_URL: &str = "url";

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

/// Name of an invite's or reset's admin-only link Secret.
pub fn link_secret_name(owner: &str) -> String {
    format!("{owner}-link")
}

/// The token index's terms for a Secret: `<type>:<hash>` of its current and retired tokens,
/// for the token Secrets of invites and resets; `None` for every other Secret.
pub fn token_terms(secret: &k8s_openapi::api::core::v1::Secret) -> crate::index::Filing<crate::index::Named> {
    use kube::ResourceExt;
    let type_ = secret.type_.as_deref().filter(|t| [INVITE_TOKEN_TYPE, RESET_TOKEN_TYPE].contains(t))?;
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
