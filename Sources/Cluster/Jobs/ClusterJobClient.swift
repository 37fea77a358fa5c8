import Foundation
import Host
import Logging
import Sandbox
import Synchronization

/// The job system as an API node sees it when the jobs run on other hosts: the same calls
/// as ``JobSystem`` (submit, run, wait, snapshot, cancel, list), answered through Redis.
///
/// A submit records the job and queues it on the stream of its project's owner in one
/// atomic step (leasing the project to the least-loaded live worker if nobody owns it).
/// Waiting is event-driven: the node blocks in `XREAD` on the job's event stream and
/// resumes when the worker appends output or the result. The node keeps no state of its
/// own, so any node can answer for any job.
///
/// While Redis is unreachable, calls throw ``ClusterError/redisUnavailable(retryAfterSeconds:)``
/// (HTTP 503 with Retry-After); they work again as soon as Redis is back.
public final class ClusterJobClient: JobService {
    public let configuration: ClusterConfiguration
    /// This node's name in Redis (its wake stream); unique per process.
    public let node: String
    /// The project leases, to ask who owns a project.
    public let leases: ProjectLeases
    let redis: RedisClient
    private let reader: RedisClient
    private let watcher: EventWatcher
    private let keys: ClusterKeys
    /// How long a submit (and an API node's registry check before it) rides out a Redis outage.
    public let outageRetry: Duration
    private let sequence = Atomic<Int>(0)
    private let logger = Logger(label: "corral.cluster")

    /// How much longer a submit whose reply was lost waits for Redis to tell whether the
    /// job was recorded, after ``outageRetry`` has run out.
    static let unknownOutcomeWindow: Duration = .seconds(15)

    /// `outageRetry` is how long a submit keeps retrying through a Redis outage (with the
    /// same job ID, so a retry never queues the job twice) before it throws.
    public init(configuration: ClusterConfiguration, node: String? = nil, outageRetry: Duration = .seconds(2)) {
        self.configuration = configuration
        let node = node ?? "api-\(ProcessInfo.processInfo.hostName)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        self.node = node
        keys = configuration.keys
        redis = RedisClient(configuration.redis, name: "corral-api")
        reader = RedisClient(configuration.redis, name: "corral-api-events")
        watcher = EventWatcher(
            blocking: reader, command: redis, wakeKey: keys.wake(node), interval: configuration.blockInterval)
        leases = ProjectLeases(redis: redis, configuration: configuration)
        self.outageRetry = outageRetry
    }

    /// Ends every wait in progress and closes the connections.
    public func close() {
        watcher.close()
        reader.close()
        redis.close()
    }

    // MARK: - Submitting

