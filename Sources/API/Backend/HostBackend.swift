import Foundation
import Host
import Sandbox

/// What the HTTP API needs from a Corral host. ``CorralHost`` is the one real
/// implementation; router tests use a fake, so they need neither root nor sandboxes.
public protocol HostBackend: Sendable {
    func register(_ id: String, source: String, sha256: String?, policy: String?, limits: RequestedLimits)
        async throws -> ProjectInfo
    func upload(_ id: String, archive: [UInt8], policy: String?, limits: RequestedLimits) async throws -> ProjectInfo
    func project(_ id: String) async throws -> ProjectInfo
    func projects() async -> [ProjectInfo]
    func warm(_ id: String, progress: (@Sendable (CacheProgress) -> Void)?) async throws -> ProjectInfo
    func snapshot(_ id: String) async throws -> SnapshotResult?
    func evict(_ id: String, discard: Bool) async throws

    /// Queues a command; throws when the project's policy would refuse it or the queue is full.
    func submit(_ request: JobRequest) async throws -> JobRecord
    /// Long-poll on a job (see ``JobSystem/wait(_:timeout:since:untilFinished:)``).
    func waitJob(_ id: String, timeout: Duration, since: Int, untilFinished: Bool) async throws -> JobSnapshot
    func jobSnapshot(_ id: String, since: Int) async throws -> JobSnapshot
    func cancelJob(_ id: String) async throws -> JobSnapshot
    /// Cancels with `signal` sent to the job's tree first (see ``JobSystem/cancel(_:signal:)``).
    func cancelJob(_ id: String, signal: JobSignal) async throws -> JobSnapshot
    func jobs(project: String, limit: Int) async throws -> [JobRecord]
    func queueDepth() async -> (queued: Int, running: Int)

    func status() async -> HostStatus
    /// The project cache's hits, misses and downloaded bytes, for `/metrics`; nil for a
    /// backend without a cache of its own.
    func cacheCounters() async -> CacheCounters?
    func readiness() async -> [String: Bool]
    /// The generation after each policy reload, for the audit log.
    func policyReloads() async -> AsyncStream<Int>
    /// Digests of the policies in force and the files that failed to load.
    func policySummary() async -> (digests: [String: String], errors: [String])
    func shutdown(grace: Duration) async
}

extension HostBackend {
    public func cacheCounters() async -> CacheCounters? { nil }

    /// A backend that can stop a job only one way (TERM, then KILL) refuses the other
    /// signals rather than send TERM in their place.
    public func cancelJob(_ id: String, signal: JobSignal) async throws -> JobSnapshot {
        guard signal == .term else {
            throw APIError.invalidArgument("signal", "cannot be \(signal.rawValue) here: this host only sends TERM")
        }
        return try await cancelJob(id)
    }
}

/// The real host: project calls go to ``CorralHost`` itself, job calls to its ``JobSystem``.
extension CorralHost: HostBackend {
    public func waitJob(_ id: String, timeout: Duration, since: Int, untilFinished: Bool) async throws -> JobSnapshot {
        try await jobs.wait(id, timeout: timeout, since: since, untilFinished: untilFinished)
    }

    public func jobSnapshot(_ id: String, since: Int) async throws -> JobSnapshot {
        try await jobs.snapshot(id, since: since)
    }

    public func cancelJob(_ id: String) async throws -> JobSnapshot { try await jobs.cancel(id) }

    public func cancelJob(_ id: String, signal: JobSignal) async throws -> JobSnapshot {
        try await jobs.cancel(id, signal: signal)
    }

    public func jobs(project: String, limit: Int) async throws -> [JobRecord] {
        try await jobs.list(project: project, limit: limit)
    }

    public func queueDepth() async -> (queued: Int, running: Int) { await jobs.depth }

    public func cacheCounters() async -> CacheCounters? { await cache.counters }

    public func policyReloads() -> AsyncStream<Int> { policies.reloads() }

    public func policySummary() -> (digests: [String: String], errors: [String]) {
        let status = policies.status
        return (status.digests, status.errors.map(\.description))
    }
}
