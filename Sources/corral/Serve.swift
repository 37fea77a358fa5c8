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

    @OptionGroup var server: ServerOptions
    @OptionGroup var sandboxes: SandboxHostOptions

    func validate() throws { try server.check() }

    func run() async throws {
        server.bootstrapLogging()
        let logger = Logger(label: "corral.serve")
        let api = try server.apiConfiguration()
        let configuration = try sandboxes.hostConfiguration(dataDir: server.dataDir, logger: logger)
        let corral = try await CorralHost.open(configuration)
        let app = try buildApplication(
            api, host: corral, jobs: corral.jobService, files: HostFileTools(host: corral),
            sessions: corral.sessionService,
            logger: Logger(label: "corral.api"))
        logger.info(
            "corral serve",
            metadata: [
                "version": "\(HostModule.version)", "bind": "\(server.bind)", "tokens": "\(api.tokens.count)",
                "open": "\(api.tokens.isEmpty)", "rootfs_dir": "\(sandboxes.rootfsDir)",
                "policies_dir": "\(sandboxes.policiesDir)", "data_dir": "\(server.dataDir)",
                "cgroups": "\(configuration.cgroups?.mode.rawValue ?? "none")",
            ])
        // The host service is told to stop first (services stop in reverse order): new jobs
        // get 503 while running ones finish within the grace; then the HTTP server drains.
        try await runServices([app, HostShutdownService(host: corral, grace: api.shutdownGrace)], logger: logger)
        logger.info("corral serve: stopped")
    }
}

/// The options of every command that serves the HTTP API.
struct ServerOptions: ParsableArguments {
    @Option(help: "Address to listen on, HOST:PORT.")
    var bind: String = APIModule.defaultBind

    @Option(help: "JSON file of bearer tokens (name, secret, project globs, admin, rate, max_jobs, policies).")
    var tokens: String?

    @Option(help: "Directory for the host's state: cache, journal, audit log.")
    var dataDir: String = "var"

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

    @Flag(inversion: .prefixedNo, help: "Serve GET /metrics without a token to loopback peers.")
    var metricsLoopback: Bool = true

    @Option(
        help: ArgumentHelp(
            "Requests a second the caller of an open (tokenless) server may make, in bursts of twice that.",
            discussion: "0, the default, is unlimited: a local server's only user is not throttled unless asked."))
    var openRate: Double = 0

    func check() throws {
        guard ["json", "text"].contains(logFormat) else { throw ValidationError("--log-format is json or text") }
        guard shutdownGrace >= 0 else { throw ValidationError("--shutdown-grace must be 0 or more") }
        guard maxArchiveMib > 0 else { throw ValidationError("--max-archive-mib must be positive") }
        guard waitS >= 0, maxWaitS >= waitS else { throw ValidationError("need 0 <= --wait-s <= --max-wait-s") }
        guard openRate >= 0, openRate.isFinite else { throw ValidationError("--open-rate must be 0 or more") }
    }

    func bootstrapLogging() {
        // Both formats escape control characters: text a request chose (a file name, a
        // header) must never forge a line of the log.
        let format: LineLogHandler.Format = logFormat == "json" ? .json : .text
        LoggingSystem.bootstrap { LineLogHandler(label: $0, format: format) }
        // A parent may hand down a blocked SIGTERM/SIGINT (a test runner does): the
        // graceful shutdown must still hear them.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &signals, nil)
    }

