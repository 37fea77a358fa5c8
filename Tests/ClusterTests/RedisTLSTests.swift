import Cluster
import Foundation
import Host
import TestSupport
import Testing

/// `rediss://` against a real redis-server listening with TLS only, with certificates made
/// for the test by the openssl command: the handshake verifies the CA and the name, and
/// the bridge between hiredis and the TLS stream goes away with the client.
@Suite(
    .serialized,
    .enabled(
        if: RedisServer.isAvailable && FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl"),
        "needs /usr/bin/redis-server and /usr/bin/openssl"))
struct RedisTLSTests {
    /// A CA, a server certificate for IP 127.0.0.1 only, an unrelated CA, and a redis-server
    /// with `--port 0 --tls-port P`.
    final class TLSServer: @unchecked Sendable {
        let dir: TemporaryDirectory
        let port = Int.random(in: 20_000..<60_000)
        let process = Process()

        init() throws {
            dir = try TemporaryDirectory()
            let d = dir.path
            let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
            try Self.openssl(
                ["req", "-x509"] + ec + [
                    "-keyout", "\(d)/ca.key", "-out", "\(d)/ca.pem", "-days", "1", "-subj", "/CN=corral-test-ca",
                ])
            try Self.openssl(
                ["req", "-x509"] + ec + [
                    "-keyout", "\(d)/other.key", "-out", "\(d)/other.pem", "-days", "1", "-subj", "/CN=other-ca",
                ])
            try Self.openssl(
                ["req"] + ec + ["-keyout", "\(d)/server.key", "-out", "\(d)/server.csr", "-subj", "/CN=redis"])
            try "subjectAltName=IP:127.0.0.1\n".write(toFile: "\(d)/ext.cnf", atomically: true, encoding: .utf8)
            try Self.openssl([
                "x509", "-req", "-in", "\(d)/server.csr", "-CA", "\(d)/ca.pem", "-CAkey", "\(d)/ca.key",
                "-CAcreateserial", "-out", "\(d)/server.pem", "-days", "1", "-extfile", "\(d)/ext.cnf",
            ])
            process.executableURL = URL(fileURLWithPath: RedisServer.binary)
            process.arguments = [
                "--bind", "127.0.0.1", "--port", "0", "--tls-port", String(port), "--tls-cert-file", "\(d)/server.pem",
                "--tls-key-file", "\(d)/server.key", "--tls-ca-cert-file", "\(d)/ca.pem", "--tls-auth-clients", "no",
                "--save", "", "--appendonly", "no", "--dir", d, "--logfile", "\(d)/redis.log",
            ]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            let up = waitUntil(seconds: 10) {
                (try? Self.run(
                    "/usr/bin/redis-cli", ["--tls", "--cacert", "\(d)/ca.pem", "-p", String(self.port), "ping"]))
                    == "PONG\n"
            }
            if !up {
                stop()
                throw TestSupportError("redis-server with TLS on \(port) did not answer")
            }
        }

        func url(host: String = "127.0.0.1", ca: String = "ca.pem") -> String {
            "rediss://\(host):\(port)?cacert=\(dir.path)/\(ca)"
        }

        func stop() {
            guard process.isRunning else { return }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }

        deinit { stop() }

        static func openssl(_ arguments: [String]) throws {
            _ = try run("/usr/bin/openssl", arguments)
        }

        @discardableResult
        static func run(_ tool: String, _ arguments: [String]) throws -> String {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: tool)
            p.arguments = arguments
            let out = Pipe()
            p.standardOutput = out
            p.standardError = FileHandle.nullDevice
            try p.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            guard p.terminationStatus == 0 else { throw TestSupportError("\(tool) \(arguments) failed") }
            return String(decoding: data, as: UTF8.self)
        }
    }

    static func openDescriptors() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
    }

    @Test func commandsTravelOverVerifiedTLSAndTheBridgeGoesAwayWithTheClient() async throws {
        let server = try TLSServer()
        defer { server.stop() }
        let before = Self.openDescriptors()
        let redis = RedisClient(try RedisConfiguration(url: server.url()))
        #expect(try await redis.command(["SET", "k", String(repeating: "x", count: 100_000)]) == .status("OK"))
        #expect(try await redis.command(["STRLEN", "k"]) == .integer(100_000))
        let replies = try await redis.pipeline([["INCR", "n"], ["INCR", "n"], ["GET", "n"]])
        #expect(replies == [.integer(1), .integer(2), .string("2")])
        // A blocking read waits out its block through the bridge and comes back empty.
        #expect(
            try await redis.blocking(["XREAD", "BLOCK", "300", "STREAMS", "s", "$"], for: .milliseconds(300)) == .null)
        // The server saw a TLS client: its connection list shows ours by name.
        #expect(try await redis.command(["CLIENT", "LIST"]).string?.contains("name=corral") == true)
        redis.close()
        // hiredis's end of the pair closes; the bridge thread sees it and closes the rest.
        #expect(waitUntil(seconds: 5) { Self.openDescriptors() == before }, "\(Self.openDescriptors()) vs \(before)")
    }

    @Test func aCertificateFromAnotherCAOrForAnotherNameIsRefused() async throws {
        let server = try TLSServer()
        defer { server.stop() }
        let stranger = RedisClient(try RedisConfiguration(url: server.url(ca: "other.pem")))
        defer { stranger.close() }
        await #expect(
            throws: ClusterError.tls(
                "TLS handshake with 127.0.0.1:\(server.port) failed: certificate verify failed: self-signed certificate in certificate chain"
            )
        ) {
            try await stranger.command(["PING"])
        }
        // The certificate names 127.0.0.1 only.
        let misnamed = RedisClient(try RedisConfiguration(url: server.url(host: "localhost")))
        defer { misnamed.close() }
        await #expect(
            throws: ClusterError.tls(
                "TLS handshake with localhost:\(server.port) failed: certificate verify failed: hostname mismatch"
            )
        ) {
            try await misnamed.command(["PING"])
        }
        // Plain text to the TLS port never gets an answer it could take for Redis's.
        let plain = RedisClient(try RedisConfiguration(url: "redis://127.0.0.1:\(server.port)?timeout=1"))
        defer { plain.close() }
        await #expect(throws: (any Error).self) { try await plain.command(["PING"]) }
    }

    @Test func aClusterRunsJobsOverTLS() async throws {
        let server = try TLSServer()
        defer { server.stop() }
        let configuration = ClusterConfiguration(
            redis: try RedisConfiguration(url: server.url()), keyPrefix: "tls", blockInterval: .seconds(1))
        let runner = ClusterFakeRunner(host: "tls-worker", ledger: ClusterLedger())
        let worker = try ClusterWorker(configuration: configuration, host: "tls-worker", runner: runner)
        try await worker.start()
        let client = ClusterJobClient(configuration: configuration)
        // Submit, the worker's blocking stream read, the gate, the result and the waiter's
        // blocking event read all cross the TLS bridge.
        let snap = try await client.run(JobRequest(project: "p", command: "hello"), budget: .seconds(10))
        #expect(snap.record.state == .completed)
        #expect(snap.output == "hello@tls-worker\n")
        #expect(try await client.owner(of: "p") == "tls-worker")
        await worker.shutdown(grace: .seconds(1))
        client.close()
    }
}
