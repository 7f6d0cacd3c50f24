//! Email templates: built in (English and German), each overridable by name (e.g. from a
//! ConfigMap), picked by the recipient's locale with a fallback to English. HTML templates
//! escape what they insert; plain-text ones do not need to.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use minijinja::Environment;

/// Languages with built-in templates; the first is the fallback.
pub const LANGUAGES: [&str; 2] = ["en", "de"];

const BUILT_IN: [(&str, &str); 30] = [
    ("invitation.en.subject.txt", include_str!("templates/invitation.en.subject.txt")),
    ("invitation.en.body.txt", include_str!("templates/invitation.en.body.txt")),
    ("invitation.en.body.html", include_str!("templates/invitation.en.body.html")),
    ("invitation.de.subject.txt", include_str!("templates/invitation.de.subject.txt")),
    ("invitation.de.body.txt", include_str!("templates/invitation.de.body.txt")),
    ("invitation.de.body.html", include_str!("templates/invitation.de.body.html")),
    ("mfa-reset.en.subject.txt", include_str!("templates/mfa-reset.en.subject.txt")),
    ("mfa-reset.en.body.txt", include_str!("templates/mfa-reset.en.body.txt")),
    ("mfa-reset.en.body.html", include_str!("templates/mfa-reset.en.body.html")),
    ("mfa-reset.de.subject.txt", include_str!("templates/mfa-reset.de.subject.txt")),
    ("mfa-reset.de.body.txt", include_str!("templates/mfa-reset.de.body.txt")),
    ("mfa-reset.de.body.html", include_str!("templates/mfa-reset.de.body.html")),
    ("password-reset.en.subject.txt", include_str!("templates/password-reset.en.subject.txt")),
    ("password-reset.en.body.txt", include_str!("templates/password-reset.en.body.txt")),
    ("password-reset.en.body.html", include_str!("templates/password-reset.en.body.html")),
    ("password-reset.de.subject.txt", include_str!("templates/password-reset.de.subject.txt")),
    ("password-reset.de.body.txt", include_str!("templates/password-reset.de.body.txt")),
    ("password-reset.de.body.html", include_str!("templates/password-reset.de.body.html")),
    ("verify-email.en.subject.txt", include_str!("templates/verify-email.en.subject.txt")),
    ("verify-email.en.body.txt", include_str!("templates/verify-email.en.body.txt")),
    ("verify-email.en.body.html", include_str!("templates/verify-email.en.body.html")),
    ("verify-email.de.subject.txt", include_str!("templates/verify-email.de.subject.txt")),
    ("verify-email.de.body.txt", include_str!("templates/verify-email.de.body.txt")),
    ("verify-email.de.body.html", include_str!("templates/verify-email.de.body.html")),
    ("security-notice.en.subject.txt", include_str!("templates/security-notice.en.subject.txt")),
    ("security-notice.en.body.txt", include_str!("templates/security-notice.en.body.txt")),
    ("security-notice.en.body.html", include_str!("templates/security-notice.en.body.html")),
    ("security-notice.de.subject.txt", include_str!("templates/security-notice.de.subject.txt")),
    ("security-notice.de.body.txt", include_str!("templates/security-notice.de.body.txt")),
    ("security-notice.de.body.html", include_str!("templates/security-notice.de.body.html")),
];

/// A time as emails and pages show it to people: `2026-11-24 10:00 UTC`.
pub fn for_people(time: Timestamp) -> String {
    time.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

/// A rendered email.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// One line.
    pub subject: String,
    /// The text/plain part.
    pub text: String,
    /// The text/html part.
    pub html: String,
}

/// What an invitation email says. Its `Debug` leaves the link out.
#[derive(Clone)]
pub struct Invitation {
    /// The organisation (`--org-name`).
    pub org: String,
    /// How the person is addressed.
    pub name: String,
    /// The single-use link.
    pub link: String,
    /// When the link expires, formatted for people.
    pub expires: String,
}