    /// Queues a job on its project's owner and returns its record. A retried submit with
    /// the same idempotency key from the same submitter to the same project returns the
    /// first job. A submitter at its ``JobRequest/submitterCap`` is refused, cluster-wide.
    public func submit(_ request: JobRequest) async throws -> JobRecord {
        try SubmitRules.validate(request)
        let id = newID()
        let lane = request.lane(shortThresholdSeconds: configuration.shortThresholdSeconds)
        let now = Date()
        let arguments = [
            configuration.keyPrefix, id, request.project, try ClusterRecords.json(request), lane.rawValue,
            ClusterRecords.timestamp(now), configuration.leaseMilliseconds, configuration.retentionMilliseconds,
            request.idempotencyKey.map { keys.idempotency(request.submitter, project: request.project, $0) } ?? "",
            request.submitterCap == nil ? "" : keys.active(request.submitter), String(request.submitterCap ?? 0),
        ]
        // No live worker is usually a moment's gap (Redis just came back and the heartbeats
        // with it): wait for one as for Redis itself. Nothing was written meanwhile.
        let deadline = ContinuousClock.now + outageRetry
        let sent = SentFlag()
        let submit: @Sendable () async throws -> RedisReply = {
            try await self.redis.eval(ClusterScripts.submit, keys: [], arguments: arguments) { sent.set() }
        }
        var parts: [String] = []
        while true {
            let reply: RedisReply
            do {
                reply = try await throughOutage(deadline - .now, submit)
            } catch ClusterError.redisUnavailable(let after) where sent.isSet {
                // A submit reached Redis and its reply was lost: the job may be queued. An
                // "unavailable" now would be a lie the client acts on (a retry without an
                // idempotency key runs it twice), so wait longer for Redis to say which,
                // running the same script: it answers `existing` if the job was recorded.
                do {
                    reply = try await throughOutage(Self.unknownOutcomeWindow, submit)
                } catch ClusterError.redisUnavailable {
                    logger.error(
                        "a submitted job may have been queued while redis went away; its outcome is unknown",
                        metadata: ["job": "\(id)", "project": "\(request.project)"])
                    throw ClusterError.redisUnavailable(retryAfterSeconds: after)
                }
            }
            parts = (reply.array ?? []).compactMap(\.string)
            guard parts.first == "nohost", ContinuousClock.now < deadline else { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        switch parts.first {
        case "queued":
            return JobRecord(id: id, request: request, lane: lane, state: .queued, createdAt: now)
        case "existing" where parts.count > 1:
            return try await snapshot(parts[1]).record
        case "busy":
            // The submit script applies ``SubmitRules/admit(_:existing:active:)`` atomically with the queue.
            throw SubmitRules.busy(request)
        case "nohost":
            throw ClusterError.noLiveWorkers(retryAfterSeconds: RedisConnection.seconds(configuration.leaseTTL / 3))
        default:
            throw ClusterError.protocolViolation("submit returned \(parts)")
        }
    }

    /// Submits and waits up to `budget` for the result; if the budget runs out first the
    /// snapshot says `queued` or `running` and the job goes on.
    public func run(_ request: JobRequest, budget: Duration) async throws -> JobSnapshot {
        let start = ContinuousClock.now
        let record = try await submit(request)
        // A new job has nothing to read yet: wait for its end straight away and read once.
        do {
            _ = try await watcher.next(on: keys.events(record.id), after: .zero, kinds: ["final"], timeout: budget)
        } catch ClusterError.redisUnavailable {}
        return try await wait(record.id, timeout: budget - (ContinuousClock.now - start), untilFinished: true)
    }

    // MARK: - Waiting

    /// Long-poll: returns when the job has output after `since`, ends, or `timeout` passes.
    /// With `untilFinished`, only the end (or the timeout) returns. A Redis outage within
    /// the timeout is waited out; one that outlasts it throws.
    public func wait(_ id: String, timeout: Duration, since: Int = 0, untilFinished: Bool = false) async throws
        -> JobSnapshot
    {
        let deadline = ContinuousClock.now + timeout
        while true {
            do {
                let (snap, last) = try await read(id, since: since)
                let remaining = deadline - .now
                let changed = !untilFinished && snap.cursor > since
                if snap.record.state.isFinal || changed || remaining <= .zero { return snap }
                let kinds: Set<String> = untilFinished ? ["final"] : ["final", "output"]
                _ = try await watcher.next(on: keys.events(id), after: last, kinds: kinds, timeout: remaining)
            } catch ClusterError.redisUnavailable(let after) {
                let remaining = deadline - .now
                if remaining <= .zero { throw ClusterError.redisUnavailable(retryAfterSeconds: after) }
                // Waiting for Redis to come back, not for the job: the next read says how it went.
                try await Task.sleep(for: min(remaining, .milliseconds(200)))
            }
        }
    }

    /// The job as it is now, with output since `since`.
    public func snapshot(_ id: String, since: Int = 0) async throws -> JobSnapshot {
        try await read(id, since: since).0
    }

    /// Reads the job and the ID of its last event, in that order of truth: the event ID is
    /// read first, so any event after it is also newer than the snapshot.
    private func read(_ id: String, since: Int) async throws -> (JobSnapshot, StreamID) {
        let replies = try await redis.pipeline([
            ["XREVRANGE", keys.events(id), "+", "-", "COUNT", "1"], ["HGETALL", keys.job(id)],
            ["GETRANGE", keys.output(id), String(max(since, 0)), "-1"], ["STRLEN", keys.output(id)],
        ])
        for reply in replies { _ = try RedisClient.check(reply) }
        let last = replies[0].streamEntries.last.flatMap { StreamID($0.id) } ?? .zero
        let fields = replies[1].fields
        guard let record = try ClusterRecords.record(fields) else { throw JobError.notFound(id) }
        let snap = ClusterRecords.snapshot(
            record, fields: fields, stored: replies[2].string ?? "", storedBytes: replies[3].integer ?? 0,
            since: since)
        return (snap, last)
    }

    // MARK: - Cancelling and listing

    /// Stops a job: a queued one never starts, a running one is stopped by its worker, which
    /// sends `signal` to the job's processes first (KILL after the grace, as in
    /// ``JobSystem/cancel(_:signal:)``). Returns once it has ended (or after 30 s, still
    /// running, if its worker is gone).
    public func cancel(_ id: String, signal: JobSignal = .term) async throws -> JobSnapshot {
        let outcome = try await redis.eval(
            ClusterScripts.cancel, keys: [],
            arguments: [
                configuration.keyPrefix, id, ClusterRecords.timestamp(), configuration.retentionMilliseconds,
                signal.rawValue,
            ]
        ).string
        if outcome == "missing" { throw JobError.notFound(id) }
        return try await wait(id, timeout: .seconds(30), untilFinished: true)
    }

    /// Recent jobs of a project, newest first.
    public func list(project: String, limit: Int = 50) async throws -> [JobRecord] {
        let ids = try await redis.command(["ZREVRANGE", keys.projectJobs(project), "0", String(max(limit, 1) - 1)])
        let names = (ids.array ?? []).compactMap(\.string)
        guard !names.isEmpty else { return [] }
        let hashes = try await redis.pipeline(names.map { ["HGETALL", keys.job($0)] })
        return try hashes.compactMap { try ClusterRecords.record(RedisClient.check($0).fields) }
    }

    /// Jobs waiting and running across the cluster: every live worker's stream holds the
    /// jobs routed to it that have not ended; those it has taken are pending in its group.
    public func depth() async throws -> (queued: Int, running: Int) {
        let hosts = try await leases.liveWorkers()
        guard !hosts.isEmpty else { return (0, 0) }
        let replies = try await redis.pipeline(
            hosts.flatMap { [["XLEN", keys.jobs($0)], ["XPENDING", keys.jobs($0), ClusterKeys.group]] })
        var total = 0
        var taken = 0
        for pair in stride(from: 0, to: replies.count, by: 2) {
            total += replies[pair].integer ?? 0
            taken += replies[pair + 1].array?.first?.integer ?? 0
        }
        return (max(total - taken, 0), taken)
    }

    /// The worker host that owns a project now, or nil.
    public func owner(of project: String) async throws -> String? { try await leases.owner(of: project) }

    /// The project's owner, leasing the project to the least-loaded live worker first if
    /// nobody holds it: where a file call for the project must go. Throws
    /// ``ClusterError/noLiveWorkers(retryAfterSeconds:)`` when no worker is alive.
    public func route(_ project: String) async throws -> String {
        let reply = try await redis.eval(
            ClusterScripts.route, keys: [],
            arguments: [configuration.keyPrefix, project, configuration.leaseMilliseconds])
        guard let host = reply.string else {
            throw ClusterError.noLiveWorkers(retryAfterSeconds: RedisConnection.seconds(configuration.leaseTTL / 3))
        }
        return host
    }

    /// The address a live worker advertised (``ClusterWorker/init(configuration:host:address:runner:limits:journalPath:beforeRelease:)``),
    /// for forwarding calls to it; nil if it is not alive or advertised none.
    public func address(of host: String) async throws -> String? { try await leases.address(of: host) }

    /// Worker hosts whose heartbeat is current.
    public func liveWorkers() async throws -> [String] { try await leases.liveWorkers() }

    // MARK: - Helpers

    /// Time-ordered, unique across nodes: milliseconds, then a per-process sequence and
    /// random bits.
    private func newID() -> String {
        let ms = String(UInt64(Date().timeIntervalSince1970 * 1000), radix: 36)
        let n = String(sequence.add(1, ordering: .relaxed).newValue, radix: 36)
        return "c\(ms)-\(n)-\(String(UInt32.random(in: 0...UInt32.max), radix: 36))"
    }
}

/// Whether a Redis call was sent and then lost its reply, set from the connection's thread.
final class SentFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .relaxed) }
    var isSet: Bool { value.load(ordering: .relaxed) }
}

/// Runs `body`, retrying for up to `window` while Redis is unreachable; safe only for
/// calls that are idempotent.
public func throughOutage<T: Sendable>(_ window: Duration, _ body: @Sendable () async throws -> T) async throws -> T {
    let deadline = ContinuousClock.now + window
    while true {
        do {
            return try await body()
        } catch ClusterError.redisUnavailable(let after) {
            let remaining = deadline - .now
            if remaining <= .zero { throw ClusterError.redisUnavailable(retryAfterSeconds: after) }
            try await Task.sleep(for: min(remaining, .milliseconds(100)))
        }
    }
}
