//! The tokens roster signs: the ID token (for the client: who signed in, how and when) and
//! the access token (a JWT for userinfo and resource servers, RFC 9068), and reading an
//! access token back.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Header, Validation};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::grant::Grant;
use super::keys::{Keyring, algorithm};
use crate::api::SigningAlgorithm;

/// Why a token could not be signed. Carries no key material.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// No current key for the algorithm.
    #[error("no {0:?} signing key")]
    NoKey(SigningAlgorithm),
    /// The JWT library failed.
    #[error("signing failed: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    /// No randomness for the token id.
    #[error("no randomness for a token id")]
    Random,
}

/// What one issuance signs.
pub struct Signing<'a> {
    /// The issuer URL.
    pub issuer: &'a str,
    /// The keys.
    pub ring: &'a Keyring,
    /// The client's ID token algorithm.
    pub alg: SigningAlgorithm,
    /// Now.
    pub now: Timestamp,
}

impl Signing<'_> {
    fn sign(&self, alg: SigningAlgorithm, typ: &str, claims: &Value) -> Result<String, SignError> {
        let (kid, key) = self.ring.signer(alg).ok_or(SignError::NoKey(alg))?;
        let mut header = Header::new(algorithm(alg));
        header.kid = Some(kid.to_owned());
        header.typ = Some(typ.to_owned());
        Ok(jsonwebtoken::encode(&header, claims, key)?)
    }

    /// The access token for `grant` (`sid` locates it), valid for `lifetime`.
    pub fn access_token(
        &self,
        grant: &Grant,
        sid: &str,
        lifetime: SignedDuration,
    ) -> Result<String, SignError> {
        let jti = crate::credentials::Token::generate().map_err(|_| SignError::Random)?;
        let scopes: Vec<&str> = grant.scopes.iter().map(|s| s.as_str()).collect();
        let claims = json!({
            "iss": self.issuer,
            "sub": grant.user_uid,
            "aud": grant.client,
            "client_id": grant.client,
            "scope": scopes.join(" "),
            "iat": self.now.as_second(),
            "exp": (self.now + lifetime).as_second(),
            "jti": jti.expose(),
            "sid": sid,
        });
        // Access tokens are always RS256: resource servers expect it.
        self.sign(SigningAlgorithm::RS256, "at+jwt", &claims)
    }

    /// The ID token: the person's `claims`, how and when they signed in, the nonce (at the
    /// code exchange), and `at_hash` of `access_token`.
    pub fn id_token(
        &self,
        grant: &Grant,
        person: Map<String, Value>,
        access_token: &str,
        nonce: Option<&str>,
        sid: &str,
        lifetime: SignedDuration,
    ) -> Result<String, SignError> {
        let mut claims = person;
        for (key, value) in [
            ("iss", json!(self.issuer)),
            ("aud", json!(grant.client)),
            ("azp", json!(grant.client)),
            ("iat", json!(self.now.as_second())),
            ("exp", json!((self.now + lifetime).as_second())),
            ("auth_time", json!(grant.auth_time.as_second())),
            ("amr", json!(grant.amr)),
            ("at_hash", json!(at_hash(access_token))),
            ("sid", json!(sid)),
        ] {
            claims.insert(key.into(), value);
        }
        if let Some(nonce) = nonce {
            claims.insert("nonce".into(), json!(nonce));
        }
        self.sign(self.alg, "JWT", &Value::Object(claims))
    }
}

