//! The issuer's signing keys: what the keys Secret holds, when a key is rotated and when a
//! retired one may go (pure, given a way to make a key), and the loaded form that signs
//! tokens and answers the JWKS. One current key per algorithm (RS256 for every relying party,
//! ES256 for clients that ask for it); a retired key stays published until every token it
//! signed has expired.

use std::collections::BTreeMap;

use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::api::SigningAlgorithm;

/// Key of the key list (JSON) in the keys Secret.
pub const KEYS: &str = "keys.json";

/// Why keys could not be made or read. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The cryptographic library refused to generate a key.
    #[error("generating a {0} signing key failed")]
    Generate(&'static str),
    /// The stored list is not what roster writes.
    #[error("the signing keys are unreadable: {0}")]
    Unreadable(String),
    /// A stored key does not load.
    #[error("signing key {kid} does not load: {reason}")]
    Load {
        /// The key's id (public).
        kid: String,
        /// What the library said.
        reason: String,
    },
}

/// One key as the Secret stores it. (Its `Debug` leaves the private key out.)
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredKey {
    /// The key id (`kid`): random, public.
    pub kid: String,
    /// What it signs with.
    pub alg: SigningAlgorithm,
    /// The private key, PKCS#8 PEM.
    pub pem: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// When a newer key took over; it is published until `retired_at` + the longest token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<Timestamp>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// `at` + `span`, or the far future when that overflows (a damaged timestamp must not
/// panic the key keeper).
fn after(at: Timestamp, span: SignedDuration) -> Timestamp {
    at.checked_add(span).unwrap_or(Timestamp::MAX)
}

/// How long keys live.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// A key signs for this long before a new one takes over.
    pub rotation: SignedDuration,
    /// A retired key stays in the JWKS this long: the longest a signed token may live.
    pub keep: SignedDuration,
}

/// The longest any token roster signs may live (the OidcClient schema's bound), plus a
/// margin for relying parties' clock skew: how long a retired key is kept.
pub const KEEP_RETIRED: SignedDuration = SignedDuration::from_hours(25);

/// The key list after rotation at `now`: a new current key for each algorithm whose current
/// key is missing or older than the rotation (the old one retired), and retired keys past
/// their keeping dropped. `None` when nothing changes.
pub fn rotated(
    stored: &[StoredKey],
    now: Timestamp,
    schedule: Schedule,
    mut make: impl FnMut(SigningAlgorithm) -> Result<StoredKey, KeyError>,
) -> Result<Option<Vec<StoredKey>>, KeyError> {
    let mut keys: Vec<StoredKey> = stored
        .iter()
        .filter(|key| key.retired_at.is_none_or(|retired| after(retired, schedule.keep) > now))
        .cloned()
        .collect();
    let mut changed = keys.len() != stored.len();
    for alg in [SigningAlgorithm::RS256, SigningAlgorithm::ES256] {
        let current = keys.iter().rposition(|key| key.alg == alg && key.retired_at.is_none());
        let due = current.is_none_or(|i| after(keys[i].created_at, schedule.rotation) <= now);
        if due {
            if let Some(i) = current {
                keys[i].retired_at = Some(now);
            }
            keys.push(make(alg)?);
            changed = true;
        }
    }
    Ok(changed.then_some(keys))
}

/// When [`rotated`] next has something to do.
pub fn next_change(stored: &[StoredKey], schedule: Schedule) -> Option<Timestamp> {
    stored
        .iter()
        .map(|key| match key.retired_at {
            Some(retired) => after(retired, schedule.keep),
            None => after(key.created_at, schedule.rotation),
        })
        .min()
}

/// Reads the key list from the Secret's value.
pub fn parse(json: &[u8]) -> Result<Vec<StoredKey>, KeyError> {
    serde_json::from_slice(json).map_err(|e| KeyError::Unreadable(e.to_string()))
}

/// Makes a fresh key for `alg` with a random id, created `now`.
pub fn generate(alg: SigningAlgorithm, now: Timestamp) -> Result<StoredKey, KeyError> {
    use aws_lc_rs::encoding::AsDer;
    let der = match alg {
        SigningAlgorithm::RS256 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| KeyError::Generate("RS256"))?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der<'_> =
                pair.as_der().map_err(|_| KeyError::Generate("RS256"))?;
            der.as_ref().to_vec()
        }
        SigningAlgorithm::ES256 => {
            let pair = aws_lc_rs::signature::EcdsaKeyPair::generate(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            )
            .map_err(|_| KeyError::Generate("ES256"))?;
            pair.to_pkcs8v1().map_err(|_| KeyError::Generate("ES256"))?.as_ref().to_vec()
        }
    };
    let kid = crate::credentials::Token::generate().map_err(|_| KeyError::Generate("key id"))?;
    Ok(StoredKey {
        kid: kid.expose().chars().take(16).collect(),
        alg,
        pem: pem::encode(&pem::Pem::new("PRIVATE KEY", der)),
        created_at: now,
        retired_at: None,
    })
}

/// The keys, loaded: the current one of each algorithm signs; all are published and verify.
pub struct Keyring {
    signing: BTreeMap<SigningAlgorithm, (String, EncodingKey)>,
    verifying: BTreeMap<String, (Algorithm, DecodingKey)>,
    jwks: JwkSet,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("kids", &self.verifying.keys().collect::<Vec<_>>()).finish()
    }
}

