import Foundation
import Host
import Synchronization
import TestSupport

/// A clock tests move by hand.
final class TestClock: Sendable {
    private let current = Mutex(Date(timeIntervalSince1970: 1_800_000_000))
    var now: Date { current.withLock { $0 } }
    func advance(_ seconds: TimeInterval) { current.withLock { $0 = $0.addingTimeInterval(seconds) } }
    var function: @Sendable () -> Date { { self.now } }
}

/// A data directory, a directory of source archives, and caches opened on them.
final class CacheFixture: Sendable {
    let tmp: TemporaryDirectory
    let clock = TestClock()
    var data: String { tmp.path + "/data" }
    var sources: String { tmp.path + "/sources" }
    var blobs: String { tmp.path + "/blobs" }

    init() throws {
        tmp = try TemporaryDirectory(prefix: "corral-cache")
        try FileManager.default.createDirectory(atPath: sources, withIntermediateDirectories: true)
    }

    func configuration(
        ttl: Duration = .seconds(3600), diskBudget: Int64? = nil, snapshotInterval: Duration? = nil,
        primary: (any BlobStore)? = nil, extraction: ExtractionLimits = ExtractionLimits(),
        sourceAddresses: SourceAddressPolicy = CacheFixture.loopback
    ) -> CacheConfiguration {
        var stores = BlobStores(
            primary: primary ?? LocalBlobStore(directory: blobs), fileRoots: [sources],
            policy: TransferPolicy(
                connectTimeout: .seconds(2), stallTimeout: .seconds(2), attempts: 3, backoff: .milliseconds(20)))
        // The test servers listen on loopback, which sources may not reach by default.
        stores.sourceAddresses = sourceAddresses
        return CacheConfiguration(
            dataDirectory: data, stores: stores, ttl: ttl, diskBudget: diskBudget, snapshotInterval: snapshotInterval,
            extraction: extraction, clock: clock.function)
    }

    func open(
        ttl: Duration = .seconds(3600), diskBudget: Int64? = nil, snapshotInterval: Duration? = nil,
        primary: (any BlobStore)? = nil, sourceAddresses: SourceAddressPolicy = CacheFixture.loopback
    ) async throws -> ProjectCache {
        try await ProjectCache.open(
            configuration(
                ttl: ttl, diskBudget: diskBudget, snapshotInterval: snapshotInterval, primary: primary,
                sourceAddresses: sourceAddresses))
    }

    /// Sources may reach the test servers on 127.0.0.1, and nothing else that is private.
    static let loopback = SourceAddressPolicy(allowed: [.network(IPAddress("127.0.0.1")!, prefixLength: 32)])

    /// Writes an archive into the sources directory and returns its `file://` URL.
    func source(
        _ name: String, _ entries: [ArchiveFixture.Entry], format: ArchiveFixture.Format = .tarGz
    ) throws -> String {
        let path = "\(sources)/\(name)"
        try ArchiveFixture.write(entries, format: format, to: path)
        return "file://\(path)"
    }

    func sha256(ofFile path: String) -> String {
        SHA256.hash(Array(FileManager.default.contents(atPath: path) ?? Data())).hexString
    }

    /// Everything under the data directory except the SQLite index files.
    func dataContents() -> [String] {
        allPaths(data).filter { !$0.hasPrefix("index.sqlite") }
    }

    static let project: [ArchiveFixture.Entry] = [
        .dir("src"), .file("src/app.py", "print('v1')\n"), .file("README.md", "# demo\n"),
        .file("build.sh", "#!/bin/sh\nmake\n", mode: 0o755), .symlink("app", to: "src/app.py"),
    ]

    static let projectTree: [String: String] = [
        "src": "dir", "src/app.py": "file:print('v1')\n", "README.md": "file:# demo\n",
        "build.sh": "file:#!/bin/sh\nmake\n", "app": "link:src/app.py",
    ]
}

/// A primary store whose writes can be made to fail, to prove nothing is lost then.
final class FlakyStore: BlobStore, Sendable {
    let inner: LocalBlobStore
    let failPuts = Mutex(false)
    let puts = Mutex(0)

    init(directory: String) { inner = LocalBlobStore(directory: directory) }

    var location: String { inner.location }

    func get(_ key: String, to path: String, limit: Int64?, progress: ProgressHandler?) async throws(CacheError)
        -> BlobInfo
    {
        try await inner.get(key, to: path, limit: limit, progress: progress)
    }

    func put(_ key: String, from path: String) async throws(CacheError) -> BlobInfo {
        puts.withLock { $0 += 1 }
        if failPuts.withLock({ $0 }) { throw .httpStatus(503, "flaky://\(key)") }
        return try await inner.put(key, from: path)
    }

    func head(_ key: String) async throws(CacheError) -> BlobInfo? { try await inner.head(key) }

    func delete(_ key: String) async throws(CacheError) { try await inner.delete(key) }
}

/// A thread-safe counter for events reported from other threads.
final class Counter: Sendable {
    private let count = Mutex(0)
    func add() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}
