import CHiredis
import Foundation
import Glibc
import Host
import Logging
import Sandbox
import Synchronization

/// One hiredis connection, driven by a thread of its own.
///
/// hiredis's synchronous API is simple and fast but blocks: parked on Swift's cooperative
/// pool (two threads on these machines) a slow Redis or an `XREAD BLOCK` would stall every
/// task. So callers enqueue requests and suspend; this thread writes every queued command
/// in one go (concurrent callers get pipelined for free), reads the replies in order and
/// resumes the callers.
final class RedisConnection: Sendable {
    struct Request: Sendable {
        let commands: [[String]]
        /// For a blocking read: how long the server may hold the reply before answering nil.
        let blocking: Duration?
        /// Called when the commands were written but the connection broke before their
        /// replies came: Redis may have run them.
        let lost: (@Sendable () -> Void)?
        let continuation: CheckedContinuation<[RedisReply], any Error>
    }

    private struct Queue {
        var requests: [Request] = []
        var closed = false
    }

    let configuration: RedisConfiguration
    let name: String
    private let queue = Mutex(Queue())
    private let wake = DispatchSemaphore(value: 0)
    /// The connected socket, so ``close()`` can break a blocking read from another thread.
    private let socket = Mutex<Int32>(-1)
    private let logger = Logger(label: "corral.redis")

    // Touched only by the connection's thread.
    nonisolated(unsafe) private var context: UnsafeMutablePointer<redisContext>?
    nonisolated(unsafe) private var nextAttempt = ContinuousClock.now
    nonisolated(unsafe) private var backoff = RedisConnection.firstBackoff
    nonisolated(unsafe) private var reportedDown = false

    static let firstBackoff: Duration = .milliseconds(50)

    /// A write to a socket Redis has closed raises SIGPIPE, whose default action kills the
    /// process; hiredis uses plain write(2), so the signal must be ignored process-wide.
    private static let ignoreSIGPIPE: Void = { _ = signal(SIGPIPE, SIG_IGN) }()

