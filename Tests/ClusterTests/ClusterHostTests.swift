import Cluster
import Foundation
import Host
import TestSupport
import Testing

/// `corral worker` as the Host module builds it: a real host (policies, cache, sandboxes)
/// whose jobs come through Redis, and whose projects are written back before hand-over.
@Suite(.serialized, .enabled(if: RedisServer.isAvailable, "needs /usr/bin/redis-server"))
struct ClusterHostTests {
    @Test func aWorkerHostRunsJobsFromRedisInItsSandboxesAndWritesBackBeforeLeaving() async throws {
        let server = try RedisServer()
        let data = try TemporaryDirectory()
        let cluster = ClusterConfiguration(
            redis: try RedisConfiguration(url: server.url), leaseTTL: .seconds(3), blockInterval: .seconds(1))
        let policies = data.path + "/policies"
        try FileManager.default.createDirectory(atPath: policies, withIntermediateDirectories: true)
        try "rootfs = \"minimal\"\n".write(toFile: policies + "/default.toml", atomically: true, encoding: .utf8)
        let (host, worker) = try await ClusterHost.openWorker(
            HostConfiguration(
                dataDirectory: data.path + "/var", rootfsDirectory: TestPaths.rootfsDirectory,
                policiesDirectory: policies, cgroups: TestCgroups.driver),
            cluster: cluster, host: "worker-1", address: "http://127.0.0.1:9")
        _ = try await host.upload(
            "demo", archive: try ArchiveFixture.tarGz(["a.txt": "one\n"]), policy: nil, limits: RequestedLimits(),
            setup: nil)
        try await worker.start()
        let client = ClusterJobClient(configuration: cluster)
        defer { client.close() }
        #expect(try await client.address(of: "worker-1") == "http://127.0.0.1:9")

        let r = try await client.run(
            JobRequest(project: "demo", command: "echo two >> a.txt; cat a.txt; id -u"), budget: .seconds(20))
        #expect(r.record.state == .completed, "\(r.record.error ?? "")")
        #expect(r.output == "one\ntwo\n1000\n")
        #expect(r.record.result?.stdout == "one\ntwo\n1000\n")
        #expect(try await client.owner(of: "demo") == "worker-1")
        #expect(try await host.host.cache.isDirty("demo"))

        await worker.shutdown(grace: .seconds(2))
        // The hook wrote the edit back before the lease went.
        #expect(try await !host.host.cache.isDirty("demo"))
        #expect(try await client.owner(of: "demo") == nil)
        await host.shutdown(grace: .seconds(1))
    }
}
