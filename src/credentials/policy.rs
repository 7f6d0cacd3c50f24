//! The password policy, after NIST SP 800-63B §3.1.1.2: length (default 12 to 128
//! characters), nothing derived from the account's own identifiers, and nothing commonly
//! used. No composition rules: they do not help.

/// Why a password is refused. `Display` is the sentence shown next to the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyViolation {
    /// Fewer characters than the minimum.
    #[error("must be at least {min} characters long")]
    TooShort {
        /// The minimum.
        min: usize,
    },
    /// More characters than the maximum.
    #[error("must be at most {max} characters long")]
    TooLong {
        /// The maximum.
        max: usize,
    },
    /// Equal to or containing the username.
    #[error("must not contain your username")]
    ContainsUsername,
    /// Equal to or containing the local part of the email address.
    #[error("must not contain your email address")]
    ContainsEmail,
    /// A commonly used password, or close to one.
    #[error("is too common or too easy to guess; try a longer phrase of unrelated words")]
    TooCommon,
}

/// Rules every new password must pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Fewest characters (Unicode scalar values).
    pub min_length: usize,
    /// Most characters.
    pub max_length: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self { min_length: 12, max_length: 128 }
    }
}

/// Identifiers shorter than this are not checked for containment: nearly every password
/// would contain a one- or two-letter username.
const MIN_IDENTIFIER_LEN: usize = 3;

/// zxcvbn's score that counts as "not commonly used": 3 means about 10^10 guesses needed.
const MIN_SCORE: u8 = 3;

impl PasswordPolicy {
    /// Checks `password` for the account `username` / `email`; the first rule broken wins.
    pub fn check(&self, password: &str, username: &str, email: &str) -> Result<(), PolicyViolation> {
        let length = password.chars().count();
        if length < self.min_length {
            return Err(PolicyViolation::TooShort { min: self.min_length });
        }
        if length > self.max_length {
            return Err(PolicyViolation::TooLong { max: self.max_length });
        }
        let lowered = password.to_lowercase();
        let contains = |identifier: &str| {
            identifier.chars().count() >= MIN_IDENTIFIER_LEN && lowered.contains(&identifier.to_lowercase())
        };
        if contains(username) {
            return Err(PolicyViolation::ContainsUsername);
        }
        let local_part = email.split('@').next().unwrap_or_default();
        if contains(local_part) || contains(email) {
            return Err(PolicyViolation::ContainsEmail);
        }
        let estimate = zxcvbn::zxcvbn(password, &[username, email, local_part]);
        if (estimate.score() as u8) < MIN_SCORE {
            return Err(PolicyViolation::TooCommon);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "jane.doe";
    const EMAIL: &str = "jane.d@example.com";

    #[test]
    fn each_rule_in_turn() {
        let policy = PasswordPolicy::default();
        let cases: &[(&str, Result<(), PolicyViolation>)] = &[
            ("short", Err(PolicyViolation::TooShort { min: 12 })),
            ("elevenchars", Err(PolicyViolation::TooShort { min: 12 })),
            (&"x".repeat(129), Err(PolicyViolation::TooLong { max: 128 })),
            ("my jane.doe password!", Err(PolicyViolation::ContainsUsername)),
            ("JANE.DOE-forever-and-ever", Err(PolicyViolation::ContainsUsername)),
            ("jane.d likes tea a lot", Err(PolicyViolation::ContainsEmail)),
            ("password1234", Err(PolicyViolation::TooCommon)),
            ("qwertyuiop123", Err(PolicyViolation::TooCommon)),
            ("aaaaaaaaaaaaaaaa", Err(PolicyViolation::TooCommon)),
            ("correct horse battery staple", Ok(())),
            ("Velvet-Lantern-Orbit-42", Ok(())),
        ];
        for (password, expected) in cases {
            assert_eq!(&policy.check(password, USER, EMAIL), expected, "{password:?}");
        }
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        let policy = PasswordPolicy { min_length: 12, max_length: 12 };
        assert_eq!(policy.check("ääääääääääää", USER, EMAIL).err(), Some(PolicyViolation::TooCommon));
        assert!(policy.check("ß∂ƒ©˙∆˚¬…æΩç", USER, EMAIL).is_ok());
    }

    #[test]
    fn very_short_identifiers_are_not_containment_checked() {
        let policy = PasswordPolicy::default();
        assert!(policy.check("Velvet-Lantern-Orbit-42", "ve", "ve@example.com").is_ok());
    }

    #[test]
    fn messages_say_which_rule_failed() {
        assert_eq!(PolicyViolation::TooShort { min: 12 }.to_string(), "must be at least 12 characters long");
        assert_eq!(PolicyViolation::ContainsUsername.to_string(), "must not contain your username");
    }
}
