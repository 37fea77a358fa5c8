import Cluster
import Foundation
import Host
import TestSupport
import Testing

/// The hiredis client against a real redis-server on loopback: replies, pipelining,
/// scripts, AUTH, blocking reads, and what a caller sees while Redis is down and after.
@Suite(.serialized, .enabled(if: RedisServer.isAvailable, "needs /usr/bin/redis-server"))
struct RedisClientTests {
    @Test func urlsCarryAuthDatabaseTimeoutsAndTLSFiles() throws {
        let c = try RedisConfiguration(url: "redis://alice:s%40cret@10.0.0.5:6380/3?timeout=1.5&connect_timeout=0.5")
        #expect(c.host == "10.0.0.5")
        #expect(c.port == 6380)
        #expect(c.username == "alice")
        #expect(c.password == "s@cret")
        #expect(c.database == 3)
        #expect(c.commandTimeout == .milliseconds(1500))
        #expect(c.connectTimeout == .milliseconds(500))
        let bare = try RedisConfiguration(url: "redis://:pw@localhost")
        #expect(bare.username == nil)
        #expect(bare.password == "pw")
        #expect(bare.port == 6379)
        let secure = try RedisConfiguration(url: "rediss://h:6380?cacert=/etc/ca.pem&cert=/c.pem&key=/k.pem&timeout=2")
        #expect(secure.tls == RedisTLS(caFile: "/etc/ca.pem", certFile: "/c.pem", keyFile: "/k.pem"))
        #expect(secure.commandTimeout == .seconds(2))
        #expect(try RedisConfiguration(url: "rediss://h").tls == RedisTLS())
        #expect(bare.tls == nil)
        #expect(throws: ClusterError.invalidURL("cacert needs rediss://")) {
            try RedisConfiguration(url: "redis://h?cacert=/etc/ca.pem")
        }
        #expect(throws: ClusterError.invalidURL("key needs cert")) { try RedisConfiguration(url: "rediss://h?key=/k") }
        #expect(throws: ClusterError.invalidURL("scheme must be redis:// or rediss://, not http://")) {
            try RedisConfiguration(url: "http://h")
        }
        #expect(throws: ClusterError.invalidURL("database must be a number, not x")) {
            try RedisConfiguration(url: "redis://h/x")
        }
        #expect(throws: ClusterError.invalidURL("unknown option tls")) {
            try RedisConfiguration(url: "redis://h?tls=1")
        }
    }

    @Test func commandsPipelinesAndScriptsGetTypedReplies() async throws {
        let server = try RedisServer()
        let redis = RedisClient(try RedisConfiguration(url: server.url))
        defer { redis.close() }
        #expect(try await redis.command(["SET", "k", "v\0with nul"]) == .status("OK"))
        #expect(try await redis.command(["GET", "k"]) == .string("v\0with nul"))
        #expect(try await redis.command(["GET", "missing"]) == .null)
        #expect(try await redis.command(["INCRBY", "n", "41"]) == .integer(41))
        let replies = try await redis.pipeline([["INCR", "n"], ["LPUSH", "k", "x"], ["MGET", "n", "missing"]])
        #expect(replies[0] == .integer(42))
        #expect(replies[1].isError)
        #expect(replies[2] == .array([.string("42"), .null]))
        await #expect(throws: ClusterError.server("ERR unknown command 'NOPE', with args beginning with: ")) {
            try await redis.command(["NOPE"])
        }
        let script = RedisScript("return {KEYS[1], ARGV[1], redis.call('GET', KEYS[1])}")
        #expect(
            try await redis.eval(script, keys: ["n"], arguments: ["a"])
                == .array([.string("n"), .string("a"), .string("42")]))
        // Redis forgets scripts (as after a restart): the client loads it again by itself.
        try await redis.command(["SCRIPT", "FLUSH"])
        #expect(try await redis.eval(script, keys: ["n"], arguments: ["b"]).array?[1] == .string("b"))
    }

    @Test func concurrentCallersAreAnsweredInOrder() async throws {
        let server = try RedisServer()
        let redis = RedisClient(try RedisConfiguration(url: server.url))
        defer { redis.close() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<200 {
                group.addTask {
                    try await redis.command(["SET", "key\(i)", "value\(i)"])
                    #expect(try await redis.command(["GET", "key\(i)"]) == .string("value\(i)"))
                }
            }
            try await group.waitForAll()
        }
        #expect(try await redis.command(["DBSIZE"]) == .integer(200))
    }

    @Test func passwordsAndDatabasesComeFromTheURL() async throws {
        let server = try RedisServer(password: "hunter2")
        let good = RedisClient(try RedisConfiguration(url: server.url + "/2"))
        defer { good.close() }
        try await good.command(["SET", "where", "db2"])
        #expect(try await good.command(["GET", "where"]) == .string("db2"))
        let other = RedisClient(try RedisConfiguration(url: server.url + "/0"))
        defer { other.close() }
        #expect(try await other.command(["GET", "where"]) == .null)
        let wrong = RedisClient(try RedisConfiguration(url: "redis://:wrong@127.0.0.1:\(server.port)"))
        defer { wrong.close() }
        await #expect {
            try await wrong.command(["PING"])
        } throws: { error in
            guard case ClusterError.server(let message) = error else { return false }
            return message.hasPrefix("AUTH: WRONGPASS")
        }
    }

    @Test func aBlockingReadWaitsOnItsOwnConnectionAndWakesOnAnEntry() async throws {
        let server = try RedisServer()
        let configuration = try RedisConfiguration(url: server.url)
        let reader = RedisClient(configuration)
        let writer = RedisClient(configuration)
        defer {
            reader.close()
            writer.close()
        }
        let started = ContinuousClock.now
        async let read = reader.blocking(["XREAD", "BLOCK", "5000", "STREAMS", "s", "$"], for: .seconds(5))
        try await Task.sleep(for: .milliseconds(100))
        try await writer.command(["XADD", "s", "*", "f", "v"])
        let reply = try await read
        #expect(ContinuousClock.now - started < .seconds(2))
        #expect(reply.array?.first?.array?.first == .string("s"))
        // A block that runs out is a nil reply, not an error.
        #expect(
            try await reader.blocking(["XREAD", "BLOCK", "50", "STREAMS", "s", "$"], for: .milliseconds(50)) == .null)
    }

    @Test func whileRedisIsDownCallsFailFastWithRetryAfterAndRecoverWhenItReturns() async throws {
        let server = try RedisServer()
        let redis = RedisClient(try RedisConfiguration(url: server.url))
        defer { redis.close() }
        try await redis.command(["SET", "kept", "yes"])
        server.stop()
        let start = ContinuousClock.now
        for _ in 0..<3 {
            await #expect {
                try await redis.command(["GET", "kept"])
            } throws: { error in
                guard case ClusterError.redisUnavailable(let after) = error else { return false }
                return after >= 1
            }
        }
        #expect(ContinuousClock.now - start < .seconds(1))
        try server.start()
        var value: RedisReply?
        for _ in 0..<50 where value == nil {
            value = try? await redis.command(["GET", "kept"])
            if value == nil { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(value == .string("yes"))
    }

    @Test func closingBreaksABlockingReadAtOnce() async throws {
        let server = try RedisServer()
        let reader = RedisClient(try RedisConfiguration(url: server.url))
        let start = ContinuousClock.now
        let read = Task {
            try await reader.blocking(["XREAD", "BLOCK", "10000", "STREAMS", "s", "$"], for: .seconds(10))
        }
        try await Task.sleep(for: .milliseconds(100))
        reader.close()
        await #expect(throws: ClusterError.self) { try await read.value }
        #expect(ContinuousClock.now - start < .seconds(2))
        await #expect(throws: ClusterError.closed) { try await reader.command(["PING"]) }
    }
}

extension RedisReply {
    var isError: Bool {
        if case .error = self { return true }
        return false
    }
}
