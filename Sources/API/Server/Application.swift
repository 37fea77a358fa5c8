import Foundation
import Host
import Hummingbird
import HummingbirdCore
import Logging
import ServiceLifecycle

/// Everything the handlers share: the host, the file tools, limits, metrics, the audit log.
public struct APIState: Sendable {
    public let backend: any HostBackend
    /// Where every command goes: the host's job system, or a cluster's.
    public let jobs: any JobService
    public let files: (any FileToolBackend)?
    /// Persistent shells and interpreters; nil on a server that runs none.
    public let sessions: (any SessionService)?
    public let configuration: APIConfiguration
    public let metrics: APIMetrics
    public let audit: AuditLog?
    let limiter = RateLimiter()
    let uploads = UploadSlots()
    let commands: Commands
    let tools: ToolGateway
    /// MCP sessions, in this server's memory; resources a session owns end with it through
    /// ``MCPSessionStore/onEnd(_:)``.
    public let mcpSessions: MCPSessionStore

    /// Opens the audit log under `configuration.dataDirectory` (when set) and joins the parts.
    /// `mcpSessions` defaults to a store bounded by `configuration.limits`.
    public init(
        configuration: APIConfiguration, backend: any HostBackend, jobs: any JobService,
        files: (any FileToolBackend)? = nil, sessions: (any SessionService)? = nil, metrics: APIMetrics = APIMetrics(),
        mcpSessions: MCPSessionStore? = nil
    ) throws {
        self.backend = backend
        self.jobs = jobs
        self.files = files
        self.sessions = sessions
        self.configuration = configuration
        self.metrics = metrics
        if let data = configuration.dataDirectory {
            try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
            audit = try AuditLog(path: data + "/audit.log")
        } else {
            audit = nil
        }
        commands = Commands(backend: backend, jobs: jobs, audit: audit, metrics: metrics)
        tools = ToolGateway(
            backend: backend, jobs: jobs, files: files, commands: commands, limits: configuration.limits,
            metrics: metrics, sessions: sessions)
        self.mcpSessions = mcpSessions ?? MCPSessionStore(limits: configuration.limits)
        self.mcpSessions.onEnd { _, reason in metrics.mcpSessionEnded(reason) }
        // An MCP session owns the shell and python sessions its tool calls made.
        self.mcpSessions.onEnd { [tools] session, _ in
            for (project, id) in await tools.defaults.removeAll(caller: session.caller) {
                try? await sessions?.delete(project, id, caller: nil)
            }
        }
    }
}

/// The router with every endpoint of the API (docs/API.md, docs/openapi.json) and the
/// middleware chain: request id and error shape, metrics, load shedding, auth, rate limits.
public func buildRouter(_ state: APIState) -> Router<APIContext> {
    let router = Router(context: APIContext.self)
    router.add(middleware: RequestIDMiddleware())
    router.add(middleware: MetricsMiddleware(metrics: state.metrics))
    router.add(middleware: LoadShedMiddleware(limit: state.configuration.limits.maxInFlight))
    router.add(
        middleware: AuthMiddleware(
            tokens: state.configuration.tokens, metricsOpenOnLoopback: state.configuration.metricsOpenOnLoopback,
            openRate: state.configuration.limits.openRate))
    router.add(
        middleware: RateLimitMiddleware(
            limiter: state.limiter, defaultRate: state.configuration.limits.defaultRate, metrics: state.metrics))
    ProjectRoutes(state: state).add(to: router)
    PortRoutes(state: state).add(to: router)
    JobRoutes(state: state).add(to: router)
    SessionRoutes(state: state).add(to: router)
    ToolRoutes(state: state).add(to: router)
    MCPRoutes(state: state).add(to: router)
    CompatRoutes(state: state).add(to: router)
    OperationsRoutes(state: state).add(to: router)
    InternalRoutes(state: state).add(to: router)
    return router
}

/// The application `corral serve` runs and tests drive: the router over `host` and `jobs`,
/// bound as `configuration` says, with the audit of policy reloads as a service beside it.
/// `onListening` gets the bound port (useful with port 0). `mcpSessions` is the store of MCP
/// sessions (one bounded by `configuration.limits` unless given); a service beside the server
/// expires idle sessions and ends every session when the server stops.
public func buildApplication(
    _ configuration: APIConfiguration, host: any HostBackend, jobs: any JobService,
    files: (any FileToolBackend)? = nil, sessions: (any SessionService)? = nil, mcpSessions: MCPSessionStore? = nil,
    logger: Logger = Logger(label: "corral.api"), onListening: (@Sendable (Int) async -> Void)? = nil
) throws -> some ApplicationProtocol {
    try configuration.validate()
    let state = try APIState(
        configuration: configuration, backend: host, jobs: jobs, files: files, sessions: sessions,
        mcpSessions: mcpSessions)
    let router = buildRouter(state)
    // Upgrade requests go through the same router, middleware and all.
    let upgrades = router.buildResponder()
    var app = Application(
        router: router,
        server: HTTPServerBuilder { responder in
            UpgradingHTTP1Channel(responder: responder) { try await upgrades.respond(to: $0, context: $1) }
        },
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "corral"),
        onServerRunning: { channel in await onListening?(channel.localAddress?.port ?? 0) }, logger: logger)
    if let audit = state.audit { app.addServices(PolicyAuditService(backend: host, audit: audit)) }
    app.addServices(EgressAuditService(backend: host, audit: state.audit, metrics: state.metrics))
    app.addServices(MCPSessionSweeper(store: state.mcpSessions))
    return app
}

/// Appends every policy reload to the audit log for as long as the server runs.
struct PolicyAuditService: Service {
    let backend: any HostBackend
    let audit: AuditLog

    func run() async throws {
        let reloads = await backend.policyReloads()
        await withDiscardingTaskGroup { group in
            group.addTask {
                for await generation in reloads.cancelOnGracefulShutdown() {
                    let summary = await backend.policySummary()
                    audit.policyReload(generation: generation, digests: summary.digests, errors: summary.errors)
                }
            }
        }
        // A backend without policies (an API node's) ends its reloads at once; the service
        // must still run until shutdown, or the group takes its end for a failure.
        try? await gracefulShutdown()
    }
}

/// Writes every egress proxy connection to the audit log and the metrics while the server runs.
struct EgressAuditService: Service {
    let backend: any HostBackend
    let audit: AuditLog?
    let metrics: APIMetrics

    func run() async throws {
        let events = await backend.egressEvents()
        await withDiscardingTaskGroup { group in
            group.addTask {
                for await event in events.cancelOnGracefulShutdown() {
                    audit?.egress(event)
                    metrics.egress(event)
                }
            }
        }
        // A backend without sandboxes ends its stream at once; the service runs on until
        // shutdown, as a service group expects.
        try? await gracefulShutdown()
    }
}

/// Stops the host when the service group shuts down: listed after the application, it is
/// told first, so new jobs are refused (503) while running ones get `grace` to finish and
/// their waiting requests get real results; then the HTTP server drains.
public struct HostShutdownService: Service {
    let host: any HostBackend
    let grace: Duration

    /// `grace`: how long running jobs may finish before they are killed.
    public init(host: any HostBackend, grace: Duration) {
        self.host = host
        self.grace = grace
    }

    public func run() async throws {
        try? await gracefulShutdown()
        await host.shutdown(grace: grace)
    }
}
