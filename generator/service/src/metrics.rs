//! Counters for `/metrics`, in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the job duration histogram.
const DURATION_BUCKETS: [f64; 9] = [1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    /// Requests by (route, status).
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Jobs finished here, by outcome (`succeeded` or an error code).
    jobs_finished: Mutex<BTreeMap<String, u64>>,
    job_seconds: Mutex<Histogram>,
    bytes_served: AtomicU64,
    lookups_hit: AtomicU64,
    lookups_miss: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    pub fn request(&self, route: &str, status: u16) {
        *lock(&self.requests).entry((route.to_string(), status)).or_default() += 1;
    }

    pub fn job_finished(&self, outcome: &str, seconds: f64) {
        *lock(&self.jobs_finished).entry(outcome.to_string()).or_default() += 1;
        let mut histogram = lock(&self.job_seconds);
        for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                histogram.counts[i] += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    pub fn served(&self, bytes: u64) {
        self.bytes_served.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn lookup(&self, hit: bool) {
        let counter = if hit { &self.lookups_hit } else { &self.lookups_miss };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text; `jobs` are the jobs in the database by state.
    pub fn render(&self, jobs: &[(String, i64)]) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP bundlegen_jobs Jobs in the database, by state.");
        let _ = writeln!(out, "# TYPE bundlegen_jobs gauge");
        for state in ["queued", "running", "succeeded", "failed"] {
            let count = jobs.iter().find(|(s, _)| s == state).map_or(0, |(_, c)| *c);
            let _ = writeln!(out, "bundlegen_jobs{{state=\"{state}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "# HELP bundlegen_jobs_finished_total Jobs this process finished, by outcome."
        );
        let _ = writeln!(out, "# TYPE bundlegen_jobs_finished_total counter");
        for (outcome, count) in lock(&self.jobs_finished).iter() {
            let _ = writeln!(out, "bundlegen_jobs_finished_total{{outcome=\"{outcome}\"}} {count}");
        }
        let histogram = lock(&self.job_seconds);
        let _ = writeln!(out, "# HELP bundlegen_job_duration_seconds How long jobs took.");
        let _ = writeln!(out, "# TYPE bundlegen_job_duration_seconds histogram");
        for (bound, count) in DURATION_BUCKETS.iter().zip(histogram.counts) {
            let _ = writeln!(out, "bundlegen_job_duration_seconds_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "bundlegen_job_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            histogram.count
        );
        let _ = writeln!(out, "bundlegen_job_duration_seconds_sum {}", histogram.sum);
        let _ = writeln!(out, "bundlegen_job_duration_seconds_count {}", histogram.count);
        drop(histogram);
        let _ = writeln!(out, "# HELP bundlegen_bytes_served_total Bundle bytes sent to clients.");
        let _ = writeln!(out, "# TYPE bundlegen_bytes_served_total counter");
        let _ = writeln!(
            out,
            "bundlegen_bytes_served_total {}",
            self.bytes_served.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP bundlegen_lookups_total Bundle lookups, by whether a bundle was ready."
        );
        let _ = writeln!(out, "# TYPE bundlegen_lookups_total counter");
        let _ = writeln!(
            out,
            "bundlegen_lookups_total{{result=\"hit\"}} {}",
            self.lookups_hit.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "bundlegen_lookups_total{{result=\"miss\"}} {}",
            self.lookups_miss.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP bundlegen_http_requests_total HTTP requests, by route and status."
        );
        let _ = writeln!(out, "# TYPE bundlegen_http_requests_total counter");
        for ((route, status), count) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "bundlegen_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        metrics.request("/v1/bundles/{id}/content", 200);
        metrics.request("/v1/bundles/{id}/content", 200);
        metrics.job_finished("succeeded", 3.5);
        metrics.job_finished("incompatible_app", 0.5);
        metrics.served(1024);
        metrics.lookup(true);
        let text = metrics.render(&[("queued".into(), 2)]);
        for line in [
            "bundlegen_jobs{state=\"queued\"} 2",
            "bundlegen_jobs{state=\"running\"} 0",
            "bundlegen_jobs_finished_total{outcome=\"succeeded\"} 1",
            "bundlegen_job_duration_seconds_bucket{le=\"1\"} 1",
            "bundlegen_job_duration_seconds_bucket{le=\"5\"} 2",
            "bundlegen_job_duration_seconds_bucket{le=\"+Inf\"} 2",
            "bundlegen_job_duration_seconds_sum 4",
            "bundlegen_bytes_served_total 1024",
            "bundlegen_lookups_total{result=\"hit\"} 1",
            "bundlegen_http_requests_total{route=\"/v1/bundles/{id}/content\",status=\"200\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
