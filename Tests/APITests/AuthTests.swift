import API
import Foundation
import HTTPTypes
import Host
import HummingbirdTesting
import Testing

/// "Abusing the API": who may call what. No token or a wrong one is 401, a token used on
/// a project outside its globs or on an admin endpoint is 403, floods get 429.
@Suite struct AuthTests {
    static var configuration: APIConfiguration { APIConfiguration(port: 0, tokens: TestTokens.store) }

    /// The ids a `GET /v1/projects` reply lists, in order. A reply of another shape (no
    /// `projects`, not an array, an entry without a string `id`) fails the test here rather
    /// than reading as an empty list.
    static func projectIDs(_ reply: Reply) throws -> [String] {
        let items: [JSON]? =
            switch reply.json["projects"] {
            case .array(let items)?: items
            default: nil
            }
        return try #require(items, "\(reply.json)").map { try #require($0["id"]?.stringValue, "\($0)") }
    }

    @Test func withoutAValidTokenOnlyLivenessAnswers() async throws {
        try await withAPI(Self.configuration, backend: try FakeBackend()) { client in
            #expect(try await client.call(.get, "/health").status == .ok)
            #expect(try await client.call(.get, "/").status == .ok)
            for token in [nil, "wrong-token-0123456789", TestTokens.alpha + "x", ""] {
                for (method, path) in [
                    (HTTPRequest.Method.get, "/v1/projects/alpha"), (.post, "/v1/projects/alpha/exec"),
                    (.get, "/v1/projects"), (.get, "/ready"), (.get, "/status"), (.get, "/metrics"),
                    (.get, "/openapi.json"), (.post, "/execute"), (.post, "/v1/projects/alpha/mcp"),
                ] {
                    let reply = try await client.call(method, path, json: [:], token: token)
                    #expect(reply.status == .unauthorized, "\(method) \(path) with \(token ?? "no token")")
                    #expect(reply.code == "unauthorized")
                    #expect(reply.header("WWW-Authenticate") == "Bearer")
                }
            }
            let basic = try await client.call(
                .get, "/v1/projects/alpha", headers: ["Authorization": "Basic \(TestTokens.alpha)"])
            #expect(basic.status == .unauthorized)
        }
    }

