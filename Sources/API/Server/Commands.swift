import Foundation
import Host
import Synchronization

/// The one way the API starts a command, whichever endpoint or tool asked: it is audited
/// when accepted (or refused) and again when it ends, and its outcome is counted.
struct Commands: Sendable {
    let backend: any HostBackend
    let jobs: any JobService
    let audit: AuditLog?
    let metrics: APIMetrics
    private let watched = WatchSet()
    private let timeouts = TimeoutCache()

    init(backend: any HostBackend, jobs: any JobService, audit: AuditLog?, metrics: APIMetrics) {
        self.backend = backend
        self.jobs = jobs
        self.audit = audit
        self.metrics = metrics
    }

    /// Queues `request` and returns at once.
    func launch(_ request: JobRequest, via: String) async throws -> JobRecord {
        let record: JobRecord
        do {
            record = try await jobs.submit(request)
        } catch {
            audit?.refused(request, via: via, error: APIError.from(error))
            throw error
        }
        // A retried idempotent submit returns the first job, which is already watched.
        if watched.insert(record.id) {
            audit?.submitted(record, via: via)
            watch(record.id)
        }
        return record
    }

    /// Queues `request` and waits up to `budget` for it to end.
    func run(_ request: JobRequest, budget: Duration, via: String) async throws -> JobSnapshot {
        let record = try await launch(request, via: via)
        return try await jobs.wait(record.id, timeout: budget, since: 0, untilFinished: true)
    }

    /// The timeout a request that names none gets: the project's effective limit (its
    /// policy's `default_s` unless the project asked for another), looked up once a minute.
    func defaultTimeout(project: String) async throws -> Double {
        if let cached = timeouts.get(project) { return cached }
        let info = try await backend.project(project)
        let seconds = info.limits.timeoutSeconds.map(Double.init) ?? 120
        timeouts.set(project, seconds)
        return seconds
    }

    private func watch(_ id: String) {
        Task { [jobs, audit, metrics, watched] in
            defer { watched.remove(id) }
            // Far past the end of the output: the watcher never copies output it ignores.
            let cursor = Int.max / 2
            while true {
                guard
                    let snapshot = try? await jobs.wait(
                        id, timeout: .seconds(3600), since: cursor, untilFinished: true)
                else { return }
                if snapshot.record.state.isFinal {
                    audit?.finished(snapshot.record)
                    metrics.job(snapshot.record)
                    return
                }
            }
        }
    }
}

/// Job ids with a watcher, so a job is audited once however often it is resubmitted.
final class WatchSet: Sendable {
    private let ids = Mutex<Set<String>>([])
    func insert(_ id: String) -> Bool { ids.withLock { $0.insert(id).inserted } }
    func remove(_ id: String) { _ = ids.withLock { $0.remove(id) } }
}

/// Per-project default timeouts, kept a minute (a policy edit shows within that).
final class TimeoutCache: Sendable {
    private let entries = Mutex<[String: (Double, ContinuousClock.Instant)]>([:])

    func get(_ project: String) -> Double? {
        entries.withLock { entries in
            guard let (value, at) = entries[project], ContinuousClock.now - at < .seconds(60) else { return nil }
            return value
        }
    }

    func set(_ project: String, _ value: Double) {
        entries.withLock { entries in
            if entries.count > 10_000 { entries.removeAll() }
            entries[project] = (value, .now)
        }
    }
}
