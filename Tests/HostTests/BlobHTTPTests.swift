import Foundation
import Glibc
import Host
import Synchronization
import TestSupport
import Testing

/// HTTP downloads against a real, misbehaving server on loopback: every fault ends in a
/// clear error or a successful retry, and a failed download leaves no file behind.
@Suite struct BlobHTTPTests {
    let tmp: TemporaryDirectory
    let payload: [UInt8]
    let sha: String
    let fast = TransferPolicy(
        connectTimeout: .seconds(2), stallTimeout: .seconds(1), attempts: 3, backoff: .milliseconds(20))

    init() throws {
        tmp = try TemporaryDirectory(prefix: "corral-blob-http")
        try FileManager.default.createDirectory(atPath: tmp.path + "/www", withIntermediateDirectories: true)
        payload = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ ($0 >> 9)) }
        sha = SHA256.hash(payload).hexString
        try Data(payload).write(to: URL(fileURLWithPath: tmp.path + "/www/blob.bin"))
    }

    func server(_ rules: [String: [String: any Sendable]] = [:]) throws -> FaultHTTPServer {
        try FaultHTTPServer(serving: URL(fileURLWithPath: tmp.path + "/www"), rules: rules)
    }

    /// The store under test; the server is on loopback, so the address check must allow it.
    func http(_ policy: TransferPolicy? = nil) -> HTTPBlobStore {
        HTTPBlobStore(policy: policy ?? fast, sourceAddresses: CacheFixture.loopback)
    }

    var target: String { tmp.path + "/download.part" }

    func downloaded() -> [UInt8] { Array(FileManager.default.contents(atPath: target) ?? Data()) }

    func get(_ server: FaultHTTPServer, policy: TransferPolicy? = nil, limit: Int64? = nil) async throws(CacheError)
        -> BlobInfo
    {
        try await http(policy).get(
            server.url("blob.bin"), to: target, limit: limit, progress: nil)
    }

    @Test func downloadsWithChecksumETagAndProgress() async throws {
        let s = try server()
        defer { s.stop() }
        let reports = Mutex<[TransferProgress]>([])
        let info = try await http().get(s.url("blob.bin"), to: target, limit: nil) { p in
            reports.withLock { $0.append(p) }
        }
        #expect(info.size == 300_000)
        #expect(info.sha256 == sha)
        #expect(info.etag == "\"\(sha.prefix(16))\"")
        #expect(downloaded() == payload)
        let last = try #require(reports.withLock { $0.last })
        #expect(last.bytes == 300_000)
        #expect(last.total == 300_000)
        #expect(last.bytesPerSecond > 0)
    }

    @Test func missingBlobIsNotFoundWithoutRetry() async throws {
        let s = try server()
        defer { s.stop() }
        await #expect(throws: CacheError.notFound(s.url("absent.tgz"))) {
            try await http().get(s.url("absent.tgz"), to: target, limit: nil, progress: nil)
        }
        #expect(try s.counts()["/absent.tgz"] == 1)
        #expect(!FileManager.default.fileExists(atPath: target))
    }

    @Test func serverErrorsAreRetriedUntilSuccess() async throws {
        let s = try server(["/blob.bin": ["fail": 2]])
        defer { s.stop() }
        let info = try await get(s)
        #expect(info.sha256 == sha)
        #expect(try s.counts()["/blob.bin"] == 3)
    }

    @Test func persistentServerErrorFailsAfterEveryAttempt() async throws {
        let s = try server(["/blob.bin": ["status": 503]])
        defer { s.stop() }
        await #expect(throws: CacheError.httpStatus(503, s.url("blob.bin"))) { try await get(s) }
        #expect(try s.counts()["/blob.bin"] == 3)
        #expect(!FileManager.default.fileExists(atPath: target))
    }

    @Test func forbiddenIsNotRetried() async throws {
        let s = try server(["/blob.bin": ["status": 403]])
        defer { s.stop() }
        await #expect(throws: CacheError.httpStatus(403, s.url("blob.bin"))) { try await get(s) }
        #expect(try s.counts()["/blob.bin"] == 1)
    }

    @Test func stalledConnectionTimesOut() async throws {
        let s = try server(["/blob.bin": ["stall": 30, "stall_after": 1000]])
        defer { s.stop() }
        let policy = TransferPolicy(stallTimeout: .seconds(1), attempts: 2, backoff: .milliseconds(10))
        let start = ContinuousClock.now
        do {
            _ = try await get(s, policy: policy)
            Issue.record("a stalled transfer succeeded")
        } catch {
            guard case .timeout = error else { throw error }
        }
        #expect(ContinuousClock.now - start < .seconds(10))
        #expect(try s.counts()["/blob.bin"] == 2)
        #expect(!FileManager.default.fileExists(atPath: target))
    }

    /// A server that sends a few bytes a second never stalls; the rate floor abandons it, each
    /// attempt within about one window, and the transfer's thread is given back.
    @Test func aTrickleIsAbandonedByTheRateFloorAndItsThreadReleased() async throws {
        let s = try server(["/blob.bin": ["trickle": 4, "trickle_after": 1000]])
        defer { s.stop() }
        let threads = Self.threadCount()
        // The attempt deadline only bounds this test if the floor fails to act.
        let policy = TransferPolicy(
            stallTimeout: .seconds(1), attemptTimeout: .seconds(10), attempts: 2, backoff: .milliseconds(10))
        let start = ContinuousClock.now
        do {
            _ = try await get(s, policy: policy)
            Issue.record("a trickling transfer succeeded")
        } catch {
            guard case .timeout(let message) = error else { throw error }
            #expect(message.hasSuffix("slower than 1024 bytes a second for 1.0 seconds"), "\(message)")
        }
        // Two attempts of about a window each (plus the first 1000 bytes and a backoff).
        let took = ContinuousClock.now - start
        #expect(took < .seconds(8), "\(took)")
        #expect(try s.counts()["/blob.bin"] == 2)
        #expect(!FileManager.default.fileExists(atPath: target))
        #expect(waitUntil(seconds: 5) { Self.threadCount() <= threads }, "threads \(threads) → \(Self.threadCount())")
        // The floor can be lowered to accept a slow link.
        let slow = try server(["/blob.bin": ["trickle": 1000, "trickle_after": 298_000]])
        defer { slow.stop() }
        let patient = TransferPolicy(stallTimeout: .seconds(1), attempts: 1, minimumBytesPerSecond: 500)
        #expect(try await get(slow, policy: patient).sha256 == sha)
    }

    /// Bytes past the announced Content-Length are not the blob: the download is exactly the
    /// announced bytes, its checksum holds, and the cap still applies.
    @Test func bytesBeyondTheContentLengthAreNotKept() async throws {
        let s = try server(["/blob.bin": ["extra": 100_000]])
        defer { s.stop() }
        let info = try await get(s)
        #expect(info.sha256 == sha)
        #expect(downloaded() == payload)
        do {
            _ = try await get(s, limit: Int64(payload.count - 1))
            Issue.record("a blob over the limit was kept")
        } catch {
            guard case .tooLarge = error else { throw error }
        }
    }

    static func threadCount() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? -1
    }

    @Test func stallOnceThenResumes() async throws {
        let s = try server(["/blob.bin": ["stall": 30, "stall_after": 1000, "stall_times": 1]])
        defer { s.stop() }
        let info = try await get(s)
        #expect(info.sha256 == sha)
        #expect(downloaded() == payload)
        #expect(try s.ranges("/blob.bin") == ["", "bytes=1000-"])
    }

    @Test func truncatedBodyIsResumedWithRange() async throws {
        let s = try server(["/blob.bin": ["truncate": 100_000]])
        defer { s.stop() }
        let info = try await get(s)
        #expect(info.sha256 == sha)
        #expect(info.size == 300_000)
        #expect(downloaded() == payload)
        #expect(try s.ranges("/blob.bin") == ["", "bytes=100000-"])
    }

    @Test func truncatedBodyRestartsWhenTheServerIgnoresRanges() async throws {
        let s = try server(["/blob.bin": ["truncate": 100_000, "noranges": true]])
        defer { s.stop() }
        let info = try await get(s)
        #expect(info.sha256 == sha)
        #expect(downloaded() == payload)
        #expect(try s.ranges("/blob.bin") == ["", "bytes=100000-"])
    }

    @Test func weakETagIsNeverResumed() async throws {
        let s = try server(["/blob.bin": ["truncate": 100_000, "weak": true]])
        defer { s.stop() }
        let info = try await get(s)
        #expect(info.sha256 == sha)
        #expect(try s.ranges("/blob.bin") == ["", ""])
    }

    @Test func bodyOverTheSizeLimitIsRefused() async throws {
        let s = try server()
        defer { s.stop() }
        await #expect(throws: CacheError.tooLarge("\(s.url("blob.bin")) exceeds the download limit of 1000 bytes")) {
            try await get(s, limit: 1000)
        }
        #expect(try s.counts()["/blob.bin"] == 1)
        #expect(!FileManager.default.fileExists(atPath: target))
    }

    @Test func redirectToAHostFileIsRefused() async throws {
        let s = try server(["/blob.bin": ["redirect": "file:///etc/passwd"]])
        defer { s.stop() }
        do {
            _ = try await get(s)
            Issue.record("followed a redirect to file://")
        } catch {
            guard case .unsupportedSource = error else { throw error }
        }
        #expect(!FileManager.default.fileExists(atPath: target))
    }

    @Test func refusedConnectionFailsAfterRetries() async throws {
        let s = try server()
        let url = s.url("blob.bin")
        s.stop()
        do {
            _ = try await http().get(url, to: target, limit: nil, progress: nil)
            Issue.record("downloaded from a stopped server")
        } catch {
            guard case .transport(let message) = error else { throw error }
            #expect(message.hasPrefix(url))
        }
    }

    @Test func cancellingTheCallerAbortsTheTransfer() async throws {
        let s = try server(["/blob.bin": ["stall": 30, "stall_after": 1000]])
        defer { s.stop() }
        let policy = TransferPolicy(stallTimeout: .seconds(30), attempts: 1)
        let store = http(policy)
        let url = s.url("blob.bin")
        let path = target
        let task = Task { () async throws(CacheError) -> BlobInfo in
            try await store.get(url, to: path, limit: nil, progress: nil)
        }
        try await Task.sleep(for: .milliseconds(500))
        let start = ContinuousClock.now
        task.cancel()
        await #expect(throws: CacheError.cancelled) { try await task.value }
        #expect(ContinuousClock.now - start < .seconds(3))
        #expect(!FileManager.default.fileExists(atPath: target))
    }

    // MARK: - Local store

    @Test func localStoreRoundTripsAndRefusesEscapingKeys() async throws {
        let store = LocalBlobStore(directory: tmp.path + "/blobs")
        let put = try await store.put("uploads/p/a.tgz", from: tmp.path + "/www/blob.bin")
        #expect(put.sha256 == sha)
        #expect(try await store.head("uploads/p/a.tgz")?.size == 300_000)
        let got = try await store.get("uploads/p/a.tgz", to: target, limit: nil, progress: nil)
        #expect(got.sha256 == sha)
        #expect(downloaded() == payload)
        try await store.delete("uploads/p/a.tgz")
        #expect(try await store.head("uploads/p/a.tgz") == nil)
        await #expect(throws: CacheError.notFound("file://\(tmp.path)/blobs/uploads/p/a.tgz")) {
            try await store.get("uploads/p/a.tgz", to: target, limit: nil, progress: nil)
        }
        await #expect(throws: CacheError.unsupportedSource("invalid blob key \"../../etc/passwd\"")) {
            try await store.get("../../etc/passwd", to: target, limit: nil, progress: nil)
        }
    }

    @Test func fileSourcesOutsideTheAllowedRootsAreRefused() throws {
        let stores = BlobStores(primary: LocalBlobStore(directory: tmp.path + "/blobs"), fileRoots: [tmp.path + "/www"])
        #expect(throws: CacheError.unsupportedSource("/etc/shadow is outside the allowed file roots")) {
            try stores.resolve(ProjectSource(parsing: "file:///etc/shadow"))
        }
        #expect(throws: CacheError.unsupportedSource("invalid blob key \"\(tmp.path.dropFirst())/www/../x\"")) {
            try ProjectSource(parsing: "file://\(tmp.path)/www/../x")
        }
        let (_, key) = try stores.resolve(ProjectSource(parsing: "file://\(tmp.path)/www/blob.bin"))
        #expect(key == "blob.bin")
    }
}
