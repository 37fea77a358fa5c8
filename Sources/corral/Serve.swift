import API
import ArgumentParser
import Foundation
import Host
import Logging
import Sandbox
import ServiceLifecycle

/// `corral serve`: the all-in-one host (API, workers, embedded queue) on one machine.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the host and its HTTP API until SIGTERM or SIGINT.",
        discussion: """
            Without --tokens the server is open and may only listen on loopback. The tokens \
            file format is in docs/API.md.
            """
    )

    @Option(help: "Address to listen on, HOST:PORT.")
    var bind: String = APIModule.defaultBind

    @Option(help: "JSON file of bearer tokens (name, secret, project globs, admin, rate).")
    var tokens: String?

    @Option(help: "Directory holding built rootfs images (rootfs/build writes them).")
    var rootfsDir: String = "rootfs/out"

    @Option(help: "Directory of policy files.")
    var policiesDir: String = "policies"

    @Option(help: "Directory for the host's state: cache, journal, audit log.")
    var dataDir: String = "var"

    @Option(help: "The policy of projects registered without one.")
    var defaultPolicy: String = "default"

    @Option(help: "Seconds running jobs may finish when the server stops.")
    var shutdownGrace: Int = 30

    @Option(help: "Log format: json (one object per line) or text.")
    var logFormat: String = "json"

    @Option(help: "Largest archive upload, in MiB.")
    var maxArchiveMib: Int = 256

    @Option(help: "Seconds exec and bash wait for a result before answering running.")
    var waitS: Double = 110

    @Option(help: "The most any wait (exec's wait_s, a long-poll's ?wait=) may ask for, in seconds.")
    var maxWaitS: Double = 300

    @Option(help: "Name of this host's cgroup subtree (beside the machine's own cgroups).")
    var cgroupPrefix: String = "corral"

    @Flag(inversion: .prefixedNo, help: "Serve GET /metrics without a token to loopback peers.")
    var metricsLoopback: Bool = true

    func validate() throws {
        guard ["json", "text"].contains(logFormat) else { throw ValidationError("--log-format is json or text") }
        guard shutdownGrace >= 0 else { throw ValidationError("--shutdown-grace must be 0 or more") }
        guard maxArchiveMib > 0 else { throw ValidationError("--max-archive-mib must be positive") }
        guard waitS >= 0, maxWaitS >= waitS else { throw ValidationError("need 0 <= --wait-s <= --max-wait-s") }
    }

    func run() async throws {
        if logFormat == "json" { LoggingSystem.bootstrap { JSONLogHandler(label: $0) } }
        let logger = Logger(label: "corral.serve")
        let (host, port) = try APIConfiguration.parseBind(bind)
        var api = APIConfiguration(
            host: host, port: port, tokens: try tokens.map(TokenStore.load) ?? TokenStore([]),
            dataDirectory: URL(fileURLWithPath: dataDir).standardizedFileURL.path,
            metricsOpenOnLoopback: metricsLoopback, shutdownGrace: .seconds(shutdownGrace))
        api.limits.maxArchiveBytes = maxArchiveMib << 20
        api.limits.defaultWaitSeconds = waitS
        api.limits.maxWaitSeconds = maxWaitS
        // Refuse an open non-loopback server before touching anything.
        try api.validate()
        // Sandboxes of a previous run of this host outlive it (their inits do not die with
        // the host); their cgroups find and kill them.
        let cgroups = try? CgroupDriver.detect(prefix: cgroupPrefix)
        if let cgroups {
            let swept = (try? cgroups.sweepOrphans(keeping: [])) ?? []
            if !swept.isEmpty {
                logger.warning("swept sandboxes left by a previous run", metadata: ["count": "\(swept.count)"])
            }
        }
        // Absolute, since sandboxes mount these from other working directories.
        let absolute = { (path: String) in URL(fileURLWithPath: path).standardizedFileURL.path }
        let corral = try await CorralHost.open(
            HostConfiguration(
                dataDirectory: absolute(dataDir), rootfsDirectory: absolute(rootfsDir),
                policiesDirectory: absolute(policiesDir), defaultPolicy: defaultPolicy, cgroups: cgroups))
        let app = try buildApplication(
            api, host: corral, files: HostFileTools(host: corral), logger: Logger(label: "corral.api"))
        logger.info(
            "corral serve",
            metadata: [
                "version": "\(HostModule.version)", "bind": "\(bind)", "tokens": "\(api.tokens.count)",
                "open": "\(api.tokens.isEmpty)", "rootfs_dir": "\(rootfsDir)", "policies_dir": "\(policiesDir)",
                "data_dir": "\(dataDir)", "cgroups": "\(cgroups?.mode.rawValue ?? "none")",
            ])
        // The host service is told to stop first (services stop in reverse order): new jobs
        // get 503 while running ones finish within the grace; then the HTTP server drains.
        let group = ServiceGroup(
            configuration: .init(
                services: [app, HostShutdownService(host: corral, grace: api.shutdownGrace)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        logger.info("corral serve: stopped")
    }
}
