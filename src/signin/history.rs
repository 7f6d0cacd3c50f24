//! The person's recent sign-ins and failed attempts, shown on their account page: a short
//! list kept in the credentials Secret (`recentSignIns`, newest first, at most [`KEPT`]),
//! written with the writes a sign-in makes anyway — the success's, and the counted
//! failures' (a failure that counts nothing, on a locked account, is not written at all).
//! One line per attempt: `<RFC 3339> <ok|failed> <address or ->`.

use std::net::IpAddr;

use k8s_openapi::jiff::Timestamp;

/// Attempts kept.
pub const KEPT: usize = 10;

/// One sign-in attempt.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// When.
    pub at: Timestamp,
    /// Whether it succeeded.
    pub succeeded: bool,
    /// From which client address, when known.
    pub address: Option<IpAddr>,
}

impl Attempt {
    /// An attempt at `at` from `address`.
    pub fn new(at: Timestamp, succeeded: bool, address: Option<IpAddr>) -> Self {
        Self { at, succeeded, address }
    }

    fn line(&self) -> String {
        let outcome = if self.succeeded { "ok" } else { "failed" };
        let address = self.address.map_or_else(|| "-".to_owned(), |a| a.to_string());
        format!("{} {outcome} {address}", self.at)
    }

    fn parse(line: &str) -> Option<Self> {
        let mut words = line.split_whitespace();
        let at = words.next()?.parse().ok()?;
        let succeeded = match words.next()? {
            "ok" => true,
            "failed" => false,
            _ => return None,
        };
        let address = words.next().and_then(|a| a.parse().ok());
        Some(Self { at, succeeded, address })
    }
}

/// The attempts `stored` holds, newest first (unreadable lines are skipped).
pub fn read(stored: Option<&str>) -> Vec<Attempt> {
    stored.unwrap_or_default().lines().filter_map(Attempt::parse).take(KEPT).collect()
}

/// What `stored` becomes with `new` attempts (oldest first) added: newest first, at most
/// [`KEPT`].
pub fn with(stored: Option<&str>, new: &[Attempt]) -> String {
    let mut attempts: Vec<Attempt> = new.iter().rev().cloned().collect();
    attempts.extend(read(stored));
    attempts.truncate(KEPT);
    attempts.iter().map(Attempt::line).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap()
    }

    #[test]
    fn the_newest_attempts_are_kept_first_and_bounded() {
        let address: IpAddr = "203.0.113.9".parse().unwrap();
        let mut stored = with(None, &[Attempt::new(at(1), false, Some(address))]);
        stored = with(Some(&stored), &[Attempt::new(at(2), true, None)]);
        let read_back = read(Some(&stored));
        assert_eq!(read_back, [Attempt::new(at(2), true, None), Attempt::new(at(1), false, Some(address))]);
        let many: Vec<Attempt> = (10..30).map(|s| Attempt::new(at(s), false, None)).collect();
        let read_back = read(Some(&with(Some(&stored), &many)));
        assert_eq!(read_back.len(), KEPT);
        assert_eq!(read_back[0].at, at(29), "newest first");
    }

    #[test]
    fn damaged_lines_are_skipped() {
        let stored = "yesterday ok -\n1970-01-01T00:00:05Z maybe -\n1970-01-01T00:00:06Z ok junk";
        assert_eq!(read(Some(stored)), [Attempt::new(at(6), true, None)]);
    }
}