    @Test func aTokenForProjectAIsForbiddenOnProjectB() async throws {
        let backend = try FakeBackend(projects: ["alpha", "alpha2", "beta"])
        try await withAPI(Self.configuration, backend: backend) { client in
            let alpha = TestTokens.alpha
            #expect(try await client.call(.get, "/v1/projects/alpha", token: alpha).status == .ok)
            #expect(try await client.call(.get, "/v1/projects/alpha2", token: alpha).status == .ok)
            let denied: [(HTTPRequest.Method, String, JSON)] = [
                (.get, "/v1/projects/beta", [:]), (.post, "/v1/projects/beta/exec", ["command": "echo"]),
                (.put, "/v1/projects/beta", ["source": "file:///x"]),
                (.post, "/v1/projects/beta/tools/bash", ["command": "echo"]),
                (.post, "/v1/projects/beta/mcp", ["jsonrpc": "2.0", "id": 1, "method": "ping"]),
                (.delete, "/v1/projects/beta/workspace", [:]), (.get, "/v1/projects/beta/jobs", [:]),
                (.post, "/execute", ["project_id": "beta", "command": "echo"]),
                (.post, "/file/read", ["project_id": "beta", "file_path": "x"]),
                (.post, "/search", ["project_id": "beta", "query": "x"]),
            ]
            for (method, path, body) in denied {
                let reply = try await client.call(method, path, json: body, token: alpha)
                #expect(reply.status == .forbidden, "\(method) \(path)")
                #expect(reply.json["error"]?["message"] == "token \"alpha\" may not use project \"beta\"")
            }
            // The list holds only the token's own projects; the admin token sees all three.
            #expect(try Self.projectIDs(await client.call(.get, "/v1/projects", token: alpha)) == ["alpha", "alpha2"])
            #expect(
                try Self.projectIDs(await client.call(.get, "/v1/projects", token: TestTokens.admin))
                    == ["alpha", "alpha2", "beta"])
        }
    }

    @Test func adminEndpointsNeedAnAdminToken() async throws {
        try await withAPI(Self.configuration, backend: try FakeBackend()) { client in
            for path in ["/status", "/metrics"] {
                let user = try await client.call(.get, path, token: TestTokens.alpha)
                #expect(user.status == .forbidden, "\(path)")
                #expect(user.json["error"]?["message"] == "this endpoint needs an admin token")
                #expect(try await client.call(.get, path, token: TestTokens.admin).status == .ok)
            }
            let status = try await client.call(.get, "/status", token: TestTokens.admin)
            #expect(status.json["api"]?["tokens"] == 4)
            #expect(status.json["api"]?["open"] == false)
            #expect(try await client.call(.get, "/ready", token: TestTokens.alpha).status == .ok)
            #expect(try await client.call(.get, "/openapi.json", token: TestTokens.alpha).status == .ok)
        }
    }

    @Test func aFloodFromOneTokenGets429WithRetryAfterAndOthersAreUnaffected() async throws {
        try await withAPI(Self.configuration, backend: try FakeBackend()) { client in
            var statuses: [HTTPResponse.Status] = []
            var last: Reply?
            for _ in 0..<5 {
                let reply = try await client.call(.get, "/v1/projects/alpha", token: TestTokens.slow)
                statuses.append(reply.status)
                last = reply
            }
            #expect(statuses.prefix(3).allSatisfy { $0 == .ok })
            #expect(statuses.last == .tooManyRequests)
            let refused = try #require(last)
            #expect(refused.code == "rate_limited")
            #expect(refused.header("Retry-After") == "1")
            #expect(refused.header("X-RateLimit-Limit") == "3")
            #expect(refused.header("X-RateLimit-Remaining") == "0")
            #expect(refused.header("X-Request-Id") != nil)
            let other = try await client.call(.get, "/v1/projects/alpha", token: TestTokens.alpha)
            #expect(other.status == .ok)
            #expect(other.header("X-RateLimit-Limit") == "100")
        }
    }

    @Test func anOpenServerMayOnlyListenOnLoopback() throws {
        #expect(throws: ConfigurationError.self) { try APIConfiguration(host: "0.0.0.0").validate() }
        #expect(throws: ConfigurationError.self) { try APIConfiguration(host: "10.1.2.3").validate() }
        try APIConfiguration(host: "127.0.0.1").validate()
        try APIConfiguration(host: "::1").validate()
        try APIConfiguration(host: "0.0.0.0", tokens: TestTokens.store).validate()
        #expect(try APIConfiguration.parseBind("[::1]:9000") == ("::1", 9000))
        #expect(throws: ConfigurationError.self) { try APIConfiguration.parseBind("localhost") }
    }

    @Test func tokensFilesAreCheckedStrictly() throws {
        let dir = try TemporaryFile()
        func load(_ text: String) throws -> TokenStore {
            try text.write(toFile: dir.path, atomically: true, encoding: .utf8)
            return try TokenStore.load(path: dir.path)
        }
        let store = try load(
            #"{"tokens": [{"name": "a", "secret": "0123456789abcdef", "projects": ["p-*"], "rate": {"per_second": 2}}]}"#
        )
        #expect(store.authenticate("0123456789abcdef")?.name == "a")
        #expect(store.authenticate("0123456789abcdeF") == nil)
        #expect(store.authenticate("0123456789abcdef")?.rate == RateLimit(perSecond: 2, burst: 4))
        let cases: [(String, String)] = [
            (#"{"tokens": [{"name": "a", "secret": "short", "projects": ["*"]}]}"#, "must be at least 16 characters"),
            (
                #"{"tokens": [{"name": "a", "secret": "0123456789abcdef", "projects": []}]}"#,
                "must list at least one glob"
            ),
            (
                #"{"tokens": [{"name": "a", "secret": "0123456789abcdef", "projects": ["*"], "admn": true}]}"#,
                "`admn` is not a field of tokens[0]"
            ),
            (
                #"{"tokens": [{"name": "a", "secret": "0123456789abcdef", "projects": ["*"], "admin": "yes"}]}"#,
                "`admin` must be true or false"
            ),
            (#"{"tokens": {}}"#, "`tokens` must be an array"),
            (#"{"tokens": [1]}"#, "`tokens[0]` must be a JSON object"),
        ]
        for (text, message) in cases {
            do {
                _ = try load(text)
                Issue.record("accepted \(text)")
            } catch let error as TokenFileError {
                #expect(error.description.contains(message), "\(error.description)")
            }
        }
    }

    @Test func globsMatchWholeIDs() {
        #expect(Principal(name: "t", projects: ["team-*"], admin: false).may(project: "team-a"))
        #expect(!Principal(name: "t", projects: ["team-*"], admin: false).may(project: "xteam-a"))
        #expect(Principal(name: "t", projects: ["a?c"], admin: false).may(project: "abc"))
        #expect(!Principal(name: "t", projects: ["a?c"], admin: false).may(project: "abbc"))
        #expect(Principal(name: "t", projects: ["*-*-x"], admin: false).may(project: "a-b-c-x"))
        #expect(!Principal(name: "t", projects: ["beta"], admin: false).may(project: "beta2"))
    }

    @Test func aTokensPoliciesAreAListOfPolicyNamesOrGlobs() throws {
        let file = try TemporaryFile()
        func load(_ token: String) throws -> TokenStore {
            try #"{"tokens": [{"name": "a", "secret": "0123456789abcdef", "projects": ["*"]\#(token)}]}"#.write(
                toFile: file.path, atomically: true, encoding: .utf8)
            return try TokenStore.load(path: file.path)
        }
        #expect(
            try load(#", "policies": ["default", "python-*"]"#).authenticate("0123456789abcdef")?.policies == [
                "default", "python-*",
            ])
        #expect(try load("").authenticate("0123456789abcdef")?.policies == nil)
        #expect(try load(#", "policies": []"#).authenticate("0123456789abcdef")?.policies == [])
        let expected = #"must be a list of policy names or globs, like ["default", "python-*"]"#
        let cases: [(String, String)] = [
            (#", "policies": "default""#, "`tokens[0].policies` \(expected), got a string"),
            (#", "policies": {"default": true}"#, "`tokens[0].policies` \(expected), got an object"),
            (#", "policies": ["default", 3]"#, "`tokens[0].policies[1]` must be a string, got a number"),
            (
                #", "policies": ["Python-*"]"#,
                #"`tokens[0].policies[0]` must be a policy name or glob of lowercase letters, digits, '.', '_', '-', '*' and '?', got "Python-*""#
            ),
            (
                #", "policies": [""]"#,
                #"`tokens[0].policies[0]` must be a policy name or glob of lowercase letters, digits, '.', '_', '-', '*' and '?', got """#
            ),
            (
                #", "admin": true, "policies": ["default"]"#,
                "`tokens[0].policies` has no effect on an admin token, which may use every policy; remove it"
            ),
        ]
        for (token, message) in cases {
            do {
                _ = try load(token)
                Issue.record("accepted \(token)")
            } catch let error as TokenFileError {
                #expect(error.description == "\(file.path): \(message)")
            }
        }
    }

    @Test func policyGlobsMatchWholeNamesAndAdminsMayUseAny() {
        let agent = Principal(name: "t", projects: ["*"], admin: false)
        #expect(agent.may(policy: "default", defaultPolicy: "default"))
        #expect(!agent.may(policy: "open", defaultPolicy: "default"))
        #expect(agent.may(policy: "sandboxed", defaultPolicy: "sandboxed"))
        #expect(!agent.may(policy: "default", defaultPolicy: "sandboxed"))
        let python = Principal(name: "t", projects: ["*"], admin: false, policies: ["default", "python-*"])
        #expect(python.may(policy: "python-3.12", defaultPolicy: "default"))
        #expect(!python.may(policy: "xpython-3", defaultPolicy: "default"))
        #expect(
            !Principal(name: "t", projects: ["*"], admin: false, policies: []).may(
                policy: "default", defaultPolicy: "default"))
        #expect(Principal.anonymous.may(policy: "anything", defaultPolicy: "default"))
        #expect(Principal(name: "ops", projects: ["*"], admin: true).may(policy: "open", defaultPolicy: "default"))
    }
}

/// A path for a temporary file, removed at deinit.
final class TemporaryFile {
    let path = NSTemporaryDirectory() + "/corral-test-\(UUID().uuidString)"
    deinit { try? FileManager.default.removeItem(atPath: path) }
}