impl Keyring {
    /// Loads every stored key; the newest unretired key of each algorithm signs.
    pub fn load(stored: &[StoredKey]) -> Result<Self, KeyError> {
        let mut signing = BTreeMap::new();
        let mut verifying = BTreeMap::new();
        let mut jwks = JwkSet { keys: Vec::new() };
        for key in stored {
            let fail = |e: jsonwebtoken::errors::Error| KeyError::Load {
                kid: key.kid.clone(),
                reason: e.to_string(),
            };
            let algorithm = algorithm(key.alg);
            let encoding = match key.alg {
                SigningAlgorithm::RS256 => EncodingKey::from_rsa_pem(key.pem.as_bytes()),
                SigningAlgorithm::ES256 => EncodingKey::from_ec_pem(key.pem.as_bytes()),
            }
            .map_err(fail)?;
            let mut jwk = Jwk::from_encoding_key(&encoding, algorithm).map_err(fail)?;
            jwk.common.key_id = Some(key.kid.clone());
            jwk.common.public_key_use = Some(PublicKeyUse::Signature);
            verifying.insert(key.kid.clone(), (algorithm, DecodingKey::from_jwk(&jwk).map_err(fail)?));
            jwks.keys.push(jwk);
            if key.retired_at.is_none() {
                signing.insert(key.alg, (key.kid.clone(), encoding));
            }
        }
        Ok(Self { signing, verifying, jwks })
    }

    /// The key that signs with `alg` now, and its id.
    pub fn signer(&self, alg: SigningAlgorithm) -> Option<(&str, &EncodingKey)> {
        self.signing.get(&alg).map(|(kid, key)| (kid.as_str(), key))
    }

    /// The published key `kid`, to verify a token roster signed.
    pub fn verifier(&self, kid: &str) -> Option<&(Algorithm, DecodingKey)> {
        self.verifying.get(kid)
    }

    /// The public keys, as `/keys` answers them.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }
}

/// The JWT algorithm of a signing algorithm.
pub fn algorithm(alg: SigningAlgorithm) -> Algorithm {
    match alg {
        SigningAlgorithm::RS256 => Algorithm::RS256,
        SigningAlgorithm::ES256 => Algorithm::ES256,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULE: Schedule =
        Schedule { rotation: SignedDuration::from_hours(24 * 30), keep: SignedDuration::from_hours(25) };

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn fake(alg: SigningAlgorithm, created: &str) -> StoredKey {
        StoredKey {
            kid: format!("{alg:?}-{created}"),
            alg,
            pem: String::new(),
            created_at: at(created),
            retired_at: None,
        }
    }

    fn maker(now: &'static str) -> impl FnMut(SigningAlgorithm) -> Result<StoredKey, KeyError> {
        move |alg| Ok(fake(alg, now))
    }

    #[test]
    fn a_key_of_each_algorithm_is_made_at_first_and_then_nothing_changes() {
        let now = "2026-01-01T00:00:00Z";
        let first = rotated(&[], at(now), SCHEDULE, maker(now)).unwrap().unwrap();
        assert_eq!(
            first.iter().map(|k| k.alg).collect::<Vec<_>>(),
            [SigningAlgorithm::RS256, SigningAlgorithm::ES256]
        );
        assert_eq!(rotated(&first, at("2026-01-20T00:00:00Z"), SCHEDULE, maker(now)).unwrap(), None);
        assert_eq!(next_change(&first, SCHEDULE), Some(at("2026-01-31T00:00:00Z")));
    }

    #[test]
    fn a_due_key_is_retired_kept_for_the_longest_token_and_then_dropped() {
        let start = "2026-01-01T00:00:00Z";
        let first = rotated(&[], at(start), SCHEDULE, maker(start)).unwrap().unwrap();
        let due = "2026-01-31T00:00:00Z";
        let second = rotated(&first, at(due), SCHEDULE, maker(due)).unwrap().unwrap();
        assert_eq!(second.len(), 4, "the old keys stay published");
        assert!(second[..2].iter().all(|k| k.retired_at == Some(at(due))));
        assert!(second[2..].iter().all(|k| k.retired_at.is_none() && k.created_at == at(due)));
        assert_eq!(next_change(&second, SCHEDULE), Some(at("2026-02-01T01:00:00Z")));
        assert_eq!(rotated(&second, at("2026-02-01T00:59:59Z"), SCHEDULE, maker(due)).unwrap(), None);
        let third = rotated(&second, at("2026-02-01T01:00:00Z"), SCHEDULE, maker(due)).unwrap().unwrap();
        assert_eq!(third, second[2..].to_vec(), "retired keys go once no token they signed lives");
    }

    #[test]
    fn generated_keys_sign_and_the_published_keys_verify() {
        let now = Timestamp::now();
        let keys = vec![
            generate(SigningAlgorithm::RS256, now).unwrap(),
            generate(SigningAlgorithm::ES256, now).unwrap(),
        ];
        let ring = Keyring::load(&keys).unwrap();
        assert_eq!(ring.jwks().keys.len(), 2);
        let json = serde_json::to_string(ring.jwks()).unwrap();
        assert!(!json.contains("\"d\""), "no private part in the JWKS");
        for alg in [SigningAlgorithm::RS256, SigningAlgorithm::ES256] {
            let (kid, key) = ring.signer(alg).unwrap();
            let mut header = jsonwebtoken::Header::new(algorithm(alg));
            header.kid = Some(kid.to_owned());
            let token =
                jsonwebtoken::encode(&header, &serde_json::json!({"sub": "x", "exp": 4_000_000_000u64}), key)
                    .unwrap();
            let (algorithm, verifier) = ring.verifier(kid).unwrap();
            let mut validation = jsonwebtoken::Validation::new(*algorithm);
            validation.required_spec_claims.clear();
            validation.validate_aud = false;
            jsonwebtoken::decode::<serde_json::Value>(&token, verifier, &validation).unwrap();
        }
    }
}
