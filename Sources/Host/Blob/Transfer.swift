import Foundation
import Sandbox
import Synchronization

/// How patient a transfer is: timeouts, retries and backoff.
public struct TransferPolicy: Sendable, Equatable {
    /// Time allowed to establish a connection.
    public var connectTimeout: Duration
    /// A transfer that moves no byte for this long is abandoned (then retried).
    public var stallTimeout: Duration
    /// Bytes a second a transfer must keep up, measured over windows of ``stallTimeout``
    /// from its first byte: a server that trickles a byte a second never stalls, yet would
    /// hold a transfer thread for as long as it likes. Slower is abandoned like a stall.
    public var minimumBytesPerSecond: Int64
    /// Deadline for one attempt, or nil for none (large archives on slow links).
    public var attemptTimeout: Duration?
    /// Total attempts, including the first (1 disables retries).
    public var attempts: Int
    /// First backoff; doubled after each failed attempt, capped at ``maxBackoff``.
    public var backoff: Duration
    public var maxBackoff: Duration

    public init(
        connectTimeout: Duration = .seconds(10), stallTimeout: Duration = .seconds(30),
        attemptTimeout: Duration? = nil, attempts: Int = 4, backoff: Duration = .milliseconds(500),
        maxBackoff: Duration = .seconds(8), minimumBytesPerSecond: Int64 = 1024
    ) {
        self.connectTimeout = connectTimeout
        self.stallTimeout = stallTimeout
        self.minimumBytesPerSecond = max(0, minimumBytesPerSecond)
        self.attemptTimeout = attemptTimeout
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.maxBackoff = maxBackoff
    }

    /// The pause before attempt `attempt + 1`, with ±25 % jitter so many hosts retrying the
    /// same failing endpoint do not stay in lockstep.
    func delay(after attempt: Int) -> Duration {
        var d = backoff
        for _ in 1..<max(1, attempt) where d < maxBackoff { d = d * 2 }
        d = min(d, maxBackoff)
        return d * Double.random(in: 0.75...1.25)
    }
}

/// Where a transfer is: bytes so far, the total when known, and the current rate.
public struct TransferProgress: Sendable, Equatable {
    public var bytes: Int64
    public var total: Int64?
    public var bytesPerSecond: Double

    public init(bytes: Int64, total: Int64?, bytesPerSecond: Double) {
        self.bytes = bytes
        self.total = total
        self.bytesPerSecond = bytesPerSecond
    }
}

/// Receives progress reports; called from the transfer's own thread, so it must be cheap.
public typealias ProgressHandler = @Sendable (TransferProgress) -> Void

/// What a store knows about one blob.
public struct BlobInfo: Sendable, Equatable {
    /// Size in bytes.
    public var size: Int64
    /// The server's ETag, quotes included, when it sent one.
    public var etag: String?
    /// Hex SHA-256 of the bytes, when they passed through this host.
    public var sha256: String?

    public init(size: Int64, etag: String? = nil, sha256: String? = nil) {
        self.size = size
        self.etag = etag
        self.sha256 = sha256
    }

    /// The version recorded for a project: the checksum when known (it names the bytes
    /// exactly), else the ETag.
    public var version: String {
        if let sha256 { return "sha256:\(sha256)" }
        return etag.map { "etag:\($0)" } ?? "size:\(size)"
    }
}

/// A cancellation flag shared between an async caller and a transfer thread.
final class CancelFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    func cancel() { flag.store(true, ordering: .relaxed) }
    var isCancelled: Bool { flag.load(ordering: .relaxed) }
}

/// Runs the cache's and the blob stores' blocking work on a pool of its own, never on
/// Swift's cooperative pool.
///
/// libcurl's `curl_easy_perform`, libarchive and big file copies block for seconds; parked
/// on the cooperative pool (2 threads on these machines) they would stall every other task.
/// Their pool is not the sandboxes' (``BlockingExecutor/shared``): a burst of slow
/// downloads must never hold up the start of a job.
enum BlockingThread {
    static let pool = BlockingExecutor(maxThreads: 32, warmThreads: 1)

    static func run<T: Sendable, E: Error>(
        _ name: String, _ body: @escaping @Sendable () throws(E) -> T
    ) async throws(E) -> T {
        try await pool.run(name, body)
    }

    /// Like ``run(_:_:)`` but hands `body` a flag that flips when the calling task is cancelled.
    static func cancellable<T: Sendable>(
        _ name: String, _ body: @escaping @Sendable (CancelFlag) throws(CacheError) -> T
    ) async throws(CacheError) -> T {
        let flag = CancelFlag()
        let result: Result<T, CacheError> = await withTaskCancellationHandler {
            do throws(CacheError) {
                return .success(try await run(name) { () throws(CacheError) -> T in try body(flag) })
            } catch {
                return .failure(error)
            }
        } onCancel: {
            flag.cancel()
        }
        return try result.get()
    }
}
