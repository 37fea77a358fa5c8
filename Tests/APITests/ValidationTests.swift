import API
import Foundation
import HTTPTypes
import Host
import HummingbirdTesting
import Testing

/// "Abusing the API": malformed, mistyped, oversized and out-of-range requests each get a
/// 4xx that names the problem, and the server keeps serving.
@Suite struct ValidationTests {
    @Test func healthAndRootNeedNothingAndCarryARequestID() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            let health = try await client.call(.get, "/health")
            #expect(health.status == .ok)
            #expect(health.json["status"] == "ok")
            let id = try #require(health.header("X-Request-Id"))
            #expect(id.count == 32 && id.allSatisfy(\.isHexDigit))
            let root = try await client.call(.get, "/", headers: ["X-Request-Id": "trace-42"])
            #expect(root.json["service"] == "corral")
            #expect(root.header("X-Request-Id") == "trace-42")
            // An id that could forge a log line is replaced, not echoed.
            let forged = try await client.call(.get, "/health", headers: ["X-Request-Id": "a\"b"])
            #expect(forged.header("X-Request-Id") != "a\"b")
        }
    }

    @Test func malformedJSONIs400AndNamesWhereItBroke() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            let reply = try await client.call(.post, "/v1/projects/alpha/exec", raw: Array(#"{"command": "#.utf8))
            #expect(reply.status == .badRequest)
            #expect(reply.code == "malformed_json")
            #expect(reply.header("X-Request-Id") != nil)
            let array = try await client.call(.post, "/v1/projects/alpha/exec", json: ["echo"])
            #expect(array.status == .unprocessableContent)
            #expect(array.json["error"]?["message"] == "`the request body` must be a JSON object, got an array")
        }
    }

    @Test func wrongTypesMissingAndUnknownFieldsAre422WithTheFieldNamed() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            let cases: [(JSON, String)] = [
                (["command": "echo hi", "timeout_s": "10"], "`timeout_s` must be a number, got a string"),
                (["command": 42], "`command` must be a string, got a number"),
                ([:], "`command` is required"),
                (["command": "   "], "`command` is empty"),
                (["command": "echo", "env": ["A": 1]], "`env.A` must be a string, got a number"),
                (["command": "echo", "env": ["1BAD": "x"]], "`env` has an invalid variable name \"1BAD\""),
                (
                    ["command": "echo", "timout_s": 5],
                    "`timout_s` is not a field of an exec request; the fields are `command`, `cwd`, `env`, `shell`, `stdin`, `timeout`, `timeout_s`, `wait_s`"
                ),
            ]
            for (body, message) in cases {
                let reply = try await client.call(.post, "/v1/projects/alpha/exec", json: body)
                #expect(reply.status == .unprocessableContent, "\(body)")
                #expect(reply.json["error"]?["message"]?.stringValue == message)
            }
        }
    }

    @Test func hugeTimeoutsAndWaitsAreRefused() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            let huge = try await client.call(
                .post, "/v1/projects/alpha/exec", json: ["command": "echo", "timeout_s": 1e300])
            #expect(huge.status == .unprocessableContent)
            #expect(huge.json["error"]?["message"] == "`timeout_s` must be between 0.001 and 604800, got 1e+300")
            // Within the API's bound but above the project's policy: the host refuses it.
            let policy = try await client.call(
                .post, "/v1/projects/alpha/exec", json: ["command": "echo", "timeout_s": 3600])
            #expect(policy.status == .unprocessableContent)
            #expect(policy.code == "limit_exceeded")
            let wait = try await client.call(
                .post, "/v1/projects/alpha/exec", json: ["command": "echo", "wait_s": 301])
            #expect(wait.json["error"]?["message"] == "`wait_s` must be between 0 and 300, got 301")
            let negative = try await client.call(
                .post, "/v1/projects/alpha/exec", json: ["command": "echo", "timeout_s": -1])
            #expect(negative.status == .unprocessableContent)
        }
    }

    @Test func oversizedBodiesAre413AndTheServerKeepsServing() async throws {
        var configuration = APIConfiguration(port: 0)
        configuration.limits.maxJSONBytes = 1024
        configuration.limits.maxArchiveBytes = 4096
        try await withAPI(configuration, backend: try FakeBackend()) { client in
            let big = JSON.object(["command": .string(String(repeating: "x", count: 5000))])
            let reply = try await client.call(.post, "/v1/projects/alpha/exec", json: big)
            #expect(reply.status == .contentTooLarge)
            #expect(reply.json["error"]?["message"] == "the request body is larger than the limit of 1024 bytes")
            let archive = try await client.call(
                .put, "/v1/projects/alpha/archive", raw: [0x1F, 0x8B] + Array(repeating: 0, count: 5000))
            #expect(archive.status == .contentTooLarge)
            #expect(archive.json["error"]?["message"] == "the archive is larger than the limit of 4096 bytes")
            let tool = try await client.call(.post, "/v1/projects/alpha/tools/bash", json: big)
            #expect(tool.status == .contentTooLarge)
            let after = try await client.call(.post, "/v1/projects/alpha/exec", json: ["command": "echo still here"])
            #expect(after.status == .ok)
            #expect(after.json["stdout"] == "still here\n")
        }
    }

    /// Python's urllib sends `Connection: close` and the whole body before reading, without
    /// `Expect: 100-continue`: its 413 once never came, the client blocked on a full socket.
    @Test func anOversizedBodySentWholeWithConnectionCloseGetsIts413AndTheConnectionCloses() async throws {
        var configuration = APIConfiguration(port: 0)
        configuration.limits.maxJSONBytes = 1024
        try await withAPI(configuration, backend: try FakeBackend(), mode: .live) { client in
            let port = try #require(client.port)
            for (length, framing) in [(8 << 20, "Content-Length: \(8 << 20)"), (3 << 20, "Transfer-Encoding: chunked")]
            {
                let connection = try RawConnection(port: port)
                try await connection.send(
                    "POST /v1/projects/alpha/exec HTTP/1.1\r\nHost: corral\r\nContent-Type: application/json\r\n"
                        + "\(framing)\r\nConnection: close\r\n\r\n")
                let body = Array(repeating: UInt8(ascii: "x"), count: length)
                let chunked = framing.hasPrefix("Transfer")
                var payload = body
                if chunked {
                    payload =
                        stride(from: 0, to: length, by: 65536).flatMap { piece in
                            let part = body[piece..<min(length, piece + 65536)]
                            return Array("\(String(part.count, radix: 16))\r\n".utf8) + part + [13, 10]
                        } + Array("0\r\n\r\n".utf8)
                }
                let sent = try await connection.send(payload, within: .seconds(20))
                #expect(sent, "the server stopped reading a refused body of \(length) bytes (\(framing))")
                await connection.readToEnd()
                #expect(connection.text.hasPrefix("HTTP/1.1 413 "), "\(framing): \(connection.text.prefix(300))")
                #expect(connection.text.contains("the request body is larger than the limit of 1024 bytes"))
                #expect(connection.closed, "\(framing): the connection stayed open")
            }
            let after = try await client.call(.post, "/v1/projects/alpha/exec", json: ["command": "echo still here"])
            #expect(after.json["stdout"] == "still here\n")
        }
    }

    @Test func deepNestingNULBytesAndHostileHeadersAreRefusedCleanly() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            let deep =
                Array(repeating: UInt8(ascii: "["), count: 100_000)
                + Array(repeating: UInt8(ascii: "]"), count: 100_000)
            let nested = try await client.call(.post, "/v1/projects/alpha/exec", raw: deep)
            #expect(nested.status == .badRequest)
            #expect(nested.code == "malformed_json")
            let nul = try await client.call(.post, "/v1/projects/alpha/exec", json: ["command": "echo a\u{0}b"])
            #expect(nul.json["error"]?["message"] == "`command` must not contain NUL bytes")
            let key = try await client.call(
                .post, "/v1/projects/alpha/jobs", json: ["command": "echo"],
                headers: ["Idempotency-Key": String(repeating: "k", count: 300)])
            #expect(key.json["error"]?["message"] == "`Idempotency-Key` must be 1-255 printable ASCII characters")
            let after = try await client.call(.post, "/v1/projects/alpha/exec", json: ["command": "echo ok"])
            #expect(after.json["stdout"] == "ok\n")
        }
    }

    @Test func uploadsBeyondTheConcurrentCapAre503() async throws {
        var configuration = APIConfiguration(port: 0)
        configuration.limits.maxConcurrentUploads = 0
        try await withAPI(configuration, backend: try FakeBackend()) { client in
            let reply = try await client.call(.put, "/v1/projects/alpha/archive", raw: [0x1F, 0x8B])
            #expect(reply.status == .serviceUnavailable)
            #expect(reply.header("Retry-After") == "5")
            #expect(reply.json["error"]?["message"] == "0 uploads are in progress; retry shortly")
        }
    }

    @Test func tooManyRequestsInFlightAre503WithRetryAfter() async throws {
        var configuration = APIConfiguration(port: 0)
        configuration.limits.maxInFlight = 0
        try await withAPI(configuration, backend: try FakeBackend()) { client in
            let reply = try await client.call(.get, "/v1/projects/alpha")
            #expect(reply.status == .serviceUnavailable)
            #expect(reply.code == "overloaded")
            #expect(reply.header("Retry-After") == "1")
        }
    }

    @Test func badProjectIDsAndUnknownRoutes() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            let bad = try await client.call(.get, "/v1/projects/bad!id")
            #expect(bad.status == .badRequest)
            #expect(bad.code == "invalid_project")
            let missing = try await client.call(.get, "/v1/projects/ghost")
            #expect(missing.status == .notFound)
            #expect(missing.code == "project_not_found")
            let route = try await client.call(.get, "/v2/nothing")
            #expect(route.status == .notFound)
            #expect(route.code == "http_404")
            let exec = try await client.call(.post, "/v1/projects/ghost/exec", json: ["command": "echo"])
            #expect(exec.status == .notFound)
        }
    }

    @Test func projectRegistrationChecksEveryField() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            let created = try await client.call(.put, "/v1/projects/gamma", json: ["source": "s3://bucket/key.tar.gz"])
            #expect(created.status == .created)
            #expect(created.json["id"] == "gamma")
            #expect(created.json["expires_at"] == "2033-05-18T03:33:20Z")
            let again = try await client.call(.put, "/v1/projects/gamma", json: ["source": "s3://bucket/key.tar.gz"])
            #expect(again.status == .ok)
            let scheme = try await client.call(.put, "/v1/projects/gamma", json: ["source": "ftp://x"])
            #expect(scheme.status == .unprocessableContent)
            #expect(scheme.code == "unsupported_source")
            let policy = try await client.call(
                .put, "/v1/projects/gamma", json: ["source": "file:///x", "policy": "gold"])
            #expect(policy.code == "unknown_policy")
            let limits = try await client.call(
                .put, "/v1/projects/gamma", json: ["source": "file:///x", "limits": ["cpus": 2]])
            #expect(limits.code == "limit_exceeded")
            let typo = try await client.call(
                .put, "/v1/projects/gamma", json: ["source": "file:///x", "limits": ["memory": "1GiB"]])
            #expect(typo.json["error"]?["message"]?.stringValue?.hasPrefix("`memory` is not a field of limits") == true)
            let sha = try await client.call(.put, "/v1/projects/gamma", json: ["source": "file:///x", "sha256": "abc"])
            #expect(sha.json["error"]?["message"] == "`sha256` must be 64 hexadecimal digits")
            let corrupt = try await client.call(.put, "/v1/projects/gamma/archive", raw: Array("not an archive".utf8))
            #expect(corrupt.code == "corrupt_archive")
            let query = try await client.call(.put, "/v1/projects/gamma/archive?cpus=abc", raw: [0x1F, 0x8B])
            #expect(query.json["error"]?["message"] == "`cpus` must be a number, got a string")
        }
    }

    @Test func overloadedQueueIs503WithRetryAfter() async throws {
        let backend = try FakeBackend()
        await backend.setOverloaded(true)
        try await withAPI(backend: backend) { client in
            let reply = try await client.call(.post, "/v1/projects/alpha/exec", json: ["command": "echo"])
            #expect(reply.status == .serviceUnavailable)
            #expect(reply.code == "overloaded")
            #expect(reply.header("Retry-After") == "7")
            let ready = try await client.call(.get, "/ready")
            #expect(ready.status == .serviceUnavailable)
            #expect(ready.json["checks"]?["queue"] == false)
        }
    }
}
