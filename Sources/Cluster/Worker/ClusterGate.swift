import Host
import Sandbox
import Synchronization

/// The moment a cluster job may start: the worker's JobSystem calls its runner only when
/// the job reaches a free slot, and the gate then moves the job from `queued` to `running`
/// in Redis. Only if that transition is won does the command start, so a job another host
/// took over, or one cancelled meanwhile, never runs here, and a job that did start is
/// known to have started before any process exists.
final class ClusterGate: Sendable {
    enum Outcome: Sendable { case won, lost }

    let redis: RedisClient
    let configuration: ClusterConfiguration
    let host: String
    let incarnation: String
    private let outcomes = Mutex<[String: Outcome]>([:])
    private let stopped = Atomic<Bool>(false)

    init(redis: RedisClient, configuration: ClusterConfiguration, host: String, incarnation: String) {
        self.redis = redis
        self.configuration = configuration
        self.host = host
        self.incarnation = incarnation
    }

    /// Wins the start of job `id` or throws. Waits out a Redis outage: starting without
    /// the record would risk a second run elsewhere.
    func enter(_ id: String) async throws {
        var delay: Duration = .milliseconds(50)
        while true {
            do {
                let won =
                    try await redis.eval(
                        ClusterScripts.start, keys: [],
                        arguments: [
                            configuration.keyPrefix, id, host, incarnation, ClusterRecords.timestamp(),
                            configuration.retentionMilliseconds,
                        ]
                    ).integer == 1
                outcomes.withLock { $0[id] = won ? .won : .lost }
                if won { return }
                throw ClusterError.claimLost(id)
            } catch ClusterError.redisUnavailable {
                if stopped.load(ordering: .relaxed) { throw ClusterError.closed }
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(1))
            }
        }
    }

    /// Whether the job's start was won or lost here; nil if it never reached the gate.
    func outcome(_ id: String) -> Outcome? { outcomes.withLock { $0[id] } }

    func forget(_ id: String) { _ = outcomes.withLock { $0.removeValue(forKey: id) } }

    /// After this no job starts here any more.
    func stop() { stopped.store(true, ordering: .relaxed) }
}

/// Wraps the host's real runner with the gate, for jobs that came from the cluster.
struct GatedRunner: JobRunner {
    let inner: any JobRunner
    let gate: ClusterGate

    func start(
        _ request: JobRequest, jobID: String, onOutput: @escaping @Sendable (Sandbox.OutputStream, [UInt8]) -> Void
    ) async throws -> any JobExecution {
        if request.submitter == ClusterWorker.submitter, let id = request.idempotencyKey {
            try await gate.enter(id)
        }
        return try await inner.start(request, jobID: jobID, onOutput: onOutput)
    }
}
