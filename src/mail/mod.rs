//! Email: SMTP settings from a Secret, the message roster sends (multipart text + HTML from
//! [`templates`]), and delivery over lettre's pooled async SMTP transport with failures
//! classified as worth retrying or not. No credential reaches an error or a log.

pub mod templates;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

pub use templates::{
    Invitation, Rendered, ResetNotice, SecurityNotice, TemplateError, Templates, for_people,
};

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain text: for a local relay only.
    None,
    /// Upgrade with STARTTLS (usually port 587).
    StartTls,
    /// TLS from the first byte (usually port 465).
    Tls,
}

/// SMTP settings, as the Secret named by `--smtp-secret` holds them (keys `host`, `port`,
/// `username`, `password`, `from`, `tls`: none | starttls | tls).
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    /// Server host name.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Login, with `password`; both or neither.
    pub username: Option<String>,
    /// Password for `username`. Never printed: `Debug` hides it.
    pub password: Option<String>,
    /// The sender, e.g. `Example Corp <no-reply@example.com>`.
    pub from: Mailbox,
    /// Connection security.
    pub tls: TlsMode,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from.to_string())
            .field("tls", &self.tls)
            .finish()
    }
}

/// Why SMTP settings are unusable; names the key, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A required key is missing or empty.
    #[error("the SMTP Secret has no {0:?}")]
    Missing(&'static str),
    /// A key's value is not valid.
    #[error("the SMTP Secret's {key:?} is invalid: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is expected.
        reason: &'static str,
    },
}

impl SmtpSettings {
    /// Reads settings from a Secret's `data`. `port` defaults by `tls` (25, 587, 465) and
    /// `tls` to starttls.
    pub fn from_secret_data(data: &BTreeMap<String, ByteString>) -> Result<Self, SettingsError> {
        let get = |key: &str| {
            data.get(key)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let tls = match get("tls").as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("starttls") => TlsMode::StartTls,
            Some("tls") => TlsMode::Tls,
            Some("none") => TlsMode::None,
            Some(_) => {
                return Err(SettingsError::Invalid { key: "tls", reason: "one of none, starttls, tls" });
            }
        };
        let port = match get("port") {
            Some(p) => {
                p.parse().map_err(|_| SettingsError::Invalid { key: "port", reason: "a port number" })?
            }
            None => match tls {
                TlsMode::None => 25,
                TlsMode::StartTls => 587,
                TlsMode::Tls => 465,
            },
        };
        let username = get("username");
        let password = get("password");
        if username.is_some() != password.is_some() {
            let missing = if username.is_some() { "password" } else { "username" };
            return Err(SettingsError::Missing(missing));
        }
        Ok(Self {
            host: get("host").ok_or(SettingsError::Missing("host"))?,
            port,
            username,
            password,
            from: get("from").ok_or(SettingsError::Missing("from"))?.parse().map_err(|_| {
                SettingsError::Invalid { key: "from", reason: "an address such as Name <user@example.com>" }
            })?,
            tls,
        })
    }
}

/// A failed delivery, classified for the retry policy. Messages carry the server's reply,
/// never credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying: connection failures, timeouts, 4xx replies.
    #[error("SMTP unavailable: {0}")]
    Unavailable(String),
    /// Not worth retrying: a 5xx reply, e.g. the address does not exist.
    #[error("SMTP rejected the message: {0}")]
    Rejected(String),
    /// The message could not be built (e.g. a recipient address lettre refuses).
    #[error("the message could not be built: {0}")]
    Message(String),
}

/// Sends email through one SMTP server, reusing connections.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

/// How long one SMTP exchange may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

impl Mailer {
    /// A mailer for `settings`.
    pub fn new(settings: &SmtpSettings) -> Result<Self, SendError> {
        let tls = |host: &str| {
            TlsParameters::new(host.to_owned()).map_err(|e| SendError::Message(format!("TLS settings: {e}")))
        };
        let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            .port(settings.port)
            .timeout(Some(SMTP_TIMEOUT))
            .tls(match settings.tls {
                TlsMode::None => Tls::None,
                TlsMode::StartTls => Tls::Required(tls(&settings.host)?),
                TlsMode::Tls => Tls::Wrapper(tls(&settings.host)?),
            });
        let builder = match (&settings.username, &settings.password) {
            (Some(user), Some(password)) => {
                builder.credentials(Credentials::new(user.clone(), password.clone()))
            }
            _ => builder,
        };
        Ok(Self { transport: builder.build(), from: settings.from.clone() })
    }

