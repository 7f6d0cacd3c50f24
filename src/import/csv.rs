//! People from a CSV file with a header row. Header names map to User fields (compared
//! without case, spaces, `_` or `-`, with the aliases exports use: `firstName`, `lastName`,
//! `mobilePhone`, …; a bare `name` is the display name, as exports mean it); `groups` holds
//! several, separated by `;`; `metadata.name` sets the User's name;
//! every other column becomes an attribute named as its header. Values are trimmed; an empty
//! cell leaves the field unset. A UTF-8 byte-order mark, CRLF line ends and quoted fields
//! (commas, quotes, line breaks inside) are read as spreadsheets write them.

use std::collections::BTreeMap;

use super::{Candidate, Defaults, finish};
use crate::api::admission::Admission;

/// Why the file as a whole cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    /// Not UTF-8 text.
    #[error(
        "{0}: save the file as UTF-8 (in Excel: \"CSV UTF-8\"; in LibreOffice: character set Unicode (UTF-8))"
    )]
    Encoding(String),
    /// The CSV structure is broken.
    #[error("{0}")]
    Malformed(String),
    /// The header row lacks a column every row needs, or names one twice.
    #[error("{0}")]
    Header(String),
}

/// What a column holds.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Column {
    Name,
    Email,
    Username,
    GivenName,
    FamilyName,
    DisplayName,
    Phone,
    Locale,
    Timezone,
    Groups,
    Attribute(String),
}

/// The column a header names.
fn column(header: &str) -> Column {
    let key: String =
        header.chars().filter(|c| !matches!(c, ' ' | '_' | '-')).flat_map(char::to_lowercase).collect();
    match key.as_str() {
        "metadata.name" | "resourcename" => Column::Name,
        "email" | "emailaddress" | "mail" | "primaryemail" => Column::Email,
        "username" | "login" | "userid" => Column::Username,
        "givenname" | "firstname" => Column::GivenName,
        "familyname" | "lastname" | "surname" => Column::FamilyName,
        "displayname" | "fullname" | "name" => Column::DisplayName,
        "phone" | "phonenumber" | "mobilephone" | "mobile" => Column::Phone,
        "locale" | "language" | "preferredlanguage" => Column::Locale,
        "timezone" | "zoneinfo" | "tz" => Column::Timezone,
        "groups" | "group" => Column::Groups,
        _ => Column::Attribute(header.trim().to_owned()),
    }
}

/// Reads `bytes` as CSV: one candidate per data row, or why the file cannot be read. A
/// header that cannot be an attribute's name (by `admission`'s rules) is refused once, for
/// the file, rather than on every row.
pub fn read(bytes: &[u8], defaults: &Defaults, admission: &Admission) -> Result<Vec<Candidate>, Unreadable> {
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(Unreadable::Encoding("the file is UTF-16".into()));
    }
    let mut reader = ::csv::ReaderBuilder::new().trim(::csv::Trim::All).from_reader(bytes);
    let headers = reader.headers().map_err(|e| unreadable(e, bytes, "the header row"))?.clone();
    let columns: Vec<Column> = headers.iter().map(column).collect();
    for (i, c) in columns.iter().enumerate() {
        if let Some(j) = columns[..i].iter().position(|earlier| earlier == c) {
            return Err(Unreadable::Header(format!(
                "columns {:?} and {:?} both give {}: keep one",
                &headers[j],
                &headers[i],
                describe(c)
            )));
        }
    }
    let attributes: Vec<&str> = columns
        .iter()
        .filter_map(|c| if let Column::Attribute(name) = c { Some(name.as_str()) } else { None })
        .collect();
    if let Some(problem) = super::attribute_names_refused(&attributes, admission) {
        return Err(Unreadable::Header(problem));
    }
    if !columns.contains(&Column::Email) {
        let found: Vec<&str> = headers.iter().collect();
        return Err(Unreadable::Header(format!(
            "the header row has no email column (it has: {}); every person needs one",
            found.join(", ")
        )));
    }
    let mut candidates = Vec::new();
    // The line a record starts on, counted here: with CRLF line ends the csv crate's line
    // count runs one behind, and its byte offset points at the '\n' ending the line before.
    let (mut line, mut counted) = (1, 0);
    for record in reader.records() {
        let record = record.map_err(|e| unreadable(e, bytes, "a row"))?;
        let through = record.position().map_or(counted, |p| p.byte() as usize + 1).min(bytes.len());
        line += line_ends(&bytes[counted.min(through)..through]);
        counted = through;
        let origin = format!("row {line}");
        // Spreadsheets leave rows of empty cells at the end: nobody is on them.
        if record.iter().all(str::is_empty) {
            continue;
        }
        let cells = columns.iter().zip(record.iter()).filter(|(_, value)| !value.is_empty());
        candidates.push(Candidate { origin, user: person(cells, defaults) });
    }
    Ok(candidates)
}

