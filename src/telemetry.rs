//! Metrics and the access log together: what is recorded when a request ends.

use std::time::Instant;

use crate::access_log::{AccessLog, AccessRecord};
use crate::config::AccessLogFormat;
use crate::metrics::Metrics;

/// Process-wide observers, shared by every generation of the config.
pub struct Telemetry {
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Access log sink.
    pub access_log: AccessLog,
}

impl Telemetry {
    /// Starts the access-log writer when `access` is not off.
    pub fn new(access: AccessLogFormat) -> Self {
        Telemetry {
            metrics: Metrics::new(),
            access_log: AccessLog::new(access),
        }
    }
}

/// A request whose response body is still streaming.
pub struct InFlight {
    /// The access-log line, without bytes and total time yet.
    pub record: AccessRecord,
    /// When the request head arrived.
    pub started: Instant,
}

impl InFlight {
    /// Records the request once its response body ended (or was abandoned).
    pub fn finish(mut self, telemetry: &Telemetry, bytes_sent: u64) {
        let total = self.started.elapsed();
        let m = &telemetry.metrics;
        m.count_status(self.record.status);
        m.request_duration.observe(total.as_secs_f64());
        m.bytes_out.inc_by(bytes_sent);
        if telemetry.access_log.enabled() {
            self.record.bytes = bytes_sent;
            self.record.total_time = total;
            telemetry.access_log.log(&self.record);
        }
    }
}
