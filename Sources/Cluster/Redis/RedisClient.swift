import Host
import Synchronization

/// A Lua script run with EVALSHA, loaded into Redis on first use and again whenever
/// Redis has forgotten it (after a restart).
public struct RedisScript: Sendable, Hashable {
    public let source: String
    public init(_ source: String) { self.source = source }
}

/// An async Redis client over one hiredis connection on a dedicated thread.
///
/// Commands from concurrent callers are pipelined. When Redis is down every call throws
/// ``ClusterError/redisUnavailable(retryAfterSeconds:)`` at once, and the connection is
/// re-established, with growing backoff, by the next call. Failed commands are never
/// retried here: only the caller knows whether a command is safe to repeat.
///
/// A blocking read (`XREAD BLOCK`, `XREADGROUP BLOCK`) holds the connection for its whole
/// block, so give blocking reads a client of their own.
public final class RedisClient: Sendable {
    let connection: RedisConnection
    private let scripts = Mutex<[String: String]>([:])

    public init(_ configuration: RedisConfiguration, name: String = "corral") {
        connection = RedisConnection(configuration: configuration, name: name)
    }

    deinit { connection.close() }

    public var configuration: RedisConfiguration { connection.configuration }

    /// Runs one command. An error reply throws: ``ClusterError/redisUnavailable(retryAfterSeconds:)``
    /// while Redis is loading or failing over, ``ClusterError/server(_:)`` otherwise.
    @discardableResult
    public func command(_ arguments: [String]) async throws -> RedisReply {
        try Self.check(try await connection.send([arguments])[0])
    }

    /// Runs `commands` back to back in one round trip. Error replies stay values, one per
    /// command; only a broken connection throws.
    public func pipeline(_ commands: [[String]]) async throws -> [RedisReply] {
        try await connection.send(commands)
    }

    /// Runs a command the server may hold for up to `duration` (`XREAD BLOCK ms`); the
    /// socket timeout is stretched to match.
    public func blocking(_ arguments: [String], for duration: Duration) async throws -> RedisReply {
        try Self.check(try await connection.send([arguments], blocking: duration)[0])
    }

    /// Runs a Lua script by its SHA, loading it first when Redis does not know it.
    ///
    /// `lost` is called if the script was sent but the connection broke before its reply:
    /// the call throws ``ClusterError/redisUnavailable(retryAfterSeconds:)``, yet Redis may
    /// have run it. A caller whose script is idempotent can run it again to learn the outcome.
    @discardableResult
    public func eval(
        _ script: RedisScript, keys: [String], arguments: [String], lost: (@Sendable () -> Void)? = nil
    ) async throws -> RedisReply {
        for _ in 0..<2 {
            let sha: String
            if let known = scripts.withLock({ $0[script.source] }) {
                sha = known
            } else {
                guard let loaded = try await command(["SCRIPT", "LOAD", script.source]).string else {
                    throw ClusterError.protocolViolation("SCRIPT LOAD returned no SHA")
                }
                scripts.withLock { $0[script.source] = loaded }
                sha = loaded
            }
            let reply = try await connection.send(
                [["EVALSHA", sha, String(keys.count)] + keys + arguments], lost: lost)[0]
            if case .error(let message) = reply, message.hasPrefix("NOSCRIPT") {
                // Redis restarted and lost its script cache: load again and retry once.
                scripts.withLock { $0[script.source] = nil }
                continue
            }
            return try Self.check(reply)
        }
        throw ClusterError.server("NOSCRIPT after loading the script")
    }

    /// Fails calls in flight and to come and ends the connection's thread.
    public func close() { connection.close() }

    static func check(_ reply: RedisReply) throws -> RedisReply {
        if case .error(let message) = reply { throw error(forReply: message) }
        return reply
    }

    /// Error replies that mean "Redis is not ready yet" are outages, not bugs.
    static func error(forReply message: String) -> ClusterError {
        let transient = ["LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "READONLY", "BUSY "]
        let code = message.split(separator: " ").first.map(String.init) ?? message
        if transient.contains(where: { message.hasPrefix($0) || code == $0.trimmingCharacters(in: .whitespaces) }) {
            return .redisUnavailable(retryAfterSeconds: 1)
        }
        return .server(message)
    }
}