/// How many lines `bytes` ends: each `\n`, and each `\r` not followed by one (old Mac files).
fn line_ends(bytes: &[u8]) -> usize {
    let lone_cr = bytes.windows(2).filter(|pair| pair[0] == b'\r' && pair[1] != b'\n').count()
        + usize::from(bytes.last() == Some(&b'\r'));
    bytes.iter().filter(|&&b| b == b'\n').count() + lone_cr
}

fn describe(column: &Column) -> String {
    match column {
        Column::Attribute(name) => format!("attribute {name:?}"),
        other => format!("{other:?}"),
    }
}

fn unreadable(error: ::csv::Error, bytes: &[u8], what: &str) -> Unreadable {
    let through = |p: &::csv::Position| (p.byte() as usize + 1).min(bytes.len());
    let line = |p: &::csv::Position| 1 + line_ends(&bytes[..through(p)]);
    let at = error.position().map(|p| format!("row {}: ", line(p))).unwrap_or_default();
    match error.kind() {
        ::csv::ErrorKind::Utf8 { .. } => Unreadable::Encoding(format!("{at}{what} is not UTF-8")),
        ::csv::ErrorKind::UnequalLengths { expected_len, len, .. } => Unreadable::Malformed(format!(
            "{at}{len} fields where the header row has {expected_len}: quote values that hold commas (\"Doe, Jane\")"
        )),
        _ => Unreadable::Malformed(format!("{at}{what}: {error}")),
    }
}

/// The User one row describes.
fn person<'a>(
    cells: impl Iterator<Item = (&'a Column, &'a str)>,
    defaults: &Defaults,
) -> Result<crate::api::User, String> {
    let mut spec = serde_json::Map::new();
    let mut attributes = BTreeMap::new();
    let mut name = None;
    for (column, value) in cells {
        let field = match column {
            Column::Name => {
                name = Some(value.to_owned());
                continue;
            }
            Column::Groups => {
                let mut groups: Vec<&str> = Vec::new();
                for group in value.split(';').map(str::trim).filter(|g| !g.is_empty()) {
                    if !groups.contains(&group) {
                        groups.push(group);
                    }
                }
                spec.insert("groups".into(), groups.into());
                continue;
            }
            Column::Attribute(key) => {
                attributes.insert(key.clone(), value.to_owned());
                continue;
            }
            Column::Email => "email",
            Column::Username => "username",
            Column::GivenName => "givenName",
            Column::FamilyName => "familyName",
            Column::DisplayName => "displayName",
            Column::Phone => "phone",
            Column::Locale => "locale",
            Column::Timezone => "timezone",
        };
        spec.insert(field.into(), value.into());
    }
    finish(spec, attributes, name, defaults)
}

#[cfg(test)]
mod tests {
    use kube::ResourceExt;

    use kube::CustomResourceExt;

    use super::*;
    use crate::api::{InvitePolicy, User};

    fn admission() -> Admission {
        Admission::of(&User::crd()).unwrap()
    }

    fn users(text: &[u8]) -> Vec<(String, crate::api::User)> {
        read(text, &Defaults::default(), &admission())
            .unwrap()
            .into_iter()
            .map(|c| (c.origin, c.user.unwrap()))
            .collect()
    }

    #[test]
    fn headers_map_to_fields_and_the_rest_to_attributes() {
        let text = "Email,First Name,last_name,Display-Name,Mobile Phone,locale,TimeZone,Groups,login,orgUnit,cost-center\n\
                    jane@example.com,Jane,Doe,Jane Doe,+15551234567,de,Europe/Berlin,sre; admins ;sre;,jdoe,Platform,\n";
        let [(origin, user)] = users(text.as_bytes()).try_into().unwrap();
        assert_eq!(origin, "row 2");
        assert_eq!(user.name_any(), "jdoe");
        let spec = &user.spec;
        assert_eq!(spec.email, "jane@example.com");
        assert_eq!(spec.username.as_deref(), Some("jdoe"));
        assert_eq!((spec.given_name.as_deref(), spec.family_name.as_deref()), (Some("Jane"), Some("Doe")));
        assert_eq!(spec.display_name.as_deref(), Some("Jane Doe"));
        assert_eq!(spec.phone.as_deref(), Some("+15551234567"));
        assert_eq!((spec.locale.as_deref(), spec.timezone.as_deref()), (Some("de"), Some("Europe/Berlin")));
        assert_eq!(spec.groups, ["sre", "admins"], "split on ';', trimmed, empty and repeated dropped");
        assert_eq!(spec.attributes, BTreeMap::from([("orgUnit".to_owned(), "Platform".to_owned())]));
    }

