//! Requests per client: a token bucket (GCRA) per client address — an IPv6 client by its
//! /64, which one host can fill with addresses — in a map of bounded size, the least
//! recently seen client forgotten first. The client address comes from `X-Forwarded-For`
//! only through proxies named trusted: the right-most address not among them.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use ipnet::IpNet;
use lru::LruCache;

/// Most clients remembered at once (about 5 MiB); beyond, the least recently seen goes.
pub const MAX_CLIENTS: usize = 65_536;

/// Requests per client, in bursts of up to the per-minute rate.
pub struct RateLimiter {
    /// Per client key, the bucket's theoretical arrival time.
    buckets: Mutex<LruCache<IpAddr, Instant>>,
    /// Most clients remembered; the map grows to it as clients come (`LruCache::new`
    /// would allocate its table for all of them up front, 2 MiB before the first request).
    capacity: usize,
    /// Time one request costs.
    interval: Duration,
    /// How far ahead of now a client may run (the burst).
    tolerance: Duration,
    /// Proxies whose `X-Forwarded-For` entries are believed.
    trusted: Vec<IpNet>,
}

impl RateLimiter {
    /// `per_minute` requests per minute per client, in bursts of as many, remembering at
    /// most [`MAX_CLIENTS`]; `trusted` are the proxies in front of roster.
    pub fn new(per_minute: u32, trusted: Vec<IpNet>) -> Self {
        Self::per_period(per_minute, Duration::from_secs(60), trusted)
    }

    /// `count` requests per `period` per client, in bursts of as many.
    pub fn per_period(count: u32, period: Duration, trusted: Vec<IpNet>) -> Self {
        Self::with_capacity(count, period, trusted, MAX_CLIENTS)
    }

    fn with_capacity(count: u32, period: Duration, trusted: Vec<IpNet>, capacity: usize) -> Self {
        let count = count.max(1);
        let interval = period / count;
        Self {
            buckets: Mutex::new(LruCache::unbounded()),
            capacity: capacity.max(1),
            interval,
            tolerance: interval * (count - 1),
            trusted,
        }
    }

    /// The client of a request from `peer`: `peer` itself unless it is a trusted proxy; then
    /// the right-most `X-Forwarded-For` address that is not a trusted proxy (the one the
    /// first trusted proxy saw). Entries left of it are the client's to choose and ignored.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer;
        if !self.trusts(client) {
            return client;
        }
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            let Some(address) = parse_hop(hop) else { return client };
            client = address;
            if !self.trusts(client) {
                return client;
            }
        }
        client
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.trusted.iter().any(|net| net.contains(&address))
    }

    /// Takes one request from `client`'s bucket at `now`; `Err` with how long to wait when
    /// it is empty.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let client = key(client);
        if buckets.len() >= self.capacity && !buckets.contains(&client) {
            buckets.pop_lru();
        }
        let bucket = buckets.get_or_insert_mut(client, || now);
        let arrival = (*bucket).max(now);
        let ahead = arrival.saturating_duration_since(now);
        if ahead > self.tolerance {
            return Err(ahead - self.tolerance);
        }
        *bucket = arrival + self.interval;
        Ok(())
    }

    /// How many clients are remembered.
    pub fn clients(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }
}

/// An `X-Forwarded-For` entry's address: bare, or with a port (`192.0.2.1:4711`,
/// `[2001:db8::1]:4711`), as proxies write them.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// The bucket a client address fills: its own for IPv4, its /64 for IPv6.
fn key(address: IpAddr) -> IpAddr {
    match canonical(address) {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append("x-forwarded-for", value.parse().unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_bucket_empties_and_other_clients_are_unaffected() {
        let limiter = RateLimiter::new(3, Vec::new());
        let now = Instant::now();
        assert!((0..3).all(|_| limiter.check(ip("192.0.2.1"), now).is_ok()));
        let wait = limiter.check(ip("192.0.2.1"), now).unwrap_err();
        assert_eq!(wait, Duration::from_secs(20), "one request's worth");
        assert!(limiter.check(ip("192.0.2.2"), now).is_ok());
        assert!(limiter.check(ip("192.0.2.1"), now + Duration::from_secs(20)).is_ok(), "refilled");
    }

    #[test]
    fn an_ipv6_host_cannot_escape_by_changing_its_interface_address() {
        let limiter = RateLimiter::new(2, Vec::new());
        let now = Instant::now();
        assert!(limiter.check(ip("2001:db8:1:2::1"), now).is_ok());
        assert!(limiter.check(ip("2001:db8:1:2:ffff::9"), now).is_ok());
        assert!(limiter.check(ip("2001:db8:1:2:abcd::7"), now).is_err(), "same /64, same bucket");
        assert!(limiter.check(ip("2001:db8:1:3::1"), now).is_ok(), "another /64");
        assert!(limiter.check(ip("::ffff:192.0.2.1"), now).is_ok());
        assert!(limiter.check(ip("192.0.2.1"), now).is_ok());
        assert!(limiter.check(ip("192.0.2.1"), now).is_err(), "an IPv4-mapped address is that IPv4 client");
    }

    #[test]
    fn the_remembered_clients_are_bounded_least_recent_first() {
        let limiter = RateLimiter::with_capacity(1, Duration::from_secs(60), Vec::new(), 100);
        let now = Instant::now();
        for n in 0..1000u32 {
            let _ = limiter.check(IpAddr::V4(n.into()), now);
        }
        assert_eq!(limiter.clients(), 100);
        assert!(limiter.check(IpAddr::V4(999.into()), now).is_err(), "a recent client is remembered");
        assert!(limiter.check(IpAddr::V4(0.into()), now).is_ok(), "the oldest was forgotten");
    }

    #[test]
    fn forwarded_for_is_believed_only_through_trusted_proxies() {
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let limiter = RateLimiter::new(1, trusted);
        let chain = headers(&["6.6.6.6, 203.0.113.9", "10.1.1.1"]);
        assert_eq!(limiter.client(ip("10.0.0.1"), &chain), ip("203.0.113.9"), "right-most untrusted");
        assert_eq!(limiter.client(ip("198.51.100.7"), &chain), ip("198.51.100.7"), "an untrusted peer");
        assert_eq!(limiter.client(ip("10.0.0.1"), &headers(&["junk"])), ip("10.0.0.1"));
        assert_eq!(
            limiter.client(ip("10.0.0.1"), &headers(&["203.0.113.9:4711"])),
            ip("203.0.113.9"),
            "with a port"
        );
        assert_eq!(limiter.client(ip("10.0.0.1"), &headers(&["[2001:db8::7]:443"])), ip("2001:db8::7"));
        assert_eq!(limiter.client(ip("10.0.0.1"), &HeaderMap::new()), ip("10.0.0.1"));
        assert_eq!(limiter.client(ip("10.0.0.1"), &headers(&["10.2.2.2"])), ip("10.2.2.2"), "all trusted");
        let none = RateLimiter::new(1, Vec::new());
        assert_eq!(none.client(ip("10.0.0.1"), &chain), ip("10.0.0.1"), "no proxy trusted");
    }
}
