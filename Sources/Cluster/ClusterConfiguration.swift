import Foundation
import Host
import Sandbox

/// How the hosts of one Corral cluster find each other in Redis and how quickly they give up
/// on a silent peer.
public struct ClusterConfiguration: Sendable {
    public var redis: RedisConfiguration
    /// Every key starts with this, so several clusters (or test runs) can share one Redis.
    public var keyPrefix: String
    /// How long a project lease and a worker heartbeat last without renewal. A host that
    /// dies loses its projects this long after its last renewal; renewals happen every third
    /// of it.
    public var leaseTTL: Duration
    /// How long finished job records, their output and idempotency keys stay in Redis.
    public var retention: Duration
    /// Output kept per job in Redis; beyond it the count goes on but the bytes are dropped
    /// (the final result still carries the output's tail, the sandbox log all of it).
    public var outputCap: Int
    /// Jobs one worker takes from its stream at once; the rest wait in Redis, durably.
    public var maxInFlight: Int
    /// How long one blocking read waits before the reader re-checks its state.
    public var blockInterval: Duration
    /// Foreground jobs with a timeout up to this go to the short lane (as in ``JobLimits``).
    public var shortThresholdSeconds: Double

    public init(
        redis: RedisConfiguration, keyPrefix: String = "corral", leaseTTL: Duration = .seconds(15),
        retention: Duration = .seconds(86_400), outputCap: Int = 1 << 20, maxInFlight: Int = 256,
        blockInterval: Duration = .seconds(5), shortThresholdSeconds: Double = 300
    ) {
        self.redis = redis
        self.keyPrefix = keyPrefix
        self.leaseTTL = leaseTTL
        self.retention = retention
        self.outputCap = outputCap
        self.maxInFlight = maxInFlight
        self.blockInterval = blockInterval
        self.shortThresholdSeconds = shortThresholdSeconds
    }

    var keys: ClusterKeys { ClusterKeys(prefix: keyPrefix) }
    var leaseMilliseconds: String { String(leaseTTL.milliseconds) }
    var retentionMilliseconds: String { String(retention.milliseconds) }
}

/// The Redis keys of a cluster. The Lua scripts build the same names from the prefix, so
/// a change here is a change there (ClusterScripts.swift).
struct ClusterKeys: Sendable {
    let prefix: String

    /// String: the host that owns a project; expires unless renewed (the lease).
    func owner(_ project: String) -> String { "\(prefix):owner:\(project)" }
    /// Set: the projects a host holds leases for, so it can renew them in one call.
    func leases(_ host: String) -> String { "\(prefix):leases:\(host)" }
    /// String: present while the host is alive; expires unless renewed (the heartbeat).
    func heartbeat(_ host: String) -> String { "\(prefix):worker:\(host)" }
    /// Set: every host that ever registered and has not been cleaned up after its death.
    var workers: String { "\(prefix):workers" }
    /// Stream: the jobs routed to a host, read by its consumer group ``group``.
    func jobs(_ host: String) -> String { "\(prefix):jobs:\(host)" }
    /// Hash: one job's request, state machine fields and result.
    func job(_ id: String) -> String { "\(prefix):job:\(id)" }
    /// Stream: one job's events (state changes, output marks, the end), read with XREAD BLOCK.
    func events(_ id: String) -> String { "\(prefix):job:\(id):events" }
    /// String: one job's output, appended by its worker.
    func output(_ id: String) -> String { "\(prefix):job:\(id):out" }
    /// String: the job a submitter's idempotency key was first used for.
    /// Scoped by project too: the same key on two projects names two jobs. Each part is
    /// length-prefixed, so no submitter, project or key can forge another's key.
    func idempotency(_ submitter: String, project: String, _ key: String) -> String {
        "\(prefix):idem:\(submitter.utf8.count):\(submitter):\(project):\(key)"
    }
    /// Sorted set: the jobs a submitter has queued or running, for its cap.
    func active(_ submitter: String) -> String { "\(prefix):active:\(submitter)" }
    /// Sorted set: a project's recent job IDs by creation time.
    func projectJobs(_ project: String) -> String { "\(prefix):project:\(project):jobs" }
    /// Hash: a project's registration (`spec`), ownership `epoch` and `last` owner
    /// (``RedisProjectRegistry``).
    func project(_ id: String) -> String { "\(prefix):project:\(id)" }
    /// Set: every registered project.
    var projects: String { "\(prefix):projects" }
    /// Stream: pokes an API node's event reader when it must watch a new job.
    func wake(_ node: String) -> String { "\(prefix):wake:\(node)" }

    static let group = "workers"
}