    #[test]
    fn a_bom_crlf_quoted_commas_and_utf8_names_are_read() {
        let text = "\u{feff}email,displayName,givenName\r\n\
                    \"jane@example.com\",\"Doe, Jane \"\"JD\"\"\",Jürgen\r\n\
                    bob@example.com,\"two\r\nlines\",Zoë 李\r\n";
        let read = users(text.as_bytes());
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].1.spec.email, "jane@example.com", "the BOM is not part of the first header");
        assert_eq!(read[0].1.spec.display_name.as_deref(), Some("Doe, Jane \"JD\""));
        assert_eq!(read[0].1.spec.given_name.as_deref(), Some("Jürgen"));
        assert_eq!(read[1].1.spec.display_name.as_deref(), Some("two\r\nlines"));
        assert_eq!(read[1].1.spec.given_name.as_deref(), Some("Zoë 李"));
        assert_eq!((read[0].0.as_str(), read[1].0.as_str()), ("row 2", "row 3"));
        assert_eq!(read[1].1.name_any(), "bob", "named after the email's local part");
    }

    #[test]
    fn rows_are_numbered_by_line_whatever_ends_them() {
        for text in [
            "email\na@example.com\nb@example.com\n",
            "email\r\na@example.com\r\nb@example.com\r\n",
            "email\ra@example.com\rb@example.com\r",
        ] {
            let origins: Vec<String> = read(text.as_bytes(), &Defaults::default(), &admission())
                .unwrap()
                .into_iter()
                .map(|c| c.origin)
                .collect();
            assert_eq!(origins, ["row 2", "row 3"], "{text:?}");
        }
    }

    #[test]
    fn files_that_cannot_be_read_say_what_to_do() {
        let latin1 = b"email,givenName\njane@example.com,J\xfcrgen\n";
        let error = read(latin1, &Defaults::default(), &admission()).unwrap_err().to_string();
        assert!(
            error.contains("row 2") && error.contains("not UTF-8") && error.contains("CSV UTF-8"),
            "{error}"
        );
        let utf16 = b"\xff\xfee\0m\0a\0i\0l\0";
        assert!(read(utf16, &Defaults::default(), &admission()).unwrap_err().to_string().contains("UTF-16"));
        let ragged = b"email,displayName\njane@example.com,Doe, Jane\n";
        let error = read(ragged, &Defaults::default(), &admission()).unwrap_err().to_string();
        assert!(error.contains("row 2: 3 fields where the header row has 2"), "{error}");
        let no_email = b"username,givenName\njane,Jane\n";
        let error = read(no_email, &Defaults::default(), &admission()).unwrap_err().to_string();
        assert!(error.contains("no email column (it has: username, givenName)"), "{error}");
        let twice = b"email,mail\na@example.com,b@example.com\n";
        assert!(
            read(b"email,Name,Full Name\na@example.com,A,B\n", &Defaults::default(), &admission()).is_err(),
            "both display names"
        );
        assert!(
            read(twice, &Defaults::default(), &admission())
                .unwrap_err()
                .to_string()
                .contains("\"email\" and \"mail\"")
        );
    }

    #[test]
    fn a_header_that_cannot_name_an_attribute_is_refused_once() {
        let text = b"email,Cost Center,orgUnit,-x\na@example.com,1,2,3\nb@example.com,1,2,3\n";
        let error = read(text, &Defaults::default(), &admission()).unwrap_err().to_string();
        assert!(
            error.starts_with(
                "the columns \"Cost Center\", \"-x\" would become attributes: attribute names must be"
            ),
            "{error}"
        );
        let many: String = (0..65).map(|i| format!(",a{i}")).collect();
        let error = read(format!("email{many}\n").as_bytes(), &Defaults::default(), &admission())
            .unwrap_err()
            .to_string();
        assert!(error.contains("65 columns would become attributes"), "{error}");
    }

    #[test]
    fn a_row_without_an_email_is_refused_alone() {
        let text = b"email,metadata.name\n,jane\n,\nbob@example.com,robert\n,\n";
        let read = read(text, &Defaults::default(), &admission()).unwrap();
        assert_eq!(read.len(), 2, "rows of empty cells are no one");
        assert!(read[0].user.as_ref().unwrap_err().contains("spec.email: is required"));
        assert_eq!(read[1].user.as_ref().unwrap().name_any(), "robert", "the metadata.name column names it");
        assert_eq!(read[1].origin, "row 4");
    }

    #[test]
    fn defaults_set_namespace_and_invite_policy() {
        let defaults = Defaults { namespace: Some("team".into()), invite_policy: InvitePolicy::Manual };
        let read = read(b"email\njane@example.com\n", &defaults, &admission()).unwrap();
        let user = read[0].user.as_ref().unwrap();
        assert_eq!(user.namespace().as_deref(), Some("team"));
        assert_eq!(user.spec.invite.policy, InvitePolicy::Manual);
    }
}
