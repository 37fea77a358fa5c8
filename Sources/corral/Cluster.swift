import API
import ArgumentParser
import Cluster
import Foundation
import Host
import Logging
import ServiceLifecycle

/// `corral worker`: a host with sandboxes in a cluster. It takes the jobs Redis routes to
/// it, serves the calls API nodes forward to it (project calls, file tools, sessions) on
/// its own HTTP port, and hands its projects over on SIGTERM.
struct Worker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a worker host of a cluster until SIGTERM or SIGINT.",
        discussion: """
            Every worker shares one primary blob store (--blob-dir, a shared filesystem), so any \
            of them can materialize any project from its latest write-back. docs/CLUSTER.md.
            """
    )

    @OptionGroup var server: ServerOptions
    @OptionGroup var sandboxes: SandboxHostOptions
    @OptionGroup var cluster: ClusterOptions

    @Option(help: "This host's name in the cluster (unique, no spaces or colons). Default: the machine's name.")
    var name: String?

    @Option(help: "The URL API nodes reach this host's --bind at. Default: http://<bind>.")
    var advertise: String?

    @Option(help: "Directory of the primary blob store every worker shares (uploads, snapshots).")
    var blobDir: String

    func validate() throws {
        try server.check()
        if advertise == nil, server.bind.hasSuffix(":0") {
            throw ValidationError("--advertise is needed when --bind picks its port (:0)")
        }
    }

    func run() async throws {
        server.bootstrapLogging()
        let logger = Logger(label: "corral.worker")
        let clusterConfiguration = try cluster.configuration()
        let token = try cluster.workerToken()
        let api = try server.apiConfiguration(extraToken: token.map { ("cluster", $0) })
        let agents = api.tokens.agentTokenNames
        if !agents.isEmpty {
            logger.warning(
                "a worker takes only the worker token; the tokens file gives it agent tokens, which can call this worker directly, around the API nodes' routing, rate limits and job caps: give the agents' tokens to `corral api` only",
                metadata: ["tokens": .string(agents.sorted().joined(separator: ","))])
        }
        var configuration = try sandboxes.hostConfiguration(dataDir: server.dataDir, logger: logger)
        configuration.stores = BlobStores(primary: LocalBlobStore(directory: ServerOptions.absolute(blobDir)))
        let hostName = name ?? ProcessInfo.processInfo.hostName
        let address = advertise ?? "http://\(server.bind)"
        let (host, worker) = try await ClusterHost.openWorker(
            configuration, cluster: clusterConfiguration, host: hostName, address: address)
        try await worker.start()
        let app = try buildApplication(
            api, host: host, jobs: host.jobService, files: host, sessions: host.sessionService,
            logger: Logger(label: "corral.api"))
        logger.info(
            "corral worker",
            metadata: [
                "version": "\(HostModule.version)", "name": "\(hostName)", "bind": "\(server.bind)",
                "advertise": "\(address)",
                "redis": "\(clusterConfiguration.redis.host):\(clusterConfiguration.redis.port)",
                "cgroups": "\(configuration.cgroups?.mode.rawValue ?? "none")",
            ])
        try await runServices(
            [app, WorkerShutdownService(worker: worker, host: host, grace: api.shutdownGrace)], logger: logger)
        logger.info("corral worker: stopped")
    }
}

/// `corral api`: a stateless API node of a cluster, with no sandboxes of its own.
struct APINode: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "api",
        abstract: "Run a stateless API node of a cluster until SIGTERM or SIGINT.",
        discussion: "Jobs go through Redis; project, file and session calls go to each project's worker host."
    )

    @OptionGroup var server: ServerOptions
    @OptionGroup var cluster: ClusterOptions

    @Option(help: "The workers' --default-policy: the only policy tokens without `policies` may use.")
    var defaultPolicy: String = "default"

    func validate() throws { try server.check() }

    func run() async throws {
        server.bootstrapLogging()
        let logger = Logger(label: "corral.api-node")
        let api = try server.apiConfiguration()
        let backend = ClusterBackend(
            configuration: try cluster.configuration(), workerToken: try cluster.workerToken(),
            defaultPolicy: defaultPolicy)
        let app = try buildApplication(
            api, host: backend, jobs: backend.jobService, files: ClusterFileTools(backend: backend),
            sessions: ClusterSessions(backend: backend), logger: Logger(label: "corral.api"))
        logger.info(
            "corral api",
            metadata: ["version": "\(HostModule.version)", "bind": "\(server.bind)", "node": "\(backend.jobs.node)"])
        try await runServices([app, HostShutdownService(host: backend, grace: api.shutdownGrace)], logger: logger)
        logger.info("corral api: stopped")
    }
}

/// Leaves the cluster gracefully, then stops the host: running jobs finish within the
/// grace, projects are written back and their leases released, queued jobs handed over.
struct WorkerShutdownService: Service {
    let worker: ClusterWorker
    let host: ClusterHost
    let grace: Duration

    func run() async throws {
        try? await gracefulShutdown()
        await worker.shutdown(grace: grace)
        await host.shutdown(grace: grace)
    }
}

/// Where the cluster's Redis is and how hosts find each other there.
struct ClusterOptions: ParsableArguments {
    @Option(help: "redis://[[user]:password@]host:port[/db] of the cluster's Redis; rediss://…?cacert=FILE for TLS.")
    var redis: String

    @Option(help: "Prefix of every key, so several clusters can share one Redis.")
    var keyPrefix: String = "corral"

    @Option(help: "Milliseconds a project lease and a heartbeat last without renewal.")
    var leaseMs: Int = 15_000

    @Option(help: "File holding the token API nodes present to workers (or set CORRAL_WORKER_TOKEN).")
    var workerTokenFile: String?

    func configuration() throws -> ClusterConfiguration {
        guard leaseMs >= 300 else { throw ValidationError("--lease-ms must be at least 300") }
        return ClusterConfiguration(
            redis: try RedisConfiguration(url: redis), keyPrefix: keyPrefix, leaseTTL: .milliseconds(leaseMs))
    }

    /// The shared worker token, if one is configured; it must be at least 16 characters.
    func workerToken() throws -> String? {
        var secret = ProcessInfo.processInfo.environment["CORRAL_WORKER_TOKEN"]
        if let workerTokenFile {
            guard let text = try? String(contentsOfFile: workerTokenFile, encoding: .utf8) else {
                throw ValidationError("cannot read --worker-token-file \(workerTokenFile)")
            }
            secret = text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        if let secret, secret.count < 16 { throw ValidationError("the worker token must be at least 16 characters") }
        return secret
    }
}
