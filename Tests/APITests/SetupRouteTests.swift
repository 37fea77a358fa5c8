import Foundation
import HTTPTypes
import Host
import HummingbirdTesting
import Testing

@testable import API

/// The setup routes and fields over a fake host: where commands come in (a registration's
/// `setup`, an upload's form-encoded query, `PUT …/setup`), how they are checked, and the
/// event stream of `POST …/setup/run`. SetupTests runs them for real.
@Suite struct SetupRouteTests {
    @Test func commandsComeWithARegistrationAnUploadOrAlone() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            let registered = try await client.call(
                .put, "/v1/projects/alpha", json: ["source": "file:///src.tar.gz", "setup": ["pip install -r r.txt"]])
            #expect(registered.json["setup"] == ["status": "pending", "commands": ["pip install -r r.txt"]])
            // A registration without `setup` keeps them.
            let again = try await client.call(.put, "/v1/projects/alpha", json: ["source": "file:///src.tar.gz"])
            #expect(again.json["setup"]?["commands"] == ["pip install -r r.txt"], "\(again.text)")
            // The query is form-encoded: `+` is a space, `%2B` a plus.
            let gzip: [UInt8] = [0x1F, 0x8B, 0, 0]
            let uploaded = try await client.call(
                .put, "/v1/projects/beta/archive?setup=%5B%22npm+ci%22%2C%22g%2B%2B+-o+a+a.c%22%5D", raw: gzip)
            #expect(uploaded.json["setup"]?["commands"] == ["npm ci", "g++ -o a a.c"], "\(uploaded.text)")
            let kept = try await client.call(.put, "/v1/projects/beta/archive", raw: gzip)
            #expect(kept.json["setup"]?["commands"] == ["npm ci", "g++ -o a a.c"])
            let set = try await client.call(.put, "/v1/projects/beta/setup", json: ["commands": ["make deps"]])
            #expect(set.status == .ok && set.json["setup"]?["commands"] == ["make deps"], "\(set.text)")
            let cleared = try await client.call(.put, "/v1/projects/beta/setup", json: ["commands": []])
            #expect(cleared.json["setup"] == ["status": "none", "commands": []])
        }
    }

    @Test func aRunStreamsItsStagesThenTheProjectAndAFailureIsAResult() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            _ = try await client.call(.put, "/v1/projects/alpha/setup", json: ["commands": ["make", "false"]])
            let stream = try await client.call(
                .post, "/v1/projects/alpha/setup/run", headers: ["Accept": "text/event-stream"])
            let events = SSE.parse(stream.text)
            #expect(events.map(\.event) == Array(repeating: "progress", count: 6) + ["project"], "\(stream.text)")
            #expect(events.map { $0.data["stage"] }.prefix(3) == ["setup_started", "setup_command", "setup_output"])
            #expect(events[1].data == ["stage": "setup_command", "index": 1, "command": "make"])
            #expect(
                events[5].data == [
                    "stage": "setup_finished", "status": "failed", "exit_code": 1, "duration_ms": 1,
                ])
            #expect(events[6].data["setup"]?["status"] == "failed" && events[6].data["setup"]?["failed_command"] == 2)
            let plain = try await client.call(.post, "/v1/projects/alpha/setup/run")
            #expect(plain.status == .ok && plain.json["setup"]?["status"] == "failed", "\(plain.text)")
            let unknown = try await client.call(.post, "/v1/projects/nope/setup/run")
            #expect(unknown.status == .notFound && unknown.code == "project_not_found")
        }
    }

    @Test func badCommandsAreRefusedBeforeTheHostSeesThem() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            let cases: [(String, String)] = [
                (#"{"commands": "true"}"#, "`commands` must be an array, got a string"),
                (#"{"commands": [1]}"#, "`commands[0]` must be a string, got a number"),
                (#"{"commands": ["true", "  "]}"#, "`commands` [1] is empty; give each command as a string"),
                (#"{"commands": ["a\u0000b"]}"#, "`commands` [0] contains a NUL byte"),
                (#"{}"#, "`commands` is required"),
            ]
            for (body, message) in cases {
                let reply = try await client.call(.put, "/v1/projects/alpha/setup", raw: Array(body.utf8))
                #expect(reply.status == .unprocessableContent && reply.code == "invalid_argument", "\(reply.text)")
                #expect(reply.json["error"]?["message"]?.stringValue == message, "\(reply.text)")
            }
            let upload = try await client.call(
                .put, "/v1/projects/alpha/archive?setup=%5B%22%22%5D", raw: [0x1F, 0x8B, 0, 0])
            #expect(upload.json["error"]?["message"] == "`setup` [0] is empty; give each command as a string")
            let notJSON = try await client.call(
                .put, "/v1/projects/alpha/archive?setup=npm+ci", raw: [0x1F, 0x8B, 0, 0])
            #expect(notJSON.code == "invalid_argument", "\(notJSON.text)")
            // Nothing changed.
            #expect(
                try await client.call(.get, "/v1/projects/alpha").json["setup"] == ["status": "none", "commands": []])
        }
    }
}
