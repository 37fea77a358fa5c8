/// Which worker host a project lives on: a lease in Redis (`<prefix>:owner:<project>`)
/// that its holder renews and that lapses when the holder stops renewing.
///
/// A lease is taken with `SET NX PX`, renewed only while it still names its holder (a Lua
/// compare-and-extend), and released by compare-and-delete, so a host that was paused past
/// its lease can never extend or delete the lease its successor holds.
public struct ProjectLeases: Sendable {
    let redis: RedisClient
    let configuration: ClusterConfiguration

    public init(redis: RedisClient, configuration: ClusterConfiguration) {
        self.redis = redis
        self.configuration = configuration
    }

    private var prefix: String { configuration.keyPrefix }

    /// Takes the project's lease for `host`; true if `host` holds it now.
    public func acquire(_ project: String, for host: String) async throws -> Bool {
        try await redis.eval(
            ClusterScripts.acquire, keys: [],
            arguments: [prefix, host, project, configuration.leaseMilliseconds]
        ).integer == 1
    }

    /// Renews `host`'s heartbeat and every lease it still holds, in one step; returns the
    /// projects it holds.
    @discardableResult
    public func renew(for host: String, heartbeat: String = "alive") async throws -> [String] {
        let reply = try await redis.eval(
            ClusterScripts.renew, keys: [], arguments: [prefix, host, configuration.leaseMilliseconds, heartbeat])
        return (reply.array ?? []).compactMap(\.string).sorted()
    }

    /// Gives the lease up if `host` still holds it; true if it did.
    @discardableResult
    public func release(_ project: String, from host: String) async throws -> Bool {
        try await redis.eval(ClusterScripts.release, keys: [], arguments: [prefix, host, project]).integer == 1
    }

    /// The host holding the project's lease, or nil when nobody does.
    public func owner(of project: String) async throws -> String? {
        try await redis.command(["GET", configuration.keys.owner(project)]).string
    }

    /// The projects `host` holds leases for (as last renewed).
    public func projects(of host: String) async throws -> [String] {
        let members = try await redis.command(["SMEMBERS", configuration.keys.leases(host)])
        return (members.array ?? []).compactMap(\.string).sorted()
    }

    /// The address a live host advertises in its heartbeat (`incarnation address`), if any.
    public func address(of host: String) async throws -> String? {
        let beat = try await redis.command(["GET", configuration.keys.heartbeat(host)]).string
        return beat?.split(separator: " ", maxSplits: 1).dropFirst().first.map(String.init)
    }

    /// Registered hosts whose heartbeat is current.
    public func liveWorkers() async throws -> [String] {
        let keys = configuration.keys
        let hosts = (try await redis.command(["SMEMBERS", keys.workers]).array ?? []).compactMap(\.string).sorted()
        guard !hosts.isEmpty else { return [] }
        let alive = try await redis.pipeline(hosts.map { ["EXISTS", keys.heartbeat($0)] })
        return zip(hosts, alive).filter { $0.1.integer == 1 }.map(\.0)
    }

    /// Registered hosts whose heartbeat has lapsed.
    func deadWorkers() async throws -> [String] {
        let keys = configuration.keys
        let hosts = (try await redis.command(["SMEMBERS", keys.workers]).array ?? []).compactMap(\.string).sorted()
        guard !hosts.isEmpty else { return [] }
        let alive = try await redis.pipeline(hosts.map { ["EXISTS", keys.heartbeat($0)] })
        return zip(hosts, alive).filter { $0.1.integer == 0 }.map(\.0)
    }
}
