import CoreMetrics
import Foundation
import Host
import Prometheus
import Sandbox
import Synchronization

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
    private let mcpSessions: CoreMetrics.Gauge
    private let cacheHits: CoreMetrics.Counter
    private let cacheMisses: CoreMetrics.Counter
    private let cacheBytes: CoreMetrics.Counter
    private let sandboxDeaths: CoreMetrics.Counter
    /// The cache's counters as last sampled; each render adds what they grew by since.
    private let cacheSampled = Mutex(CacheCounters())
    /// The host's count of sandbox deaths as last sampled.
    private let deathsSampled = Mutex(0)

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
        mcpSessions = CoreMetrics.Gauge(label: "corral_mcp_sessions", factory: factory)
        cacheHits = CoreMetrics.Counter(label: "corral_cache_hits_total", factory: factory)
        cacheMisses = CoreMetrics.Counter(label: "corral_cache_misses_total", factory: factory)
        cacheBytes = CoreMetrics.Counter(label: "corral_cache_downloaded_bytes_total", factory: factory)
        sandboxDeaths = CoreMetrics.Counter(label: "corral_sandbox_deaths_total", factory: factory)
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

    /// One connection through the egress proxy: `corral_egress_connections_total{decision}`,
    /// and for allowed ones the bytes each way.
    func egress(_ event: EgressEvent) {
        CoreMetrics.Counter(
            label: "corral_egress_connections_total", dimensions: [("decision", event.decision.rawValue)],
            factory: factory
        ).increment()
        for (direction, bytes) in [("out", event.bytesOut), ("in", event.bytesIn)] where bytes > 0 {
            CoreMetrics.Counter(
                label: "corral_egress_bytes_total", dimensions: [("direction", direction)], factory: factory
            ).increment(by: Int64(clamping: bytes))
        }
    }

    /// `corral_mcp_sessions_ended_total{reason}`.
    func mcpSessionEnded(_ reason: MCPSessionEnd) {
        CoreMetrics.Counter(
            label: "corral_mcp_sessions_ended_total", dimensions: [("reason", reason.rawValue)], factory: factory
        ).increment()
    }

    /// `corral_mcp_session_misses_total{reason}`: requests naming a session they may not use.
    /// `other_server` growing means a load balancer that does not route by `Mcp-Session-Id`.
    func mcpSessionMiss(_ reason: String) {
        CoreMetrics.Counter(
            label: "corral_mcp_session_misses_total", dimensions: [("reason", reason)], factory: factory
        ).increment()
    }

    func rateLimited() { CoreMetrics.Counter(label: "corral_rate_limited_total", factory: factory).increment() }

    /// Updates the gauges from the host (and `sessions`, the live MCP sessions), then renders
    /// everything.
    func render(backend: any HostBackend, jobs: any JobService, sessions: Int) async -> [UInt8] {
        mcpSessions.record(sessions)
        // A queue that cannot be asked (Redis away) reads as empty rather than failing the scrape.
        let depth = (try? await jobs.depth()) ?? (queued: 0, running: 0)
        queued.record(depth.queued)
        running.record(depth.running)
        let status = await backend.status()
        projects.record(status.projects)
        sandboxes.record(status.sandboxes)
        if let counters = await backend.cacheCounters() { sample(counters) }
        if let deaths = await backend.sandboxDeaths() {
            deathsSampled.withLock { last in
                Self.grow(sandboxDeaths, from: Int64(last), to: Int64(deaths))
                last = deaths
            }
        }
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return buffer
    }
}

extension APIMetrics {
    /// The cache counts in the host; the counters here grow by the difference since the
    /// last sample (under the lock, so two renders at once never add it twice).
    func sample(_ counters: CacheCounters) {
        cacheSampled.withLock { last in
            Self.grow(cacheHits, from: Int64(last.hits), to: Int64(counters.hits))
            Self.grow(cacheMisses, from: Int64(last.misses), to: Int64(counters.misses))
            Self.grow(cacheBytes, from: last.downloadedBytes, to: counters.downloadedBytes)
            last = counters
        }
    }

    /// Counters only grow: a value below the last one comes from a new cache, counted from 0.
    private static func grow(_ counter: CoreMetrics.Counter, from last: Int64, to now: Int64) {
        let delta = now >= last ? now - last : now
        if delta > 0 { counter.increment(by: delta) }
    }
}
