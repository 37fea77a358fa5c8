import Logging
import Synchronization

extension CorralHost {
    /// Opens a worker host of a cluster (`corral worker`): the same host as ``open(_:)``,
    /// whose job system takes its jobs from Redis through the returned ``ClusterWorker``.
    ///
    /// Call `worker.start()` to join, and on the way out `worker.shutdown(grace:)` before
    /// `host.shutdown(grace:)`: the worker writes each project it owns back to blob storage
    /// (when dirty) before it releases the project's lease, so the next owner
    /// materializes the latest changes. Its jobs are recorded in Redis, not in the local
    /// journal.
    public static func openWorker(
        _ configuration: HostConfiguration, cluster: ClusterConfiguration, host name: String, address: String? = nil
    ) async throws -> (host: CorralHost, worker: ClusterWorker) {
        let opened = OpenedHost()
        let logger = Logger(label: "corral.cluster")
        var configuration = configuration
        if configuration.registry == nil {
            configuration.registry = RedisProjectRegistry(
                redis: RedisClient(cluster.redis, name: "corral-registry-\(name)"), configuration: cluster)
        }
        let hooks = ClusterWorker.Hooks(
            prepare: { project in
                do {
                    try await opened.host?.adopt(project)
                } catch {
                    // The job still runs and fails with the reason (e.g. no such project).
                    logger.warning("cannot adopt \(project) from the registry: \(error)")
                }
            },
            leasesRenewed: { held, asOf in await opened.host?.forgetProjects(notIn: held, asOf: asOf) })
        var made: ClusterWorker?
        let host = try await open(configuration) { runner in
            let worker = try ClusterWorker(
                configuration: cluster, host: name, address: address, runner: runner, limits: configuration.jobLimits,
                hooks: hooks
            ) { project in
                guard let host = opened.host else { return }
                do {
                    // Only a dirty workspace is uploaded; a project never materialized here has nothing to write.
                    _ = try await host.cache.snapshot(project)
                } catch CacheError.unknownProject {
                } catch {
                    logger.error("write-back of \(project) before hand-over failed: \(error)")
                }
            }
            made = worker
            return worker.jobs
        }
        opened.set(host)
        guard let made else { throw ClusterError.invalidConfiguration("the worker was not built") }
        return (host, made)
    }
}

/// The host, known once it is built, for the worker's write-back hook built before it.
private final class OpenedHost: Sendable {
    private let value = Mutex<CorralHost?>(nil)
    var host: CorralHost? { value.withLock { $0 } }
    func set(_ host: CorralHost) { value.withLock { $0 = host } }
}