    /// The API's configuration, validated (an open server may only listen on loopback);
    /// `extraToken` is added as an admin (a cluster's worker token).
    func apiConfiguration(extraToken: (name: String, secret: String)? = nil) throws -> APIConfiguration {
        let (host, port) = try APIConfiguration.parseBind(bind)
        var store = try tokens.map(TokenStore.load) ?? TokenStore([])
        if let extraToken {
            store = store.adding(
                Principal(name: extraToken.name, projects: ["*"], admin: true, forwarder: true),
                secret: extraToken.secret)
        }
        var api = APIConfiguration(
            host: host, port: port, tokens: store, dataDirectory: Self.absolute(dataDir),
            metricsOpenOnLoopback: metricsLoopback, shutdownGrace: .seconds(shutdownGrace))
        api.limits.maxArchiveBytes = maxArchiveMib << 20
        api.limits.defaultWaitSeconds = waitS
        api.limits.maxWaitSeconds = maxWaitS
        if openRate > 0 { api.limits.openRate = RateLimit(perSecond: openRate, burst: max(1, Int(openRate * 2))) }
        // Refuse an open non-loopback server before touching anything.
        try api.validate()
        return api
    }

    /// Absolute, since sandboxes mount these from other working directories.
    static func absolute(_ path: String) -> String { URL(fileURLWithPath: path).standardizedFileURL.path }
}

/// The options of every command that runs sandboxes.
struct SandboxHostOptions: ParsableArguments {
    @Option(help: "Directory holding built rootfs images (rootfs/build writes them).")
    var rootfsDir: String = "rootfs/out"

    @Option(help: "Directory of policy files.")
    var policiesDir: String = "policies"

    @Option(help: "The policy of projects registered without one, and the only one tokens without `policies` may use.")
    var defaultPolicy: String = "default"

    @Option(help: "Name of this host's cgroup subtree (beside the machine's own cgroups).")
    var cgroupPrefix: String = "corral"

    @Option(
        name: .customLong("allow-source-host"),
        help: ArgumentHelp(
            "A private host http(s) project sources may reach: a name, *.domain, an address or a range (10.0.0.0/8).",
            discussion: "Repeatable. Sources on loopback, link-local and private addresses are refused otherwise.",
            valueName: "pattern"))
    var allowSourceHosts: [String] = []

    @Flag(help: "Let http(s) project sources reach any address, private ones included (no SSRF check).")
    var allowPrivateSources = false

    @Option(help: "Formatted workspace filesystems kept ready per cap size, so a new project skips mkfs (0: none).")
    var spareVolumes: Int = 2

    /// The host's configuration. Sandboxes of a previous run of this host outlive it (their
    /// inits do not die with the host); their cgroups find and kill them first.
    func hostConfiguration(dataDir: String, logger: Logger) throws -> HostConfiguration {
        let cgroups = try? CgroupDriver.detect(prefix: cgroupPrefix)
        if let cgroups {
            let swept = (try? cgroups.sweepOrphans(keeping: [])) ?? []
            if !swept.isEmpty {
                logger.warning("swept sandboxes left by a previous run", metadata: ["count": "\(swept.count)"])
            }
        }
        var configuration = HostConfiguration(
            dataDirectory: ServerOptions.absolute(dataDir), rootfsDirectory: ServerOptions.absolute(rootfsDir),
            policiesDirectory: ServerOptions.absolute(policiesDir), defaultPolicy: defaultPolicy, cgroups: cgroups)
        // This host detected the driver for itself alone, so a clean stop removes its prefix.
        configuration.removesCgroupPrefixOnStop = true
        configuration.sourceAddresses = try sourceAddresses()
        guard (0...64).contains(spareVolumes) else {
            throw ValidationError("--spare-volumes must be 0 to 64, not \(spareVolumes)")
        }
        configuration.spareVolumes = spareVolumes
        return configuration
    }

    /// `--allow-source-host` and `--allow-private-sources`, checked.
    func sourceAddresses() throws -> SourceAddressPolicy {
        do {
            var policy = try SourceAddressPolicy(allowing: allowSourceHosts)
            policy.allowPrivate = allowPrivateSources
            return policy
        } catch {
            throw ValidationError("--allow-source-host: \(error)")
        }
    }

    func validate() throws { _ = try sourceAddresses() }
}

/// Runs the services until SIGTERM or SIGINT; they stop in reverse order.
func runServices(_ services: [any Service], logger: Logger) async throws {
    let group = ServiceGroup(
        configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
}