    /// Sends `mail` to `to`, with a Message-ID derived from `message_id` (stable for one
    /// delivery, so a retried send is recognisable as the same message).
    ///
    /// The exchange runs as a task of its own: a caller that stops waiting (a reconcile cut
    /// short at the end of its replica's term) leaves it to finish, instead of returning a
    /// pooled connection with a reply still unread, which would shift every later reply.
    pub async fn send(&self, to: &str, mail: &Rendered, message_id: &str) -> Result<(), SendError> {
        let message = build_message(&self.from, to, mail, message_id)?;
        let transport = self.transport.clone();
        match tokio::spawn(async move { transport.send(message).await }).await {
            Ok(sent) => sent.map(drop).map_err(classify),
            Err(stopped) => Err(SendError::Unavailable(format!("the SMTP exchange stopped: {stopped}"))),
        }
    }
}

/// The MIME message: multipart/alternative, text then HTML.
pub fn build_message(
    from: &Mailbox,
    to: &str,
    mail: &Rendered,
    message_id: &str,
) -> Result<Message, SendError> {
    let to: Mailbox =
        to.parse().map_err(|_| SendError::Message("the recipient is not a valid address".into()))?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject.clone())
        .message_id(Some(format!("<{message_id}@roster.dev>")))
        .multipart(MultiPart::alternative_plain_html(mail.text.clone(), mail.html.clone()))
        .map_err(|e| SendError::Message(e.to_string()))
}

fn classify(error: lettre::transport::smtp::Error) -> SendError {
    let text = error.to_string();
    if error.is_permanent() { SendError::Rejected(text) } else { SendError::Unavailable(text) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec()))).collect()
    }

    #[test]
    fn settings_with_defaults() {
        let settings = SmtpSettings::from_secret_data(&data(&[
            ("host", "smtp.example.com"),
            ("from", "Example <no-reply@example.com>"),
        ]))
        .unwrap();
        assert_eq!((settings.port, settings.tls), (587, TlsMode::StartTls));
        assert_eq!(settings.from.email.to_string(), "no-reply@example.com");
        let plain = SmtpSettings::from_secret_data(&data(&[
            ("host", "h"),
            ("from", "a@example.com"),
            ("tls", "none"),
        ]))
        .unwrap();
        assert_eq!(plain.port, 25);
    }

    #[test]
    fn settings_errors_name_the_key_and_never_the_password() {
        let cases = [
            (data(&[("from", "a@example.com")]), SettingsError::Missing("host")),
            (data(&[("host", "h")]), SettingsError::Missing("from")),
            (
                data(&[("host", "h"), ("from", "a@example.com"), ("username", "u")]),
                SettingsError::Missing("password"),
            ),
            (
                data(&[("host", "h"), ("from", "a@example.com"), ("password", "hunter2hunter2")]),
                SettingsError::Missing("username"),
            ),
            (
                data(&[("host", "h"), ("from", "a@example.com"), ("tls", "ssl3")]),
                SettingsError::Invalid { key: "tls", reason: "one of none, starttls, tls" },
            ),
            (
                data(&[("host", "h"), ("from", "not an address"), ("port", "25")]),
                SettingsError::Invalid { key: "from", reason: "an address such as Name <user@example.com>" },
            ),
        ];
        for (input, expected) in cases {
            let error = SmtpSettings::from_secret_data(&input).unwrap_err();
            assert_eq!(error, expected);
            assert!(!error.to_string().contains("hunter2"));
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let settings = SmtpSettings::from_secret_data(&data(&[
            ("host", "h"),
            ("from", "a@example.com"),
            ("username", "u"),
            ("password", "hunter2hunter2"),
        ]))
        .unwrap();
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn messages_are_multipart_alternative_with_a_stable_id() {
        let mail =
            Rendered { subject: "Hi".into(), text: "plain body".into(), html: "<p>html body</p>".into() };
        let from: Mailbox = "Example <no-reply@example.com>".parse().unwrap();
        let message = build_message(&from, "jane@example.com", &mail, "uid-1.0").unwrap();
        let raw = String::from_utf8(message.formatted()).unwrap();
        assert!(raw.contains("Message-ID: <uid-1.0@roster.dev>"), "{raw}");
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert!(raw.contains("plain body") && raw.contains("<p>html body</p>"), "{raw}");
        assert!(build_message(&from, "not an address", &mail, "x").is_err());
    }
}