    init(configuration: RedisConfiguration, name: String) {
        Self.ignoreSIGPIPE
        self.configuration = configuration
        self.name = name.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." ? $0 : "_" }.reduce("") {
            $0 + String($1)
        }
        let thread = Thread { [self] in run() }
        thread.name = "corral.redis"
        thread.start()
    }

    /// Sends `commands` as one pipeline and returns their replies in order. Error replies
    /// are values here; a broken connection throws ``ClusterError/redisUnavailable(retryAfterSeconds:)``.
    /// `lost` hears when they may have run although the call throws (see ``Request/lost``).
    func send(_ commands: [[String]], blocking: Duration? = nil, lost: (@Sendable () -> Void)? = nil) async throws
        -> [RedisReply]
    {
        try await withCheckedThrowingContinuation { continuation in
            let accepted = queue.withLock { q -> Bool in
                guard !q.closed else { return false }
                q.requests.append(
                    Request(commands: commands, blocking: blocking, lost: lost, continuation: continuation))
                return true
            }
            if accepted { wake.signal() } else { continuation.resume(throwing: ClusterError.closed) }
        }
    }

    /// Fails queued and future requests, breaks a blocking read in progress and ends the
    /// thread.
    func close() {
        queue.withLock { $0.closed = true }
        wake.signal()
        socket.withLock { fd in if fd >= 0 { _ = shutdown(fd, Int32(SHUT_RDWR)) } }
    }

    // MARK: - The connection's thread

    private func run() {
        while true {
            wake.wait()
            let (batch, closed) = queue.withLock { q in
                defer { q.requests = [] }
                return (q.requests, q.closed)
            }
            if closed {
                for request in batch { request.continuation.resume(throwing: ClusterError.closed) }
                disconnect()
                return
            }
            var index = 0
            // Blocking reads go alone: a pipeline behind one would wait for its whole block.
            while index < batch.count {
                var end = index + 1
                if batch[index].blocking == nil {
                    while end < batch.count && batch[end].blocking == nil { end += 1 }
                }
                perform(batch[index..<end])
                index = end
            }
        }
    }

    private func perform(_ group: ArraySlice<Request>) {
        let c: UnsafeMutablePointer<redisContext>
        switch connect() {
        case .success(let connected): c = connected
        case .failure(let error):
            for request in group { request.continuation.resume(throwing: error) }
            return
        }
        let blocking = group.first?.blocking
        if let blocking { _ = redisSetTimeout(c, (blocking + configuration.commandTimeout).timeval) }
        for request in group {
            for command in request.commands { append(c, command) }
        }
        for (offset, request) in group.enumerated() {
            var replies: [RedisReply] = []
            for _ in request.commands {
                var raw: UnsafeMutableRawPointer?
                guard redisGetReply(c, &raw) == REDIS_OK, let raw else {
                    drop(reason: Self.errorText(c))
                    for pending in group.dropFirst(offset) {
                        pending.lost?()
                        pending.continuation.resume(throwing: ClusterError.redisUnavailable(retryAfterSeconds: 1))
                    }
                    return
                }
                replies.append(RedisReply(raw.assumingMemoryBound(to: redisReply.self)))
                freeReplyObject(raw)
            }
            request.continuation.resume(returning: replies)
        }
        if blocking != nil { _ = redisSetTimeout(c, configuration.commandTimeout.timeval) }
    }

    /// The live context, connecting (and authenticating) first if there is none and the
    /// backoff since the last failed attempt has passed.
    private func connect() -> Result<UnsafeMutablePointer<redisContext>, ClusterError> {
        if let context { return .success(context) }
        let now = ContinuousClock.now
        if now < nextAttempt { return .failure(.redisUnavailable(retryAfterSeconds: Self.seconds(nextAttempt - now))) }
        var made: UnsafeMutablePointer<redisContext>?
        if let tls = configuration.tls {
            do {
                let fd = try RedisTLSBridge.open(
                    host: configuration.host, port: configuration.port, tls: tls, timeout: configuration.connectTimeout)
                made = redisConnectFd(fd)
                if made == nil { Glibc.close(fd) }
            } catch .redisUnavailable {
                return .failure(failedAttempt("cannot connect to \(configuration.host):\(configuration.port)"))
            } catch {
                // A certificate that does not verify will not verify on the next attempt
                // either; the backoff still applies, so a fixed CA file is picked up.
                _ = failedAttempt(error.description)
                return .failure(error)
            }
        } else {
            made = redisConnectWithTimeout(
                configuration.host, Int32(configuration.port), configuration.connectTimeout.timeval)
        }
        guard let c = made else { return .failure(failedAttempt("out of memory")) }
        if c.pointee.err != 0 {
            let reason = Self.errorText(c)
            redisFree(c)
            return .failure(failedAttempt(reason))
        }
        _ = redisSetTimeout(c, configuration.commandTimeout.timeval)
        // TCP keepalive belongs to the TCP socket; hiredis holds a socket pair's end over TLS.
        if configuration.tls == nil { _ = redisEnableKeepAlive(c) }
        var handshake: [[String]] = []
        if let password = configuration.password {
            handshake.append(configuration.username.map { ["AUTH", $0, password] } ?? ["AUTH", password])
        }
        if configuration.database != 0 { handshake.append(["SELECT", String(configuration.database)]) }
        handshake.append(["CLIENT", "SETNAME", name])
        for command in handshake {
            append(c, command)
            var raw: UnsafeMutableRawPointer?
            guard redisGetReply(c, &raw) == REDIS_OK, let raw else {
                let reason = Self.errorText(c)
                redisFree(c)
                return .failure(failedAttempt(reason))
            }
            let reply = RedisReply(raw.assumingMemoryBound(to: redisReply.self))
            freeReplyObject(raw)
            if case .error(let message) = reply {
                redisFree(c)
                var error = RedisClient.error(forReply: message)
                if case .server = error { error = .server("\(command[0]): \(message)") }
                _ = failedAttempt(message)
                return .failure(error)
            }
        }
        socket.withLock { $0 = c.pointee.fd }
        context = c
        backoff = Self.firstBackoff
        if reportedDown { logger.info("redis \(configuration.host):\(configuration.port) is back (\(name))") }
        reportedDown = false
        return .success(c)
    }

    /// Records a failed connect: the next attempt waits a little longer, up to the cap.
    private func failedAttempt(_ reason: String) -> ClusterError {
        if !reportedDown { logger.warning("redis \(configuration.host):\(configuration.port) unreachable: \(reason)") }
        reportedDown = true
        let wait = backoff
        nextAttempt = .now + wait
        backoff = min(backoff * 2, configuration.maxBackoff)
        return .redisUnavailable(retryAfterSeconds: Self.seconds(wait))
    }

    /// Forgets a broken connection. The next request reconnects at once: Redis may only have
    /// closed an idle socket.
    private func drop(reason: String) {
        let closing = queue.withLock { $0.closed }
        if !reportedDown && !closing { logger.warning("redis connection lost (\(name)): \(reason)") }
        reportedDown = !closing
        disconnect()
        nextAttempt = .now
    }

    private func disconnect() {
        socket.withLock { $0 = -1 }
        if let context { redisFree(context) }
        context = nil
    }

    private func append(_ c: UnsafeMutablePointer<redisContext>, _ command: [String]) {
        // Copies with explicit lengths: arguments (job output, JSON) may hold NUL bytes.
        let buffers = command.map { Array($0.utf8) }
        let pointers = buffers.map { bytes -> UnsafeMutablePointer<CChar> in
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: max(bytes.count, 1))
            bytes.withUnsafeBytes { raw in
                if let base = raw.baseAddress { memcpy(p, base, raw.count) }
            }
            return p
        }
        defer { pointers.forEach { $0.deallocate() } }
        var argv: [UnsafePointer<CChar>?] = pointers.map { UnsafePointer($0) }
        let lengths = buffers.map(\.count)
        _ = redisAppendCommandArgv(c, Int32(command.count), &argv, lengths)
    }

    private static func errorText(_ c: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: c.pointee.errstr) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    static func seconds(_ duration: Duration) -> Int { Int(duration.secondsRoundedUp) }
}
