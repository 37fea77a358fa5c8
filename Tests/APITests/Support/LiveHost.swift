import API
import Foundation
import Host
import HummingbirdTesting
import Sandbox
import TestSupport

/// A real host over a temporary directory, with the shipped default policy switched to the
/// minimal rootfs, and the API in front of it on a real socket.
enum LiveHost {
    static var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
    }

    static var rootfs: String {
        ProcessInfo.processInfo.environment["CORRAL_ROOTFS_DIR"] ?? repository.appendingPathComponent("rootfs/out").path
    }

    /// Whether the live tests can run here: root, and a built minimal rootfs.
    static var available: Bool {
        getuid() == 0 && FileManager.default.fileExists(atPath: rootfs + "/minimal/.corral-rootfs")
    }

    static func open(_ data: TemporaryDirectory, jobLimits: JobLimits = JobLimits()) async throws -> CorralHost {
        let policies = data.path + "/policies"
        try FileManager.default.createDirectory(atPath: policies, withIntermediateDirectories: true)
        let shipped = try String(
            contentsOf: repository.appendingPathComponent("policies/default.toml"), encoding: .utf8)
        // Whatever image the shipped policy names, tests use the small one.
        let minimal = shipped.split(separator: "\n", omittingEmptySubsequences: false).map {
            $0.hasPrefix("rootfs = ") ? "rootfs = \"minimal\"" : String($0)
        }.joined(separator: "\n")
        try minimal.write(toFile: policies + "/default.toml", atomically: true, encoding: .utf8)
        var configuration = HostConfiguration(
            dataDirectory: data.path + "/var", rootfsDirectory: rootfs, policiesDirectory: policies,
            jobLimits: jobLimits, cgroups: TestCgroups.driver)
        // No spare filesystems: their refill runs mkfs in the background, a child process
        // the footprint checks would count at a random moment. CacheQuotaTests test them.
        configuration.spareVolumes = 0
        return try await CorralHost.open(configuration)
    }

    /// Writes policy files beside the host's default and loads them now, without waiting
    /// for the watcher.
    static func writePolicies(_ files: [String: String], to host: CorralHost) async throws {
        let policies = await host.policies
        for (name, text) in files {
            try text.write(toFile: policies.directory + "/\(name).toml", atomically: true, encoding: .utf8)
        }
        policies.reload()
    }

    /// Whether the host holds anything of project `id`: a registration (as `token` sees
    /// it) or an uploaded archive.
    static func holds(
        _ id: String, on host: CorralHost, _ client: any TestClientProtocol, token: String? = nil
    ) async throws -> Bool {
        let uploads = await host.configuration.dataDirectory + "/cache/blobs/uploads/\(id)"
        let info = try await client.call(.get, "/v1/projects/\(id)", token: token)
        return info.status != .notFound || FileManager.default.fileExists(atPath: uploads)
    }

    /// A tar.gz of `files`, made by bsdtar.
    static func archive(_ files: [String: String]) throws -> [UInt8] {
        try ArchiveFixture.tarGz(files)
    }

    static let demo: [String: String] = [
        "hello.py": "print('hello from python')\n", "hello.sh": "echo hello from sh\n",
        "src/app.js": "console.log('needle in js')\n", "notes.txt": "a needle here\nnothing\nNEEDLE again\n",
    ]

    /// Opens a host, uploads `demo` as project `demo`, serves the API over a real socket
    /// and runs `body`; the host is shut down whatever happens.
    static func run(
        _ configuration: APIConfiguration = APIConfiguration(port: 0), files: (any FileToolBackend)? = nil,
        realFiles: Bool = false, jobLimits: JobLimits = JobLimits(),
        _ body: @Sendable (any TestClientProtocol, CorralHost) async throws -> Void
    ) async throws {
        let data = try TemporaryDirectory()
        let host = try await open(data, jobLimits: jobLimits)
        do {
            _ = try await host.upload("demo", archive: try archive(demo))
            var configuration = configuration
            configuration.dataDirectory = data.path + "/var"
            let app = try buildApplication(
                configuration, host: host, jobs: host.jobService, files: realFiles ? HostFileTools(host: host) : files,
                sessions: host.sessionService)
            try await app.test(.live) { client in try await body(client, host) }
        } catch {
            await host.shutdown(grace: .seconds(1))
            throw error
        }
        await host.shutdown(grace: .seconds(1))
    }
}
