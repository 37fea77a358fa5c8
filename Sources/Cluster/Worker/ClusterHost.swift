import Foundation
import Host
import Logging

/// A worker host of a cluster as the API and the worker see it: the host's ``CorralHost``,
/// kept in line with the cluster's registry before any call touches a project.
///
/// Each call first *adopts* the project: a project registered elsewhere is registered here
/// from the registry; a local copy from an older ownership epoch (another host owned the
/// project since) is dropped without write-back first, so the project materializes from
/// the latest snapshot in the shared store. Registrations made here are published to the
/// registry. `corral serve` uses the host undecorated and knows nothing of this.
public actor ClusterHost: HostBackend, FileToolBackend {
    /// The host underneath, which never sees the registry.
    public nonisolated let host: CorralHost
    let registry: any ProjectRegistry
    let logger = Logger(label: "corral.cluster")
    /// Adoptions in progress, one per project.
    var adopting: [String: Task<Void, any Error>] = [:]
    /// When each cluster project was last adopted or used here.
    var adoptedAt: [String: ContinuousClock.Instant] = [:]
    /// Projects being deleted here: nothing adopts them meanwhile.
    var deleting: Set<String> = []

    public init(_ host: CorralHost, registry: any ProjectRegistry) {
        self.host = host
        self.registry = registry
    }

    /// Opens a worker host of a cluster (`corral worker`): a ``CorralHost`` whose job system
    /// takes its jobs from Redis through the returned ``ClusterWorker``, wrapped so each
    /// call adopts its project first.
    ///
    /// Call `worker.start()` to join, and on the way out `worker.shutdown(grace:)` before
    /// `host.shutdown(grace:)`: the worker writes each project it owns back to blob storage
    /// (when dirty) before it releases the project's lease, so the next owner
    /// materializes the latest changes. Its jobs are recorded in Redis, not in the local
    /// journal. `registry` defaults to the cluster's registry in Redis.
    public static func openWorker(
        _ configuration: HostConfiguration, cluster: ClusterConfiguration, host name: String, address: String? = nil,
        registry: (any ProjectRegistry)? = nil
    ) async throws -> (host: ClusterHost, worker: ClusterWorker) {
        let registry =
            registry
            ?? RedisProjectRegistry(
                redis: RedisClient(cluster.redis, name: "corral-registry-\(name)"), configuration: cluster)
        var made: ClusterWorker?
        let host = try await CorralHost.open(configuration) { runner in
            let worker = try ClusterWorker(
                configuration: cluster, host: name, address: address, runner: runner, limits: configuration.jobLimits)
            made = worker
            return worker.jobs
        }
        guard let worker = made else { throw ClusterError.invalidConfiguration("the worker was not built") }
        let clustered = ClusterHost(host, registry: registry)
        // The worker exists before the host it serves (the host's job system is the
        // worker's); it learns what to call on the host here, before it can start.
        await worker.attach(hooks: clustered.hooks, beforeRelease: clustered.writeBack)
        return (clustered, worker)
    }

    // MARK: - Projects

    public nonisolated var defaultPolicy: String { host.defaultPolicy }

    public func register(
        _ id: String, source: String, sha256: String?, policy: String?, limits: RequestedLimits, setup: [String]?
    ) async throws -> ProjectInfo {
        try await host.checkSettings(policy: policy, limits: limits)
        try await adopt(id)
        let info = try await host.register(
            id, source: source, sha256: sha256, policy: policy, limits: limits, setup: setup)
        try await publish(id)
        return info
    }

    public func upload(_ id: String, archive: [UInt8], policy: String?, limits: RequestedLimits, setup: [String]?)
        async throws -> ProjectInfo
    {
        try await host.checkSettings(policy: policy, limits: limits)
        try await adopt(id)
        let info = try await host.upload(id, archive: archive, policy: policy, limits: limits, setup: setup)
        try await publish(id)
        return info
    }

    /// The commands go to the registry too, so the next owner runs the same ones.
    public func setSetup(_ id: String, commands: [String]) async throws -> ProjectInfo {
        try await adopt(id)
        let info = try await host.setSetup(id, commands: commands)
        try await publish(id)
        return info
    }

    public func runSetup(_ id: String, progress: (@Sendable (CacheProgress) -> Void)?) async throws -> ProjectInfo {
        try await adopt(id)
        return try await host.runSetup(id, progress: progress)
    }

    public func project(_ id: String) async throws -> ProjectInfo {
        try await adopt(id)
        return try await host.project(id)
    }

    public func projects() async -> [ProjectInfo] {
        var out: [ProjectInfo] = []
        for id in await host.projectIDs() {
            if let info = try? await project(id) { out.append(info) }
        }
        return out
    }

    public func warm(_ id: String, progress: (@Sendable (CacheProgress) -> Void)?) async throws -> ProjectInfo {
        try await adopt(id)
        return try await host.warm(id, progress: progress)
    }

    public func snapshot(_ id: String) async throws -> SnapshotResult? {
        try await adopt(id)
        return try await host.snapshot(id)
    }

    public func evict(_ id: String, discard: Bool) async throws {
        try await adopt(id)
        try await host.evict(id, discard: discard)
    }

    /// Deletes the project here, then from the registry: its registration and lease go,
    /// so any worker (this one included) takes the id as a new project if it comes again.
    /// While it is deleted, calls for it here answer "no such project".
    public func delete(_ id: String) async throws {
        try await adopt(id)
        guard deleting.insert(id).inserted else { throw HostError.projectNotFound(id) }
        defer { deleting.remove(id) }
        try await host.delete(id)
        try await registry.remove(id)
        adoptedAt[id] = nil
    }

    public func patch(_ id: String, archive: [UInt8]) async throws -> PatchSummary {
        try await adopt(id)
        return try await host.patch(id, archive: archive)
    }

    public func createSnapshot(_ id: String, name: String) async throws -> NamedSnapshot {
        try await adopt(id)
        return try await host.createSnapshot(id, name: name)
    }

    public func snapshots(_ id: String) async throws -> [NamedSnapshot] {
        try await adopt(id)
        return try await host.snapshots(id)
    }

    public func namedSnapshot(_ id: String, name: String) async throws -> NamedSnapshot {
        try await adopt(id)
        return try await host.namedSnapshot(id, name: name)
    }

    public func restoreSnapshot(_ id: String, name: String) async throws -> NamedSnapshot {
        try await adopt(id)
        return try await host.restoreSnapshot(id, name: name)
    }

    /// The fork is made on this host, the source's owner, and published as a cluster
    /// project owned here. An id the registry knows is `project_exists`.
    public func fork(_ source: String, into id: String, snapshot: String?, policy: String?, limits: RequestedLimits?)
        async throws -> ProjectInfo
    {
        try await adopt(source)
        if try await registry.load(id) != nil { throw CacheError.projectExists(id) }
        let info = try await host.fork(source, into: id, snapshot: snapshot, policy: policy, limits: limits)
        try await publish(id)
        adoptedAt[id] = .now
        return info
    }

    public func deleteSnapshot(_ id: String, name: String) async throws {
        try await adopt(id)
        try await host.deleteSnapshot(id, name: name)
    }

    public func ports(_ id: String) async throws -> PortList {
        try await adopt(id)
        return try await host.ports(id)
    }

    public func portEndpoint(_ id: String, port: UInt16) async throws -> PortEndpoint {
        try await adopt(id)
        return try await host.portEndpoint(id, port: port)
    }

    // MARK: - Jobs and file tools

    /// The host's jobs, each submit adopting its project first.
    public nonisolated var jobService: any JobService {
        CheckedJobService(host.jobService) { request in try await self.adopt(request.project) }
    }

    public nonisolated var fileToolNames: [String] { FileTools.toolNames.sorted() }

    public func callFileTool(project: String, name: String, arguments: [String: JSONValue], caller: String?)
        async throws -> ToolResult
    {
        try await adopt(project)
        return try await host.fileTool(project: project, name: name, arguments: arguments, caller: caller)
    }

    // MARK: - Operations

    public func status() async -> HostStatus { await host.status() }
    public func cacheCounters() async -> CacheCounters? { await host.cacheCounters() }
    public func sandboxDeaths() async -> Int? { await host.sandboxDeaths() }
    public func readiness() async -> [String: Bool] { await host.readiness() }
    public func policyReloads() async -> AsyncStream<Int> { await host.policyReloads() }

    public nonisolated func egressEvents() -> AsyncStream<EgressEvent> { host.egressEvents() }
    public func policySummary() async -> (digests: [String: String], errors: [String]) {
        await host.policySummary()
    }
    public func shutdown(grace: Duration) async { await host.shutdown(grace: grace) }
}
