//! Where the issuer's state lives: Secrets in the User's namespace — a sign-in session
//! (`<user>-session-<10 hex>`) owned by the User, and a grant per client
//! (`<user>-grant-<10 hex>`) owned by its session — and, for a device sign-in not yet
//! allowed, `<client>-device-<10 hex>` in the client's namespace, owned by the OidcClient. They survive restarts, every replica reads
//! them, and the garbage collector removes a session's grants with it and a User's sessions
//! with the User.
//!
//! A token names its Secret: `<locator>.<43 random characters>`, where the locator is the
//! base64url of `namespace/name` (public: it says which Secret to read, not what is in it).
//! Only names roster gives are ever looked up.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::{Client, ResourceExt};

use crate::controller::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::credentials::{CredentialError, Token, hash_token};

/// The kinds of state Secret, by the word in their names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A sign-in session: what the browser's cookie names.
    Session,
    /// What a sign-in gave one client: its code, then its refresh tokens.
    Grant,
    /// A device sign-in waiting for the person (RFC 8628): what its device code names.
    Device,
}

impl Kind {
    fn infix(self) -> &'static str {
        match self {
            Self::Session => "-session-",
            Self::Grant => "-grant-",
            Self::Device => "-device-",
        }
    }

    /// A fresh name for the user `user`'s state of this kind.
    pub fn new_name(self, user: &str) -> Result<String, StateError> {
        let suffix = hex::encode(crate::credentials::random_bytes::<5>().map_err(StateError::Random)?);
        Ok(format!("{user}{}{suffix}", self.infix()))
    }
}

/// The locator of the Secret `name` in `namespace`.
pub fn locator(namespace: &str, name: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{namespace}/{name}"))
}

/// The Secret of `kind` a locator names: `(namespace, name)`; `None` for anything else.
pub fn located(locator: &str, kind: Kind) -> Option<(String, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(locator).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (namespace, name) = text.split_once('/')?;
    // `<user><infix><10 hex>` in a namespace (a DNS label), where the user part is a DNS
    // subdomain.
    let label = |s: &str| {
        !s.is_empty()
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
    };
    let (user, suffix) = name.rsplit_once(kind.infix())?;
    let sound = namespace.len() <= 63
        && label(namespace)
        && name.len() <= 253
        && user.split('.').all(label)
        && suffix.len() == 10
        && suffix.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    sound.then(|| (namespace.to_owned(), name.to_owned()))
}

/// The Secret of `kind` a token names, and the hash the token is stored as.
pub fn token_target(token: &str, kind: Kind) -> Option<(String, String, String)> {
    let (locator, secret) = token.split_once('.')?;
    if secret.len() != 43 {
        return None;
    }
    let (namespace, name) = located(locator, kind)?;
    Some((namespace, name, hash_token(token)))
}

/// A fresh token for the Secret at `locator`.
pub fn new_token(locator: &str) -> Result<String, CredentialError> {
    Ok(format!("{locator}.{}", Token::generate()?.expose()))
}

/// A state Secret `name` of `type_`, labelled as roster's and with `labels`, controlled by
/// `owner` (the session's User, the grant's session), holding `data`.
pub fn secret(
    name: String,
    namespace: String,
    type_: &str,
    labels: &[(&str, String)],
    owner: OwnerReference,
    data: BTreeMap<&str, String>,
) -> Secret {
    let mut all = BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned())]);
    all.extend(labels.iter().map(|(key, value)| ((*key).to_owned(), value.clone())));
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace),
            labels: Some(all),
            owner_references: Some(vec![OwnerReference {
                controller: Some(true),
                block_owner_deletion: Some(false),
                ..owner
            }]),
            ..Default::default()
        },
        type_: Some(type_.to_owned()),
        data: Some(data.into_iter().map(|(k, v)| (k.to_owned(), ByteString(v.into_bytes()))).collect()),
        ..Default::default()
    }
}

/// `call` to the API server, given up after [`WRITE_DEADLINE`](crate::facts::WRITE_DEADLINE)
/// like a credentials write: a person waits seconds, not the client's retries of 504s.
async fn bounded<T>(call: impl Future<Output = kube::Result<T>>) -> Result<kube::Result<T>, StateError> {
    tokio::time::timeout(crate::facts::WRITE_DEADLINE, call).await.map_err(|_| StateError::TimedOut)
}