/// What the email about a reset (of the second factor, or of the password) says. Its
/// `Debug` leaves the link out.
#[derive(Clone)]
pub struct ResetNotice {
    /// The organisation (`--org-name`).
    pub org: String,
    /// How the person is addressed.
    pub name: String,
    /// The single-use link; `None` when an admin hands it over (the email then only tells
    /// the person of the reset).
    pub link: Option<String>,
    /// When the link expires, formatted for people.
    pub expires: String,
    /// The person asked for it (a forgotten password), not an admin.
    pub requested: bool,
}

/// What a security notice says: something changed about the account, and what to do if it
/// was not the person. Holds no secret.
#[derive(Clone, Debug)]
pub struct SecurityNotice {
    /// The organisation (`--org-name`).
    pub org: String,
    /// How the person is addressed.
    pub name: String,
    /// `password-changed`, `authenticator-replaced` or `locked`.
    pub event: &'static str,
    /// When it happened, formatted for people.
    pub at: String,
    /// For a lock that ends by itself, when, formatted for people.
    pub until: Option<String>,
}

impl std::fmt::Debug for Invitation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invitation")
            .field("org", &self.org)
            .field("name", &self.name)
            .field("link", &"<redacted>")
            .field("expires", &self.expires)
            .finish()
    }
}

impl std::fmt::Debug for ResetNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResetNotice")
            .field("org", &self.org)
            .field("name", &self.name)
            .field("link", &self.link.as_ref().map(|_| "<redacted>"))
            .field("expires", &self.expires)
            .field("requested", &self.requested)
            .finish()
    }
}

/// Why a template could not be rendered. Never contains the values rendered.
#[derive(Debug, thiserror::Error)]
#[error("email template {name}: {reason}")]
pub struct TemplateError {
    /// The template.
    pub name: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The templates in use: built-in ones, replaced by any overrides of the same name.
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// Built-in templates with `overrides` (template name → source) on top. Fails on an
    /// override that does not parse, naming it.
    pub fn new(overrides: &BTreeMap<String, String>) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        for (name, source) in BUILT_IN {
            env.add_template(name, source).map_err(|e| error(name, &e))?;
        }
        for (name, source) in overrides {
            env.add_template_owned(name.clone(), source.clone()).map_err(|e| error(name, &e))?;
        }
        Ok(Self { env })
    }

    /// Renders the invitation in `locale` (e.g. `de-AT` → `de`; unknown → English).
    pub fn invitation(
        &self,
        locale: Option<&str>,
        invitation: &Invitation,
    ) -> Result<Rendered, TemplateError> {
        let values = minijinja::context! {
            org => &invitation.org,
            name => &invitation.name,
            link => &invitation.link,
            expires => &invitation.expires,
        };
        self.render("invitation", locale, &values)
    }

    /// A notice with a single-use link: `template` is `mfa-reset`, `password-reset` or
    /// `verify-email`.
    pub fn notice(
        &self,
        template: &str,
        locale: Option<&str>,
        notice: &ResetNotice,
    ) -> Result<Rendered, TemplateError> {
        let values = minijinja::context! {
            org => &notice.org,
            name => &notice.name,
            link => &notice.link,
            expires => &notice.expires,
            requested => notice.requested,
        };
        self.render(template, locale, &values)
    }

    /// Renders a security notice (`security-notice.<language>.…`) in `locale`.
    pub fn security_notice(
        &self,
        locale: Option<&str>,
        notice: &SecurityNotice,
    ) -> Result<Rendered, TemplateError> {
        let values = minijinja::context! {
            org => &notice.org,
            name => &notice.name,
            event => notice.event,
            at => &notice.at,
            until => &notice.until,
        };
        self.render("security-notice", locale, &values)
    }

    fn render(
        &self,
        kind: &str,
        locale: Option<&str>,
        values: &minijinja::Value,
    ) -> Result<Rendered, TemplateError> {
        let language = self.language(locale, kind);
        let render = |part: &str| -> Result<String, TemplateError> {
            let name = format!("{kind}.{language}.{part}");
            let template = self.env.get_template(&name).map_err(|e| error(&name, &e))?;
            template.render(values).map_err(|e| error(&name, &e))
        };
        Ok(Rendered {
            subject: render("subject.txt")?.lines().next().unwrap_or_default().trim().to_owned(),
            text: render("body.txt")?,
            html: render("body.html")?,
        })
    }

    /// The language of `locale` that has templates for `kind`, else English.
    fn language(&self, locale: Option<&str>, kind: &str) -> String {
        let primary = locale.and_then(|l| l.split(['-', '_']).next()).unwrap_or_default().to_lowercase();
        if !primary.is_empty() && self.env.get_template(&format!("{kind}.{primary}.subject.txt")).is_ok() {
            primary
        } else {
            LANGUAGES[0].to_owned()
        }
    }
}

