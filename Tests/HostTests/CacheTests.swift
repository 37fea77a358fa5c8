import Foundation
import Host
import Synchronization
import TestSupport
import Testing

/// Registration, materialization (single flight, checksums, faults) and uploads.
@Suite struct CacheTests {
    let f: CacheFixture

    init() throws { f = try CacheFixture() }

    @Test func materializesExactlyWhatTheArchiveHolds() async throws {
        let cache = try await f.open()
        let url = try f.source("demo.tar.gz", CacheFixture.project)
        try await cache.register("demo", source: url)
        #expect(try await cache.status("demo").state == .cold)
        let ws = try await cache.materialize("demo")
        #expect(ws.path == f.data + "/workspaces/demo")
        #expect(describeTree(ws.path) == CacheFixture.projectTree)
        #expect(lstatMode(ws.path + "/build.sh") & 0o777 == 0o755)
        #expect(ws.sourceVersion == "sha256:" + f.sha256(ofFile: f.sources + "/demo.tar.gz"))
        let status = try await cache.status("demo")
        #expect(status.state == .ready)
        #expect(status.dirty == false)
        #expect(status.source == url)
        #expect(try await cache.isDirty("demo") == false)
        #expect(
            f.dataContents().filter { !$0.hasPrefix("workspaces") }.sorted() == [
                "downloads", "snapshots", "staging", "trash",
            ])
    }

    @Test(arguments: ArchiveFixture.Format.allCases)
    func materializesEveryFormat(_ format: ArchiveFixture.Format) async throws {
        let cache = try await f.open()
        try await cache.register(
            "p", source: try f.source("p.\(format.rawValue)", CacheFixture.project, format: format))
        #expect(describeTree(try await cache.materialize("p").path) == CacheFixture.projectTree)
    }

    @Test func fiftyConcurrentFirstCallsShareOneDownloadAndOneExtraction() async throws {
        let www = f.tmp.path + "/www"
        try FileManager.default.createDirectory(atPath: www, withIntermediateDirectories: true)
        try ArchiveFixture.write(CacheFixture.project, format: .tarZst, to: www + "/p.tar.zst")
        let server = try FaultHTTPServer(serving: URL(fileURLWithPath: www), rules: ["/p.tar.zst": ["delay": 0.5]])
        defer { server.stop() }
        let cache = try await f.open()
        try await cache.register("hot", source: server.url("p.tar.zst"))
        let extracting = Counter()
        let results = try await withThrowingTaskGroup(of: Workspace.self) { group in
            for _ in 0..<50 {
                group.addTask {
                    try await cache.materialize("hot") { event in
                        if event == .extracting { extracting.add() }
                    }
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.count == 50)
        #expect(Set(results.map(\.path)).count == 1)
        #expect(Set(results.map(\.sourceVersion)).count == 1)
        #expect(try server.counts()["/p.tar.zst"] == 1)
        // One extraction, announced once to each of the 50 waiters (all joined during the delay).
        #expect(extracting.value == 50)
        #expect(describeTree(results[0].path) == CacheFixture.projectTree)
        // Each of the 50 found it cold (a miss, whether it started the download or joined
        // it); the archive was fetched once; the next call finds it ready.
        let size = try #require(
            try FileManager.default.attributesOfItem(atPath: www + "/p.tar.zst")[.size] as? Int)
        #expect(await cache.counters == CacheCounters(hits: 0, misses: 50, downloadedBytes: Int64(size)))
        _ = try await cache.acquire("hot")
        #expect(await cache.counters == CacheCounters(hits: 1, misses: 50, downloadedBytes: Int64(size)))
    }

    @Test func wrongChecksumIsRejectedAndLeavesNothing() async throws {
        let cache = try await f.open()
        let url = try f.source("demo.tar.gz", CacheFixture.project)
        let actual = f.sha256(ofFile: f.sources + "/demo.tar.gz")
        let wrong = String(repeating: "0", count: 64)
        try await cache.register("demo", source: url, sha256: wrong)
        let before = f.dataContents()
        await #expect(throws: CacheError.checksumMismatch(expected: wrong, actual: actual)) {
            try await cache.materialize("demo")
        }
        #expect(f.dataContents() == before)
        #expect(try await cache.status("demo").state == .cold)
    }

    @Test func hostileArchiveLeavesNothingHalfExtracted() async throws {
        let cache = try await f.open()
        let entries: [ArchiveFixture.Entry] =
            (0..<20).map { .file("ok/\($0).txt", "fine") } + [
                .file("../../../escape.txt", "pwned")
            ]
        try await cache.register("evil", source: try f.source("evil.tar.gz", entries))
        let before = f.dataContents()
        await #expect(throws: CacheError.unsafeEntry(path: "../../../escape.txt", reason: "path contains '..'")) {
            try await cache.materialize("evil")
        }
        #expect(f.dataContents() == before)
        #expect(!FileManager.default.fileExists(atPath: f.tmp.path + "/escape.txt"))
        #expect(try await cache.status("evil").state == .cold)
    }

    @Test func serverFaultsAreRetriedOrReportedAndLeaveNothing() async throws {
        let www = f.tmp.path + "/www"
        try FileManager.default.createDirectory(atPath: www, withIntermediateDirectories: true)
        try ArchiveFixture.write(CacheFixture.project, format: .tarGz, to: www + "/p.tgz")
        let server = try FaultHTTPServer(
            serving: URL(fileURLWithPath: www), rules: ["/p.tgz": ["fail": 2], "/t.tgz": ["truncate": 100]])
        defer { server.stop() }
        let cache = try await f.open()
        try await cache.register("flaky", source: server.url("p.tgz"))
        #expect(describeTree(try await cache.materialize("flaky").path) == CacheFixture.projectTree)
        #expect(try server.counts()["/p.tgz"] == 3)

        try await cache.register("gone", source: server.url("missing.tgz"))
        let before = f.dataContents()
        await #expect(throws: CacheError.notFound(server.url("missing.tgz"))) { try await cache.materialize("gone") }
        #expect(f.dataContents() == before)
    }

    @Test func archiveOverTheDownloadLimitIsRefused() async throws {
        var config = f.configuration()
        config.maxDownloadBytes = 100
        let cache = try await ProjectCache.open(config)
        let url = try f.source("demo.tar.gz", CacheFixture.project)
        try await cache.register("big", source: url)
        let before = f.dataContents()
        await #expect(throws: CacheError.tooLarge("\(url) exceeds the download limit of 100 bytes")) {
            try await cache.materialize("big")
        }
        #expect(f.dataContents() == before)
    }

    // MARK: - Registration and upload

    @Test func uploadStoresTheArchiveAndRegistersIt() async throws {
        let cache = try await f.open()
        let path = f.tmp.path + "/upload.zip"
        try ArchiveFixture.write(CacheFixture.project, format: .zip, to: path)
        let bytes = Array(FileManager.default.contents(atPath: path)!)
        let sha = SHA256.hash(bytes).hexString
        let status = try await cache.upload("up", bytes: bytes)
        #expect(status.source == "blob:uploads/up/\(sha).archive")
        // A new project's upload is its materialization: warm at once, nothing downloaded.
        #expect(status.state == .ready)
        #expect(FileManager.default.contents(atPath: "\(f.blobs)/uploads/up/\(sha).archive") == Data(bytes))
        #expect(describeTree(try await cache.materialize("up").path) == CacheFixture.projectTree)
        #expect(await cache.counters == CacheCounters(hits: 1, misses: 0, downloadedBytes: 0))
        // Evicted, it comes back from the stored archive like any project.
        try await cache.evict("up")
        #expect(try await cache.status("up").state == .cold)
        #expect(describeTree(try await cache.materialize("up").path) == CacheFixture.projectTree)
        #expect(await cache.counters.misses == 1)
    }

    @Test func hostileUploadIsRefusedBeforeAnythingIsStored() async throws {
        let cache = try await f.open()
        let path = f.tmp.path + "/evil.tar"
        try ArchiveFixture.write([.device("sda", block: true)], format: .tar, to: path)
        await #expect(throws: CacheError.unsafeEntry(path: "sda", reason: "device node")) {
            try await cache.upload("evil", archive: path)
        }
        await #expect(throws: CacheError.unknownProject("evil")) { try await cache.status("evil") }
        #expect(allPaths(f.blobs).isEmpty)
        #expect(allPaths(f.data + "/staging").isEmpty)
    }

    @Test func registrationIsValidated() async throws {
        let cache = try await f.open()
        await #expect(throws: CacheError.invalidProject("../x")) { try await cache.register("../x", source: "blob:a") }
        await #expect(throws: CacheError.unsupportedSource("unknown scheme in \"ftp://h/a.tgz\"")) {
            try await cache.register("p", source: "ftp://h/a.tgz")
        }
        await #expect(throws: CacheError.unsupportedSource("no S3 credentials configured for s3://b")) {
            try await cache.register("p", source: "s3://b/a.tgz")
        }
        await #expect(throws: CacheError.unknownProject("nope")) { try await cache.materialize("nope") }
        try await cache.register("p", source: try f.source("p.tgz", CacheFixture.project))
        _ = try await cache.materialize("p")
        await #expect(throws: CacheError.busy("p is materialized; evict it before changing its source")) {
            try await cache.register("p", source: "blob:other.tgz")
        }
    }
}