/// Creates a state Secret.
pub async fn create(client: &Client, secret: &Secret) -> Result<Secret, StateError> {
    let api = Api::<Secret>::namespaced(client.clone(), &secret.namespace().unwrap_or_default());
    bounded(api.create(&PostParams::default(), secret)).await?.map_err(|e| StateError::Kube(Box::new(e)))
}

/// The Secret `name` in `namespace`, as the API server has it now (a code is redeemed
/// moments after it was made, maybe by another replica: the watch may not have it yet).
pub async fn read(client: &Client, namespace: &str, name: &str) -> Result<Option<Secret>, StateError> {
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    bounded(api.get_opt(name)).await?.map_err(|e| StateError::Kube(Box::new(e)))
}

/// Deletes the Secret (the one that was judged, by uid; gone already is fine).
pub async fn delete(client: &Client, secret: &Secret) -> Result<(), StateError> {
    delete_named(
        client,
        &secret.namespace().unwrap_or_default(),
        &secret.name_any(),
        secret.metadata.uid.clone(),
    )
    .await
}

/// Deletes the Secret `name` in `namespace` if its uid is still `uid`.
pub async fn delete_named(
    client: &Client,
    namespace: &str,
    name: &str,
    uid: Option<String>,
) -> Result<(), StateError> {
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid, resource_version: None }),
        ..DeleteParams::default()
    };
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    match bounded(api.delete(name, &params)).await? {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(e) => Err(StateError::Kube(Box::new(e))),
    }
}

/// Why a session or grant could not be made, read or removed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The OS random source failed.
    #[error("no randomness for a token: {0}")]
    Random(CredentialError),
    /// The API server refused or was unreachable.
    #[error("writing or reading a session or grant: {0}")]
    Kube(Box<kube::Error>),
    /// A write under a resourceVersion precondition failed.
    #[error("updating a session: {0}")]
    Write(Box<crate::facts::WriteError>),
    /// The API server did not answer in time.
    #[error("the API server did not answer within {:?}", crate::facts::WRITE_DEADLINE)]
    TimedOut,
}

impl crate::facts::Transient for StateError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Random(_) => false,
            Self::TimedOut => true,
            Self::Kube(error) => crate::facts::unreachable(error),
            Self::Write(error) => error.is_transient(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locators_name_a_namespace_and_a_secret_of_one_kind_only() {
        let loc = locator("team", "jane-grant-0a1b2c3d4e");
        assert_eq!(located(&loc, Kind::Grant), Some(("team".into(), "jane-grant-0a1b2c3d4e".into())));
        assert_eq!(located(&loc, Kind::Session), None, "a grant is not a session");
        let session = locator("team", "jane-session-0a1b2c3d4e");
        assert_eq!(located(&session, Kind::Session).unwrap().1, "jane-session-0a1b2c3d4e");
        assert_eq!(located(&session, Kind::Grant), None);
        let token = format!("{loc}.{}", "a".repeat(43));
        assert_eq!(token_target(&token, Kind::Grant).unwrap().2, hash_token(&token));
        assert_eq!(located(&URL_SAFE_NO_PAD.encode("../x"), Kind::Grant), None);
        assert_eq!(located(&URL_SAFE_NO_PAD.encode("team/Jane-grant-0a1b2c3d4e"), Kind::Grant), None);
        assert_eq!(
            located(&URL_SAFE_NO_PAD.encode("team/jane-credentials"), Kind::Grant),
            None,
            "only roster's state is looked up"
        );
        let long = format!("team/{}-grant-0a1b2c3d4e", "a".repeat(56));
        assert!(located(&URL_SAFE_NO_PAD.encode(&long), Kind::Grant).is_some(), "a 56-character user name");
        assert_eq!(token_target(&format!("{loc}.short"), Kind::Grant), None);
        assert_eq!(token_target("garbage", Kind::Grant), None);
    }

    #[test]
    fn new_names_fit_the_locator() {
        let name = Kind::Session.new_name("jane").unwrap();
        assert_eq!(located(&locator("team", &name), Kind::Session), Some(("team".into(), name)));
    }
}