/// OpenID Connect Core §3.1.3.6: the left half of the SHA-256 of the access token,
/// base64url (SHA-256 for both RS256 and ES256).
pub fn at_hash(access_token: &str) -> String {
    let digest = Sha256::digest(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// What userinfo needs of an access token.
#[derive(Debug, Deserialize)]
pub struct AccessClaims {
    /// The User's uid.
    pub sub: String,
    /// The grant's locator.
    pub sid: String,
}

/// Reads an access token roster signed (any published key), checking issuer and expiry;
/// `None` for anything else.
pub fn verify_access_token(ring: &Keyring, issuer: &str, token: &str) -> Option<AccessClaims> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    if header.typ.as_deref() != Some("at+jwt") {
        return None;
    }
    let (alg, key) = ring.verifier(header.kid.as_deref()?)?;
    let mut validation = Validation::new(*alg);
    validation.set_issuer(&[issuer]);
    validation.validate_aud = false;
    validation.leeway = 0;
    jsonwebtoken::decode::<AccessClaims>(token, key, &validation).ok().map(|data| data.claims)
}

/// What logout needs of an ID token it is given as `id_token_hint`.
#[derive(Debug, Deserialize)]
pub struct IdHint {
    /// The client it was issued to.
    pub aud: String,
    /// The User's uid.
    pub sub: String,
    /// The grant's locator.
    pub sid: String,
}

/// Reads an ID token roster signed (any published key), checking the issuer but not the
/// expiry (RP-Initiated Logout: an expired ID token is still a fine hint); `None` for
/// anything else.
pub fn verify_id_token_hint(ring: &Keyring, issuer: &str, token: &str) -> Option<IdHint> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    if header.typ.as_deref() != Some("JWT") {
        return None;
    }
    let (alg, key) = ring.verifier(header.kid.as_deref()?)?;
    let mut validation = Validation::new(*alg);
    validation.set_issuer(&[issuer]);
    validation.validate_aud = false;
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<IdHint>(token, key, &validation).ok().map(|data| data.claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Scope;
    use crate::oidc::keys;

    #[test]
    fn at_hash_follows_the_spec_example() {
        // OpenID Connect Core, Appendix A.3 (RS256): access token and its at_hash.
        assert_eq!(at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"), "77QmUPtjPfzWtF2AnpK9RQ");
    }

    #[test]
    fn access_tokens_verify_here_and_id_tokens_do_not_pass_as_access_tokens() {
        let now = Timestamp::now();
        let ring = keys::Keyring::load(&[
            keys::generate(SigningAlgorithm::RS256, now).unwrap(),
            keys::generate(SigningAlgorithm::ES256, now).unwrap(),
        ])
        .unwrap();
        let grant = super::super::grant::tests_grant(vec![Scope::OpenId]);
        let signing =
            Signing { issuer: "https://id.example.com", ring: &ring, alg: SigningAlgorithm::ES256, now };
        let access = signing.access_token(&grant, "sid-1", SignedDuration::from_mins(5)).unwrap();
        let read = verify_access_token(&ring, "https://id.example.com", &access).unwrap();
        assert_eq!((read.sub.as_str(), read.sid.as_str()), ("u1", "sid-1"));
        assert!(verify_access_token(&ring, "https://other.example.com", &access).is_none());
        let id = signing
            .id_token(&grant, Map::new(), &access, Some("n"), "sid-1", SignedDuration::from_mins(5))
            .unwrap();
        assert!(
            verify_access_token(&ring, "https://id.example.com", &id).is_none(),
            "an ID token is no access token"
        );
        let header = jsonwebtoken::decode_header(&id).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256, "the client's algorithm");
        let expired = Signing { now: now - SignedDuration::from_hours(1), ..signing };
        let old = expired.access_token(&grant, "sid-1", SignedDuration::from_mins(5)).unwrap();
        assert!(verify_access_token(&ring, "https://id.example.com", &old).is_none());
    }

    #[test]
    fn an_expired_id_token_is_a_logout_hint_an_access_token_is_not() {
        let now = Timestamp::now();
        let ring = keys::Keyring::load(&[keys::generate(SigningAlgorithm::RS256, now).unwrap()]).unwrap();
        let grant = super::super::grant::tests_grant(vec![Scope::OpenId]);
        let old = Signing {
            issuer: "https://id.example.com",
            ring: &ring,
            alg: SigningAlgorithm::RS256,
            now: now - SignedDuration::from_hours(2),
        };
        let access = old.access_token(&grant, "sid-1", SignedDuration::from_mins(5)).unwrap();
        let person = Map::from_iter([("sub".to_owned(), json!("u1"))]);
        let id = old.id_token(&grant, person, &access, None, "sid-1", SignedDuration::from_mins(5)).unwrap();
        let hint = verify_id_token_hint(&ring, "https://id.example.com", &id).unwrap();
        assert_eq!((hint.aud.as_str(), hint.sub.as_str(), hint.sid.as_str()), ("team.app", "u1", "sid-1"));
        assert!(verify_id_token_hint(&ring, "https://other.example.com", &id).is_none());
        assert!(verify_id_token_hint(&ring, "https://id.example.com", &access).is_none());
        let mut forged = id.clone();
        forged.pop();
        assert!(verify_id_token_hint(&ring, "https://id.example.com", &forged).is_none());
    }
}
