import Foundation
import Host

/// The cluster's project registry in Redis: a hash per project,
/// `<prefix>:project:<id>` with `spec` (the registration, JSON), `epoch` and `last` (the
/// last host that owned it), and the set `<prefix>:projects` of registered IDs.
///
/// `epoch` and `last` are kept by the lease scripts (``ClusterScripts``): whenever a
/// project's lease goes to a host other than `last`, `epoch` goes up by one, in the same
/// atomic step. A registration holds the source URL as given, so a signed URL's query is
/// in Redis: Redis is trusted with the cluster's state, like the blob store's credentials.
public struct RedisProjectRegistry: ProjectRegistry {
    let redis: RedisClient
    let keys: ClusterKeys

    public init(redis: RedisClient, configuration: ClusterConfiguration) {
        self.redis = redis
        keys = configuration.keys
    }

    public func save(_ id: String, _ registration: ProjectRegistration) async throws -> Int {
        let spec = String(decoding: try JSONEncoder().encode(registration), as: UTF8.self)
        // PERSIST: the hash of a project deleted earlier expires (see `remove`); registered
        // again, it is a project for good.
        let replies = try await redis.pipeline([
            ["HSET", keys.project(id), "spec", spec], ["PERSIST", keys.project(id)], ["SADD", keys.projects, id],
            ["HGET", keys.project(id), "epoch"],
        ])
        for reply in replies { _ = try RedisClient.check(reply) }
        return replies[3].string.flatMap(Int.init) ?? 0
    }

    /// The registration, the lease and the project's place in its holder's lease set go in
    /// one step. The ownership epoch is raised and kept for ``tombstoneMilliseconds``: a
    /// copy of the old project another worker has not dropped yet carries an older epoch, so
    /// it is never taken for the project registered again under the same id.
    public func remove(_ id: String) async throws {
        _ = try await redis.eval(
            ClusterScripts.forget, keys: [], arguments: [keys.prefix, id, String(Self.tombstoneMilliseconds)])
    }

    /// How long the epoch of a deleted project is remembered: far longer than any worker
    /// keeps a copy of a project it no longer holds (until its next lease renewal).
    static let tombstoneMilliseconds = 24 * 3_600_000

    public func load(_ id: String) async throws -> ProjectClaim? {
        let fields = try await redis.command(["HGETALL", keys.project(id)]).fields
        guard let spec = fields["spec"] else { return nil }
        let registration = try JSONDecoder().decode(ProjectRegistration.self, from: Data(spec.utf8))
        return ProjectClaim(registration: registration, epoch: fields["epoch"].flatMap(Int.init) ?? 0)
    }

    public func list() async throws -> [String] {
        (try await redis.command(["SMEMBERS", keys.projects]).array ?? []).compactMap(\.string).sorted()
    }
}