fn error(name: &str, e: &minijinja::Error) -> TemplateError {
    TemplateError {
        name: name.to_owned(),
        reason: e.kind().to_string() + &e.detail().map(|d| format!(": {d}")).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn debug_never_shows_a_link() {
        let link = "https://accounts.example.com/invite/SECRET-TOKEN-123";
        let invitation =
            Invitation { org: "o".into(), name: "n".into(), link: link.into(), expires: "e".into() };
        let notice = ResetNotice {
            org: "o".into(),
            name: "n".into(),
            link: Some(link.into()),
            expires: "e".into(),
            requested: false,
        };
        for shown in [format!("{invitation:?}"), format!("{notice:?}")] {
            assert!(!shown.contains("SECRET-TOKEN") && shown.contains("<redacted>"), "{shown}");
        }
    }

    use super::*;

    fn invitation() -> Invitation {
        Invitation {
            org: "Example Corp".into(),
            name: "Jane <b>Doe</b>".into(),
            link: "https://portal.example.com/invite/abc?x=1&y=2".into(),
            expires: "2026-12-23 10:00 UTC".into(),
        }
    }

    #[test]
    fn english_by_default_with_every_fact() {
        let mail = Templates::new(&BTreeMap::new()).unwrap().invitation(None, &invitation()).unwrap();
        assert_eq!(mail.subject, "Example Corp: you are invited to set up your account");
        for part in [&mail.text, &mail.html] {
            assert!(part.contains("Example Corp") && part.contains("2026-12-23 10:00 UTC"), "{part}");
        }
        assert!(mail.text.contains("https://portal.example.com/invite/abc?x=1&y=2"));
        assert!(mail.text.contains("Jane <b>Doe</b>"), "plain text is not escaped");
    }

    #[test]
    fn html_escapes_what_it_inserts() {
        let mail = Templates::new(&BTreeMap::new()).unwrap().invitation(None, &invitation()).unwrap();
        assert!(
            mail.html.contains("Jane &lt;b&gt;Doe&lt;&#x2f;b&gt;")
                || mail.html.contains("Jane &lt;b&gt;Doe&lt;/b&gt;"),
            "{}",
            mail.html
        );
        assert!(mail.html.contains("x=1&amp;y=2"), "{}", mail.html);
    }

    #[test]
    fn the_locale_picks_the_language_and_falls_back_to_english() {
        let templates = Templates::new(&BTreeMap::new()).unwrap();
        for (locale, needle) in [
            (Some("de"), "Einladung"),
            (Some("de-AT"), "Einladung"),
            (Some("fr"), "invited"),
            (None, "invited"),
        ] {
            let mail = templates.invitation(locale, &invitation()).unwrap();
            assert!(mail.subject.contains(needle), "{locale:?}: {}", mail.subject);
        }
    }

    #[test]
    fn overrides_replace_built_in_templates_and_add_languages() {
        let overrides = BTreeMap::from([
            ("invitation.en.subject.txt".to_owned(), "Welcome to {{ org }}".to_owned()),
            ("invitation.fr.subject.txt".to_owned(), "Bienvenue chez {{ org }}".to_owned()),
            ("invitation.fr.body.txt".to_owned(), "Bonjour {{ name }}: {{ link }}".to_owned()),
            ("invitation.fr.body.html".to_owned(), "<p>Bonjour {{ name }}</p>".to_owned()),
        ]);
        let templates = Templates::new(&overrides).unwrap();
        assert_eq!(
            templates.invitation(Some("en"), &invitation()).unwrap().subject,
            "Welcome to Example Corp"
        );
        assert_eq!(
            templates.invitation(Some("fr-CA"), &invitation()).unwrap().subject,
            "Bienvenue chez Example Corp"
        );
    }

    #[test]
    fn a_reset_notice_carries_the_link_only_when_emailed() {
        let templates = Templates::new(&BTreeMap::new()).unwrap();
        let mut notice = ResetNotice {
            org: "Example Corp".into(),
            name: "Jane".into(),
            link: Some("https://portal.example.com/mfa-reset/abc".into()),
            expires: "2026-12-24 10:00 UTC".into(),
            requested: false,
        };
        let emailed = templates.notice("mfa-reset", Some("en"), &notice).unwrap();
        assert_eq!(emailed.subject, "Example Corp: your second factor was reset");
        assert!(emailed.text.contains("/mfa-reset/abc") && emailed.html.contains("mfa-reset&#x2f;abc"));
        notice.link = None;
        let told = templates.notice("mfa-reset", Some("de-DE"), &notice).unwrap();
        assert!(told.subject.contains("zurückgesetzt") && !told.text.contains("mfa-reset/"), "{}", told.text);
    }

    #[test]
    fn every_security_notice_says_what_happened_and_what_to_do_in_both_languages() {
        let templates = Templates::new(&BTreeMap::new()).unwrap();
        for (event, english, german) in [
            ("password-changed", "password was changed", "Passwort wurde geändert"),
            ("authenticator-replaced", "authenticator app was replaced", "Authenticator-App wurde ersetzt"),
            ("locked", "account was locked", "Konto wurde gesperrt"),
        ] {
            let notice = SecurityNotice {
                org: "Example Corp".into(),
                name: "Jane".into(),
                event,
                at: "2026-11-24 10:00 UTC".into(),
                until: Some("2026-11-24 10:15 UTC".into()),
            };
            let en = templates.security_notice(Some("en"), &notice).unwrap();
            assert!(en.subject.contains(english), "{}", en.subject);
            assert!(en.text.contains("If this was not you") && en.html.contains("2026-11-24 10:00 UTC"));
            let de = templates.security_notice(Some("de"), &notice).unwrap();
            assert!(de.subject.contains(german), "{}", de.subject);
            assert!(de.text.contains("Waren Sie das nicht"), "{}", de.text);
        }
    }

    #[test]
    fn a_broken_override_is_refused_by_name() {
        let overrides = BTreeMap::from([("invitation.en.subject.txt".to_owned(), "{{ org ".to_owned())]);
        let error = Templates::new(&overrides).err().unwrap();
        assert_eq!(error.name, "invitation.en.subject.txt");
    }

    #[test]
    fn rendering_errors_do_not_echo_values() {
        let overrides = BTreeMap::from([(
            "invitation.en.subject.txt".to_owned(),
            "{{ link | nosuchfilter }}".to_owned(),
        )]);
        let templates = Templates::new(&overrides);
        let message = match templates {
            Err(e) => e.to_string(),
            Ok(t) => t.invitation(None, &invitation()).err().unwrap().to_string(),
        };
        assert!(!message.contains("portal.example.com/invite/abc"), "{message}");
    }
}
