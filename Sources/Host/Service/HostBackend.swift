import Foundation
import Sandbox

/// What the HTTP API needs from a Corral host besides its jobs (a ``JobService``): project
/// calls, status and the policy audit. ``CorralHost`` is the real implementation; in a
/// cluster, `ClusterHost` wraps it on a worker and `ClusterBackend` forwards to the owner on
/// an API node (module Cluster). Router tests use a fake, so they need neither root nor
/// sandboxes.
public protocol HostBackend: Sendable {
    /// Registers a project; `setup` replaces its setup commands, nil keeps them.
    func register(
        _ id: String, source: String, sha256: String?, policy: String?, limits: RequestedLimits, setup: [String]?
    ) async throws -> ProjectInfo
    /// Creates a project from an archive or replaces its files; `setup` as for ``register(_:source:sha256:policy:limits:setup:)``.
    func upload(_ id: String, archive: [UInt8], policy: String?, limits: RequestedLimits, setup: [String]?)
        async throws -> ProjectInfo
    /// Replaces the project's setup commands (`[]` removes them); a materialized project
    /// runs changed ones at once.
    func setSetup(_ id: String, commands: [String]) async throws -> ProjectInfo
    /// Runs the project's setup now and answers when it has ended, reporting its stages.
    func runSetup(_ id: String, progress: (@Sendable (CacheProgress) -> Void)?) async throws -> ProjectInfo
    func project(_ id: String) async throws -> ProjectInfo
    func projects() async -> [ProjectInfo]
    func warm(_ id: String, progress: (@Sendable (CacheProgress) -> Void)?) async throws -> ProjectInfo
    func snapshot(_ id: String) async throws -> SnapshotResult?
    func evict(_ id: String, discard: Bool) async throws
    /// Deletes the project for good: ends its jobs (cancelled) and sessions, destroys its
    /// sandbox, removes its registration, workspace, snapshot and uploaded archive; nothing
    /// is written back. Throws ``HostError/projectNotFound(_:)`` for an unknown project.
    func delete(_ id: String) async throws
    /// Writes an archive's entries over the project's workspace; `dir/.wh.name` deletes
    /// `dir/name`. Refused with ``CacheError/projectBusy(_:)`` while its jobs run.
    func patch(_ id: String, archive: [UInt8]) async throws -> PatchSummary
    /// Packs the workspace into a new, immutable named snapshot; refused with
    /// ``CacheError/projectBusy(_:)`` while its jobs run, ``CacheError/snapshotExists(project:name:)``
    /// for a name in use.
    func createSnapshot(_ id: String, name: String) async throws -> NamedSnapshot
    /// The project's named snapshots, oldest first.
    func snapshots(_ id: String) async throws -> [NamedSnapshot]
    /// One named snapshot; ``CacheError/snapshotNotFound(project:name:)`` when there is none.
    func namedSnapshot(_ id: String, name: String) async throws -> NamedSnapshot
    /// Resets the workspace to the snapshot; refused while jobs run or sessions live.
    func restoreSnapshot(_ id: String, name: String) async throws -> NamedSnapshot
    /// Deletes a named snapshot, its archive and its record.
    func deleteSnapshot(_ id: String, name: String) async throws
    /// Makes `id` a new project whose workspace is a copy-on-write view of `source`'s named
    /// snapshot, or without one of its current workspace (docs/ENVIRONMENTS.md, "Forks").
    /// The fork gets `policy` and `limits`, or where nil the source's. Throws
    /// ``HostError/projectNotFound(_:)`` for an unknown source, ``CacheError/projectExists(_:)``
    /// for a target in use, ``CacheError/snapshotNotFound(project:name:)``, and
    /// ``CacheError/projectBusy(_:)`` while the source's jobs run or sessions live.
    func fork(_ source: String, into id: String, snapshot: String?, policy: String?, limits: RequestedLimits?)
        async throws -> ProjectInfo
    /// The policy of a project registered or uploaded without one (`--default-policy`):
    /// the only one a token without `policies` may use.
    var defaultPolicy: String { get }
    /// The TCP ports processes in the project's sandbox listen on; never starts a sandbox.
    func ports(_ id: String) async throws -> PortList
    /// Where a request for `port` of the project goes: a socket connected to it inside the
    /// sandbox, or in a cluster the project's owner. Throws ``PortError`` when nothing listens.
    func portEndpoint(_ id: String, port: UInt16) async throws -> PortEndpoint

    func status() async -> HostStatus
    /// The project cache's hits, misses and downloaded bytes, for `/metrics`; nil for a
    /// backend without a cache of its own.
    func cacheCounters() async -> CacheCounters?
    /// Sandboxes whose init died on its own (killed from outside) since the host started,
    /// for `/metrics`; nil for a backend without sandboxes of its own.
    func sandboxDeaths() async -> Int?
    func readiness() async -> [String: Bool]
    /// The generation after each policy reload, for the audit log.
    func policyReloads() async -> AsyncStream<Int>
    /// Digests of the policies in force and the files that failed to load.
    func policySummary() async -> (digests: [String: String], errors: [String])
    /// Every connection through the egress proxy from now on, for the audit log and
    /// metrics; a backend without sandboxes ends the stream at once.
    func egressEvents() async -> AsyncStream<EgressEvent>
    func shutdown(grace: Duration) async
}

extension HostBackend {
    public func cacheCounters() async -> CacheCounters? { nil }
    public func sandboxDeaths() async -> Int? { nil }
    public func fork(_ source: String, into id: String, snapshot: String?, policy: String?, limits: RequestedLimits?)
        async throws -> ProjectInfo
    {
        throw CacheError.forkUnsupported("this host does not make forks")
    }
    public func egressEvents() async -> AsyncStream<EgressEvent> { AsyncStream { $0.finish() } }
}

/// The real host: project calls go to ``CorralHost`` itself; its jobs are its
/// ``CorralHost/jobService``.
extension CorralHost: HostBackend {
    public nonisolated var defaultPolicy: String { configuration.defaultPolicy }

    public func cacheCounters() async -> CacheCounters? { await cache.counters }

    public func sandboxDeaths() async -> Int? { await pool.deaths }

    public func policyReloads() -> AsyncStream<Int> { policies.reloads() }

    public nonisolated func egressEvents() -> AsyncStream<EgressEvent> { egress.events() }

    public func policySummary() -> (digests: [String: String], errors: [String]) {
        let status = policies.status
        return (status.digests, status.errors.map(\.description))
    }
}
