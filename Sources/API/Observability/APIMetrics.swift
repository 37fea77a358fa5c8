import CoreMetrics
import Foundation
import Host
import Prometheus

/// The server's metrics, in a registry of its own (never the process-global one, so tests
/// can build many servers), exposed as Prometheus text at `GET /metrics`.
public final class APIMetrics: Sendable {
    /// Everything `GET /metrics` renders.
    public let registry: PrometheusCollectorRegistry
    let factory: PrometheusMetricsFactory
    private let queued: CoreMetrics.Gauge
    private let running: CoreMetrics.Gauge
    private let projects: CoreMetrics.Gauge
    private let sandboxes: CoreMetrics.Gauge

    public init() {
        registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
            .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2),
            .seconds(5), .seconds(10), .seconds(30), .seconds(60), .seconds(120), .seconds(300),
        ]
        self.factory = factory
        queued = CoreMetrics.Gauge(label: "corral_jobs_queued", factory: factory)
        running = CoreMetrics.Gauge(label: "corral_jobs_running", factory: factory)
        projects = CoreMetrics.Gauge(label: "corral_projects", factory: factory)
        sandboxes = CoreMetrics.Gauge(label: "corral_sandboxes", factory: factory)
    }

    func request(route: String, method: String, status: Int, duration: Duration) {
        Counter(
            label: "corral_http_requests_total",
            dimensions: [("route", route), ("method", method), ("status", String(status))], factory: factory
        ).increment()
        CoreMetrics.Timer(
            label: "corral_http_request_duration_seconds", dimensions: [("route", route), ("method", method)],
            factory: factory
        )
        .recordNanoseconds(duration.nanoseconds)
    }

    /// A job reached a final state.
    func job(_ record: JobRecord) {
        CoreMetrics.Counter(
            label: "corral_jobs_total", dimensions: [("outcome", record.state.rawValue)], factory: factory
        ).increment()
        if let result = record.result {
            if result.oomKilled {
                CoreMetrics.Counter(label: "corral_job_oom_kills_total", factory: factory).increment()
            }
            if result.timedOut { CoreMetrics.Counter(label: "corral_job_timeouts_total", factory: factory).increment() }
            CoreMetrics.Timer(
                label: "corral_job_duration_seconds", dimensions: [("lane", record.lane.rawValue)], factory: factory
            )
            .recordMilliseconds(result.durationMs)
        }
    }

    func toolCall(_ tool: String, outcome: String) {
        CoreMetrics.Counter(
            label: "corral_tool_calls_total", dimensions: [("tool", tool), ("outcome", outcome)], factory: factory
        )
        .increment()
    }

    func rateLimited() { CoreMetrics.Counter(label: "corral_rate_limited_total", factory: factory).increment() }

    /// Updates the gauges from the host, then renders everything.
    func render(backend: any HostBackend) async -> [UInt8] {
        let depth = await backend.queueDepth()
        queued.record(depth.queued)
        running.record(depth.running)
        let status = await backend.status()
        projects.record(status.projects)
        sandboxes.record(status.sandboxes)
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return buffer
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
