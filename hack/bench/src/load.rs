//! Closed-loop load: a number of clients each sending one request after another for a
//! while; throughput, latency percentiles and answers by status code.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;

/// What a load run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Load {
    /// Concurrent clients.
    pub clients: usize,
    /// Requests answered.
    pub requests: usize,
    /// Requests answered per second.
    pub per_second: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th-percentile latency, ms.
    pub p99_ms: f64,
    /// Answers by HTTP status (0: no answer).
    pub statuses: BTreeMap<u16, usize>,
}

/// Runs `clients` clients for `duration`; client `i` calls `request(i)` in a loop, which
/// answers the HTTP status it got.
pub async fn run<F, Fut>(clients: usize, duration: Duration, request: F) -> Load
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = u16> + Send,
{
    let started = Instant::now();
    let until = started + duration;
    let tasks = (0..clients).map(|i| {
        let request = request.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while Instant::now() < until {
                let sent = Instant::now();
                let status = request(i).await;
                seen.push((sent.elapsed(), status));
            }
            seen
        })
    });
    let mut latencies = Vec::new();
    let mut statuses = BTreeMap::new();
    for task in futures::future::join_all(tasks).await {
        for (latency, status) in task.unwrap_or_default() {
            latencies.push(latency);
            *statuses.entry(status).or_default() += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index].as_secs_f64() * 1000.0
    };
    Load {
        clients,
        requests: latencies.len(),
        per_second: latencies.len() as f64 / elapsed,
        p50_ms: percentile(0.5),
        p99_ms: percentile(0.99),
        statuses,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_every_answer_by_status() {
        let load = run(3, Duration::from_millis(50), |i| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if i == 0 { 200 } else { 404 }
        })
        .await;
        assert_eq!(load.requests, load.statuses.values().sum::<usize>());
        assert!(load.statuses[&200] > 0 && load.statuses[&404] > load.statuses[&200]);
        assert!(load.p50_ms >= 5.0 && load.p99_ms >= load.p50_ms);
    }
}
