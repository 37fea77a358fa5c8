import Foundation
import Logging
import Sandbox

/// One Corral host: policies, the project cache, a sandbox per project, the job system and
/// the file tools, joined up. The HTTP API and `corral serve` talk to this.
public actor CorralHost {
    public let configuration: HostConfiguration
    public let policies: PolicyStore
    public let cache: ProjectCache
    public let jobs: JobSystem
    let pool: SandboxPool
    let settings: ProjectSettingsStore
    /// Runs each project's setup commands once per file set (docs/ENVIRONMENTS.md, "Setup").
    nonisolated let setup: SetupRunner
    /// Serves every sandbox's way out (docs/NETWORK.md).
    public nonisolated let egress: EgressProxy
    let logger = Logger(label: "corral.host")
    /// Persistent shells and interpreters (docs/SESSIONS.md).
    nonisolated let sessions = SessionManager()
    /// File tools per project, keyed by the materialization and sandbox they belong to.
    var toolsCache: [String: (key: String, tools: FileTools)] = [:]

    init(
        configuration: HostConfiguration, policies: PolicyStore, cache: ProjectCache, jobs: JobSystem,
        pool: SandboxPool,
        settings: ProjectSettingsStore, setup: SetupRunner, egress: EgressProxy
    ) {
        self.setup = setup
        self.egress = egress
        self.configuration = configuration
        self.policies = policies
        self.cache = cache
        self.jobs = jobs
        self.pool = pool
        self.settings = settings
    }

    /// Opens the host's state under the data directory: policies (watched for edits), the
    /// cache index, the job journal (unfinished jobs of a previous run become interrupted).
    public static func open(_ configuration: HostConfiguration) async throws -> CorralHost {
        try await open(configuration) { runner in
            try JobSystem(
                runner: runner, limits: configuration.jobLimits,
                journalPath: configuration.dataDirectory + "/jobs.sqlite")
        }
    }

    /// Like ``open(_:)``, with the job system built by `makeJobs` over the host's sandbox
    /// runner (a cluster worker puts its start gate in front of it).
    package static func open(
        _ configuration: HostConfiguration, makeJobs: (any JobRunner) async throws -> JobSystem
    ) async throws -> CorralHost {
        let data = configuration.dataDirectory
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        let policies = PolicyStore(directory: configuration.policiesDirectory)
        try policies.startWatching()
        var cacheConfiguration = CacheConfiguration(
            dataDirectory: data + "/cache", stores: configuration.stores, ttl: configuration.ttl)
        cacheConfiguration.stores.sourceAddresses = configuration.sourceAddresses
        cacheConfiguration.spareVolumes = configuration.spareVolumes
        let cache = try await ProjectCache.open(cacheConfiguration)
        let settings = ProjectSettingsStore(path: data + "/projects.json")
        let resolve: @Sendable (String) throws -> ResolvedProject = { id in
            try Self.resolve(id, settings: settings, policies: policies)
        }
        let egress = EgressProxy()
        // While a project's setup runs, the proxy applies its [setup.network] instead.
        let gate = SetupGate()
        let pool = SandboxPool(proxy: egress) { id in
            guard let policy = (try? resolve(id))?.policy else { return nil }
            return gate.contains(id) ? policy.setupEgressRules : policy.egressRules
        }
        var runner = HostJobRunner(cache: cache, pool: pool, resolve: resolve) { project, workspace in
            Self.sandboxConfiguration(project, workspace: workspace, configuration: configuration)
        }
        let setup = SetupRunner(
            .init(
                cache: cache, sandbox: { [runner] in try await runner.sandboxAndPin($0) }, resolve: resolve,
                commands: { settings[$0]?.setup ?? [] }, rootfsDirectory: configuration.rootfsDirectory),
            gate: gate)
        runner.prepare = { project in try await setup.ensure(project.id) }
        let jobs = try await makeJobs(runner)
        let host = CorralHost(
            configuration: configuration, policies: policies, cache: cache, jobs: jobs, pool: pool, settings: settings,
            setup: setup, egress: egress)
        // So even the first new project under the default policy finds a spare filesystem.
        if let (_, limits) = try? await host.validatedSettings(policy: nil, limits: RequestedLimits()) {
            await cache.prepareSpares(bytes: Self.quota(limits))
        }
        return host
    }

    // MARK: - Projects

    /// Registers (or re-registers) a project: its source, its policy, limits that may only
    /// be lower than the policy's, and its setup commands (nil keeps those it has).
    public func register(
        _ id: String, source: String, sha256: String? = nil, policy: String? = nil, limits: RequestedLimits = .init(),
        setup commands: [String]? = nil
    ) async throws -> ProjectInfo {
        var (chosen, effective) = try validatedSettings(policy: policy, limits: limits)
        chosen.setup = try setupCommands(id, commands)
        try refuseWhileClosing(id)
        try await cache.register(id, source: source, sha256: sha256, workspaceQuota: Self.quota(effective))
        try settings.set(id, chosen)
        logIfLastGood(id, policy: chosen.policy)
        // A project already materialized whose commands changed runs them now.
        await setup.startInBackground(id)
        return try await project(id)
    }

    /// Creates a project from an uploaded archive, stored in the blob store, or replaces
    /// the files of an existing one: a materialized workspace is swapped for the new tree
    /// while no job runs and no session lives (``CacheError/projectBusy(_:)`` otherwise,
    /// and nothing changes), and the sandbox over the old tree is destroyed, so the next
    /// job gets a fresh one over the new.
    ///
    /// `setup` replaces the project's setup commands (nil keeps those it has). The new
    /// workspace's setup starts at once, in the background; its jobs wait for it.
    public func upload(
        _ id: String, archive: [UInt8], policy: String? = nil, limits: RequestedLimits = .init(),
        setup commands: [String]? = nil
    ) async throws -> ProjectInfo {
        var (chosen, effective) = try validatedSettings(policy: policy, limits: limits)
        chosen.setup = try setupCommands(id, commands)
        try refuseWhileClosing(id)
        if settings[id] != nil {
            try await refuseWhileBusy(id, sessionsToo: true, doing: "its files are replaced")
        }
        _ = try await cache.upload(id, bytes: archive, workspaceQuota: Self.quota(effective))
        try settings.set(id, chosen)
        logIfLastGood(id, policy: chosen.policy)
        // A bind mount keeps pointing at the directory it was made from: a sandbox over the
        // old tree goes. One made over the new tree since (a job that just started) stays.
        if let workspace = try? await cache.currentWorkspace(id) {
            await pool.destroy(id, unlessOver: workspace)
        } else {
            await pool.destroy(id)
        }
        toolsCache[id] = nil
        await setup.startInBackground(id)
        return try await project(id)
    }

    /// A project being deleted cannot be registered or uploaded until the deletion is done.
    func refuseWhileClosing(_ id: String) throws {
        if settings[id] == nil && settings.projects.contains(id) {
            throw CacheError.busy("project \(id) is being deleted; register it again once that is done")
        }
    }

    public func project(_ id: String) async throws -> ProjectInfo {
        guard let chosen = settings[id] else { throw HostError.projectNotFound(id) }
        let status = try await cache.currentStatus(id)
        let records = try await jobs.list(project: id, limit: 1000)
        var limits = ProjectLimits(enforcement: limitReport(sandbox: await pool.existing(id)))
        if let resolved = try? Self.resolve(id, settings: settings, policies: policies) {
            limits.requireLimits = resolved.policy.requireLimits
            limits.cpus = resolved.limits.cpus
            limits.memoryBytes = resolved.limits.memoryBytes
            limits.pidsMax = resolved.limits.pids
            limits.workspaceBytes = resolved.limits.workspaceBytes
            limits.timeoutSeconds = resolved.limits.timeoutSeconds
            limits.maxTimeoutSeconds = resolved.maxTimeoutSeconds
        }
        return ProjectInfo(
            id: id, source: status.source, state: status.state.rawValue, sourceVersion: status.sourceVersion,
            dirty: status.dirty, diskBytes: status.diskBytes,
            runningJobs: records.filter { $0.state == .running }.count,
            queuedJobs: records.filter { $0.state == .queued }.count, expiresAt: status.expiresAt,
            policy: chosen.policy, policyWarning: Self.policyWarning(chosen.policy, policies: policies),
            sandbox: await pool.existing(id) != nil, limits: limits, ports: (try? await ports(id).ports) ?? [],
            snapshotBytes: status.snapshotBytes,
            setup: await setup.info(id, policy: try? Self.resolve(id, settings: settings, policies: policies).policy))
    }

    public func projects() async -> [ProjectInfo] {
        var out: [ProjectInfo] = []
        for status in await cache.list() {
            if let info = try? await project(status.id) { out.append(info) }
        }
        return out
    }

    /// Materializes the project, starts its sandbox and runs its setup if it must, now,
    /// reporting progress; throws ``HostError/setupFailed(project:message:)`` when the setup
    /// failed for the current files and commands.
    public func warm(_ id: String, progress: (@Sendable (CacheProgress) -> Void)? = nil) async throws -> ProjectInfo {
        let resolved = try Self.resolve(id, settings: settings, policies: policies)
        try await cache.setWorkspaceQuota(id, bytes: Self.quota(resolved.limits))
        let workspace = try await cache.acquire(id, progress: progress)
        defer { Task { try? await cache.release(id) } }
        _ = try await pool.sandbox(id, workspace: workspace, policyDigest: resolved.policy.digest) { [configuration] in
            Self.sandboxConfiguration(resolved, workspace: $0, configuration: configuration)
        }
        try await setup.ensure(id, progress: progress)
        return try await project(id)
    }

    /// Writes the workspace back to the blob store now.
    public func snapshot(_ id: String) async throws -> SnapshotResult? {
        return try await cache.snapshot(id, force: true)
    }

    /// Evicts the workspace (writing it back first unless `discard`), after stopping its
    /// sandbox.
    public func evict(_ id: String, discard: Bool = false) async throws {
        await sessions.endAll(project: id, reason: "the project was evicted")
        await pool.destroy(id)
        // A setup that was running ended with its sandbox; it runs again after the eviction.
        await setup.settle(id)
        // The file tools hold a descriptor of the workspace root, which would keep its
        // volume busy and the eviction from unmounting it.
        toolsCache[id] = nil
        try await cache.evict(id, discard: discard)
    }

    // MARK: - Jobs

    /// The host's jobs as the API runs them: the ``JobSystem``, behind a check that refuses
    /// up front what the project's policy would never run.
    public nonisolated var jobService: any JobService {
        CheckedJobService(jobs) { request in try await self.checkRequest(request) }
    }

    /// Refuses a timeout above the project policy's maximum, a project not registered, and
    /// one whose setup failed for its current files and commands.
    func checkRequest(_ request: JobRequest) async throws {
        let resolved = try Self.resolve(request.project, settings: settings, policies: policies)
        if request.timeoutSeconds > Double(resolved.maxTimeoutSeconds) {
            throw HostError.policyLimits(
                "timeout \(request.timeoutSeconds) s is above the project's maximum of \(resolved.maxTimeoutSeconds) s")
        }
        if let failure = await setup.failure(request.project) { throw failure }
    }

    // MARK: - Lifecycle

    /// Stops accepting jobs, lets running ones finish for up to `grace`, stops every
    /// sandbox and writes dirty workspaces back; then, when the configuration says so
    /// (``HostConfiguration/removesCgroupPrefixOnStop``), removes the cgroup prefix.
    public func shutdown(grace: Duration) async {
        // Setup is stopped at once, not given the grace: it runs again after the restart.
        await setup.shutdown()
        await jobs.shutdown(grace: grace)
        await sessions.shutdown()
        await pool.destroyAll()
        await egress.shutdown()
        for status in await cache.list() where status.state == .ready {
            _ = try? await cache.snapshot(status.id)
        }
        await cache.removeSpares()
        policies.stopWatching()
        if configuration.removesCgroupPrefixOnStop, let cgroups = configuration.cgroups {
            // rmdir may wait out a cgroup the kernel is still tearing down: not on the async pool.
            let stayed = await BlockingExecutor.shared.run("corral-cg-rm") { cgroups.removePrefix() }
            if !stayed.isEmpty {
                logger.warning(
                    "cgroup directories stayed after the stop; the next start sweeps them",
                    metadata: ["directories": "\(stayed.joined(separator: " "))"])
            }
        }
    }

    // MARK: - Resolution

    func validatedSettings(policy: String?, limits: RequestedLimits) throws -> (
        ProjectSettings, EffectiveLimits
    ) {
        let name = policy ?? configuration.defaultPolicy
        let found = try Self.policy(named: name, in: policies)
        let effective: EffectiveLimits
        do {
            effective = try found.effectiveLimits(for: limits)
        } catch {
            throw HostError.policyLimits(error.description)
        }
        let chosen = ProjectSettings(
            policy: name, cpus: limits.cpus, memoryBytes: limits.memoryBytes, pids: limits.pids,
            timeoutSeconds: limits.timeoutSeconds, workspaceBytes: limits.workspaceBytes)
        return (chosen, effective)
    }

    /// The policy's `limits.workspace` as the cache's disk cap: each workspace becomes a
    /// filesystem of that size (docs/CACHE.md, "Disk cap").
    static func quota(_ limits: EffectiveLimits) -> Int64 { Int64(clamping: limits.workspaceBytes) }

    static func resolve(_ id: String, settings: ProjectSettingsStore, policies: PolicyStore) throws -> ResolvedProject {
        guard let chosen = settings[id] else { throw HostError.projectNotFound(id) }
        let policy = try Self.policy(named: chosen.policy, in: policies)
        do {
            let maxSeconds = min(chosen.timeoutSeconds ?? policy.timeouts.maxSeconds, policy.timeouts.maxSeconds)
            return ResolvedProject(
                id: id, policy: policy, limits: try policy.effectiveLimits(for: chosen.requested),
                maxTimeoutSeconds: maxSeconds)
        } catch {
            throw HostError.policyLimits(error.description)
        }
    }

    static func sandboxConfiguration(
        _ project: ResolvedProject, workspace: Workspace, configuration: HostConfiguration
    ) -> SandboxConfiguration {
        let limits = project.limits
        var sandbox = SandboxConfiguration(
            projectID: project.id, workspace: workspace.path,
            rootfs: configuration.rootfsDirectory + "/" + project.policy.rootfs, tmpBytes: limits.tmpfsBytes,
            shmBytes: limits.tmpfsBytes, readOnlyBinds: project.policy.mounts.map { ($0.source, $0.target) },
            limits: CgroupLimits(cpus: limits.cpus, memoryBytes: limits.memoryBytes, pids: limits.pids),
            cgroups: configuration.cgroups, requireLimits: project.policy.requireLimits,
            sharedIdentity: workspace.sharedIdentity)
        sandbox.projectHome = true
        return sandbox
    }
}
