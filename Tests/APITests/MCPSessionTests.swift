import API
import Foundation
import HTTPTypes
import Host
import HummingbirdTesting
import Synchronization
import Testing

/// MCP sessions (`Mcp-Session-Id`): `initialize` opens one, each keeps its own read-state for
/// the file tools, an id works only for its project and token, `DELETE` ends it, the store
/// is bounded and expires idle sessions, and a request without the header stays stateless.
@Suite struct MCPSessionTests {
    static let configuration = APIConfiguration(port: 0, tokens: TestTokens.store)
    static let restart = "start a new session with initialize (without Mcp-Session-Id)"
    static let unknown = "no such MCP session for this token and project; \(restart)"

    /// The 404 body for a session the request may not use.
    static func notFound(_ reason: String, _ message: String) -> JSON {
        [
            "jsonrpc": "2.0", "id": .null,
            "error": [
                "code": -32001, "message": .string(message),
                "data": ["code": "session_not_found", "reason": .string(reason)],
            ],
        ]
    }

    @Test func initializeOpensASessionThatLaterRequestsName() async throws {
        let store = MCPSessionStore()
        try await withAPI(Self.configuration, backend: try FakeBackend(), files: FakeFiles(), mcpSessions: store) {
            client in
            let plain = MCPClient(client: client)
            let first = try await plain.send("initialize", ["protocolVersion": "2025-06-18"])
            #expect(first.status == .ok)
            #expect(first.json["result"]?["protocolVersion"] == "2025-06-18")
            let a = try #require(first.header("Mcp-Session-Id"))
            #expect(a.wholeMatch(of: /[0-9a-f]{8}-[0-9a-f]{32}/) != nil, "\(a)")
            #expect(a.hasPrefix(store.tag + "-"))
            let b = try #require(try await plain.send("initialize").header("Mcp-Session-Id"))
            #expect(a != b)
            #expect(
                Set(store.sessions.map { "\($0.id) \($0.project) \($0.principal)" }) == [
                    "\(a) alpha alpha", "\(b) alpha alpha",
                ])
            let session = plain.in(a)
            let note = try await session.notify("notifications/initialized")
            #expect(note.status == .accepted)
            let ping = try await session.send("ping", id: 7)
            #expect(ping.status == .ok)
            #expect(ping.json == ["jsonrpc": "2.0", "id": 7, "result": [:]])
            #expect(ping.header("Mcp-Session-Id") == nil)
            let bash = try await session.tool("bash", ["command": "echo hi"])
            #expect(bash["structuredContent"]?["stdout"] == "hi\n")
            #expect(bash["isError"] == false)
            // An initialize naming its session is answered in it and opens no other.
            let again = try await session.send("initialize", ["protocolVersion": "2025-11-25"])
            #expect(again.json["result"]?["protocolVersion"] == "2025-11-25")
            #expect(again.header("Mcp-Session-Id") == nil)
            // One inside a batch is answered without a session (the spec keeps it out of batches).
            let batch = try await client.call(
                .post, plain.path,
                json: [["jsonrpc": "2.0", "id": 1, "method": "initialize", "params": [:]]], token: TestTokens.alpha)
            #expect(batch.json.arrayCount == 1)
            #expect(batch.header("Mcp-Session-Id") == nil)
            #expect(store.count == 2)
            // A batch naming a session runs in it.
            let pings = try await client.call(
                .post, plain.path,
                json: [["jsonrpc": "2.0", "id": 1, "method": "ping"], ["jsonrpc": "2.0", "id": 2, "method": "ping"]],
                token: TestTokens.alpha, headers: ["Mcp-Session-Id": a])
            #expect(
                pings.json == [
                    ["jsonrpc": "2.0", "id": 1, "result": [:]], ["jsonrpc": "2.0", "id": 2, "result": [:]],
                ])
            // GET has no server-initiated stream, session or not.
            let get = try await client.call(
                .get, plain.path, token: TestTokens.alpha, headers: ["Mcp-Session-Id": a])
            #expect(get.status == .methodNotAllowed)
            #expect(get.header("Allow") == "POST, DELETE")
        }
    }

    /// The attack: two agents share a token; one reads a file, the other overwrites it
    /// without ever having seen it. Each session's read-state is its own.
    @Test func twoSessionsOnOneTokenNeverShareReadState() async throws {
        let files = try WorkspaceFiles()
        try files.put("alpha", "a.py", "print(1)\n")
        try await withAPI(Self.configuration, backend: try FakeBackend(), files: files) { client in
            let a = try await MCPClient(client: client).initialized()
            let b = try await MCPClient(client: client).initialized()
            let read = try await a.tool("read_file", ["path": "a.py"])
            #expect(read["isError"] == false)
            let edit: JSON = ["path": "a.py", "old_str": "print(1)", "new_str": "print(2)"]
            let refused = try await b.tool("edit_file", edit)
            #expect(refused["isError"] == true)
            #expect(
                refused["structuredContent"] == [
                    "code": "stale_file",
                    "message":
                        "`a.py` already exists and you have not read it. Read it with read_file first, then write or edit it.",
                ])
            #expect(try files.text("alpha", "a.py") == "print(1)\n")
            let edited = try await a.tool("edit_file", edit)
            #expect(edited["isError"] == false, "\(edited)")
            #expect(try files.text("alpha", "a.py") == "print(2)\n")
            // B reads and edits; A's read is now of an older version.
            #expect(try await b.tool("read_file", ["path": "a.py"])["isError"] == false)
            let bEdit = try await b.tool("edit_file", ["path": "a.py", "old_str": "print(2)", "new_str": "print(3)"])
            #expect(bEdit["isError"] == false, "\(bEdit)")
            let stale = try await a.tool("edit_file", ["path": "a.py", "old_str": "print(3)", "new_str": "print(4)"])
            #expect(stale["structuredContent"]?["code"] == "stale_file")
            #expect(
                stale["structuredContent"]?["message"]
                    == "`a.py` changed since you last read it (a command or another agent wrote it). Read it again with read_file and redo your change against the current content."
            )
            #expect(try files.text("alpha", "a.py") == "print(3)\n")
            let keys = Set(files.callers.withLock { $0 })
            #expect(keys == ["alpha/mcp:\(try #require(a.session))", "alpha/mcp:\(try #require(b.session))"])
        }
    }

    /// Clients that send no session id see no change: the token's read-state (or the one its
    /// `X-Session-Id` names), as before sessions existed; a session is not that caller.
    @Test func requestsWithoutTheHeaderStayStateless() async throws {
        let files = try WorkspaceFiles()
        try files.put("alpha", "a.py", "print(1)\n")
        try await withAPI(Self.configuration, backend: try FakeBackend(), files: files) { client in
            let plain = MCPClient(client: client)
            #expect(try await plain.tool("read_file", ["path": "a.py"])["isError"] == false)
            let session = try await MCPClient(client: client).initialized()
            let refused = try await session.tool(
                "edit_file", ["path": "a.py", "old_str": "print(1)", "new_str": "print(2)"])
            #expect(refused["structuredContent"]?["code"] == "stale_file")
            let edited = try await plain.tool(
                "edit_file", ["path": "a.py", "old_str": "print(1)", "new_str": "print(2)"])
            #expect(edited["isError"] == false, "\(edited)")
            let named = try await client.call(
                .post, plain.path,
                json: [
                    "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": ["name": "read_file", "arguments": ["path": "a.py"]],
                ], token: TestTokens.alpha, headers: ["X-Session-Id": "agent-7"])
            #expect(named.json["result"]?["isError"] == false)
            #expect(
                files.callers.withLock { $0 } == [
                    "alpha", "alpha/mcp:\(try #require(session.session))", "alpha", "alpha/agent-7",
                ])
            // DELETE without a session id has nothing to end.
            let delete = try await client.call(.delete, plain.path, token: TestTokens.alpha)
            #expect(delete.status == .methodNotAllowed)
            #expect(delete.header("Allow") == "POST, DELETE")
            #expect(delete.code == "method_not_allowed")
        }
    }

    @Test func unknownMalformedAndOtherServersSessionsAre404() async throws {
        let store = MCPSessionStore()
        try await withAPI(Self.configuration, backend: try FakeBackend(), mcpSessions: store) { client in
            let other = store.tag == "00000000" ? "11111111" : "00000000"
            let cases: [(String, JSON)] = [
                (store.tag + "-" + String(repeating: "0", count: 32), Self.notFound("unknown", Self.unknown)),
                ("not-a-session", Self.notFound("unknown", Self.unknown)),
                (String(repeating: "a", count: 2000), Self.notFound("unknown", Self.unknown)),
                (
                    other + "-" + String(repeating: "0", count: 32),
                    Self.notFound(
                        "other_server",
                        "this MCP session was opened on another Corral API server (another node, or this one before a restart) and sessions live in the memory of the server that opened them; \(Self.restart). Behind a load balancer, route requests by their Mcp-Session-Id header (docs/CLUSTER.md)"
                    )
                ),
            ]
            for (id, body) in cases {
                let post = try await MCPClient(client: client).in(id).send("ping")
                #expect(post.status == .notFound, "\(id)")
                #expect(post.json == body, "\(post.text)")
                let delete = try await MCPClient(client: client).in(id).delete()
                #expect(delete.status == .notFound)
                #expect(delete.json == body)
            }
            let metrics = try await client.call(.get, "/metrics", token: TestTokens.admin)
            #expect(metrics.text.contains("corral_mcp_session_misses_total{reason=\"unknown\"} 6"), "\(metrics.text)")
            #expect(metrics.text.contains("corral_mcp_session_misses_total{reason=\"other_server\"} 2"))
        }
    }

    @Test func deleteEndsTheSessionAndLaterUseIs404() async throws {
        let store = MCPSessionStore()
        let ended = Mutex<[String]>([])
        store.onEnd { session, reason in ended.withLock { $0.append("\(session.id) \(reason.rawValue)") } }
        try await withAPI(Self.configuration, backend: try FakeBackend(), mcpSessions: store) { client in
            let session = try await MCPClient(client: client).initialized()
            let id = try #require(session.session)
            #expect(try await session.send("ping").status == .ok)
            let delete = try await session.delete()
            #expect(delete.status == .noContent)
            #expect(delete.body.isEmpty)
            #expect(ended.withLock { $0 } == ["\(id) deleted"])
            #expect(store.count == 0)
            let deleted = Self.notFound("deleted", "this MCP session was ended by a DELETE; \(Self.restart)")
            let after = try await session.send("ping")
            #expect(after.status == .notFound)
            #expect(after.json == deleted)
            #expect(try await session.delete().json == deleted)
            #expect(ended.withLock { $0 } == ["\(id) deleted"])
            // Another token learns nothing of how it ended.
            let ops = MCPClient(client: client, token: TestTokens.admin).in(id)
            #expect(try await ops.send("ping").json == Self.notFound("unknown", Self.unknown))
            // Stateless requests go on working.
            #expect(try await MCPClient(client: client).send("ping").status == .ok)
        }
        // Whatever was still open when the server stopped ended with it: here, nothing.
        #expect(ended.withLock { $0 }.count == 1)
    }

    /// The attack: a session id that leaked (a log, another tenant's client) used with
    /// another token, or by the same token on another project. It answers as an id never
    /// issued, and the session goes on for its owner.
    @Test func aSessionWorksOnlyForItsProjectAndToken() async throws {
        try await withAPI(Self.configuration, backend: try FakeBackend(), files: FakeFiles()) { client in
            let mine = try await MCPClient(client: client).initialized()
            let id = try #require(mine.session)
            var elsewhere = MCPClient(client: client, project: "alpha2").in(id)
            #expect(try await elsewhere.send("ping").json == Self.notFound("unknown", Self.unknown))
            #expect(try await elsewhere.tool("bash", ["command": "echo x"]) == .null)
            #expect(try await elsewhere.delete().status == .notFound)
            let stranger = MCPClient(client: client, token: TestTokens.admin).in(id)
            let stolen = try await stranger.send("ping")
            #expect(stolen.status == .notFound)
            #expect(stolen.json == Self.notFound("unknown", Self.unknown))
            #expect(try await stranger.delete().json == Self.notFound("unknown", Self.unknown))
            // A token outside the project's globs is refused before any session is looked at.
            let beta = try await MCPClient(client: client, token: TestTokens.beta).in(id).send("ping")
            #expect(beta.status == .forbidden)
            #expect(try await mine.send("ping").status == .ok)
            // The owner's session goes on; alpha2 answers stateless requests as before.
            elsewhere.session = nil
            #expect(try await elsewhere.send("ping").status == .ok)
        }
    }

    /// A token's sessions past its bound end the unnamed first, then the least recently
    /// used; the server's bound refuses with Retry-After; idle sessions expire, but never
    /// under a running request; the rest end at shutdown.
    @Test func sessionsAreBoundedExpireWhenIdleAndEndAtShutdown() async throws {
        let clock = TestClock()
        let store = MCPSessionStore(maxSessions: 3, maxPerPrincipal: 2, idleTimeout: .seconds(60), now: clock.now)
        let ended = Mutex<[String]>([])
        store.onEnd { session, reason in ended.withLock { $0.append("\(session.id) \(reason.rawValue)") } }
        let survivor = Mutex("")
        let backend = try FakeBackend()
        try await withAPI(Self.configuration, backend: backend, mcpSessions: store) { client in
            let a = try await MCPClient(client: client).initialized()
            let b = try await MCPClient(client: client).initialized()
            #expect(try await b.send("ping").status == .ok)
            clock.advance(.seconds(1))
            #expect(try await a.send("ping").status == .ok)
            let c = try await MCPClient(client: client).initialized()
            let aID = try #require(a.session), bID = try #require(b.session), cID = try #require(c.session)
            #expect(ended.withLock { $0 } == ["\(bID) evicted"])
            #expect(
                try await b.send("ping").json
                    == Self.notFound(
                        "evicted",
                        "this MCP session was ended because its token opened another while holding 2, the most it may (the least recently used goes first); \(Self.restart)"
                    ))
            // c was never named by a request, so it goes before a, though a is older.
            let d = try await MCPClient(client: client).initialized()
            let dID = try #require(d.session)
            #expect(ended.withLock { $0 } == ["\(bID) evicted", "\(cID) evicted"])
            #expect(try await a.send("ping").status == .ok)
            #expect(try await d.send("ping").status == .ok)
            // The server's bound: another token's third session is refused, nothing ended.
            let ops = try await MCPClient(client: client, token: TestTokens.admin).initialized()
            clock.advance(.seconds(10))
            let refused = try await MCPClient(client: client, token: TestTokens.admin).send("initialize", id: 9)
            #expect(refused.status == .serviceUnavailable)
            #expect(refused.header("Retry-After") == "50")
            #expect(refused.header("Mcp-Session-Id") == nil)
            #expect(
                refused.json == [
                    "jsonrpc": "2.0", "id": 9,
                    "error": [
                        "code": -32000,
                        "message":
                            "this server holds 3 MCP sessions, its limit; retry in 50 s, or use the endpoint without a session (no Mcp-Session-Id)",
                        "data": ["code": "too_many_sessions", "retry_after": 50],
                    ],
                ])
            #expect(store.count == 3)
            // Idle for the timeout: a is found expired by its next request, and the sweep
            // ends d; ops, busy with a long call, outlives its timeout until the call ends.
            let busy = Task { try await ops.tool("bash", ["command": "sleep 1"]) }
            // Its job runs once the request is past the session check.
            while try await backend.jobService.depth().running == 0 { try await Task.sleep(for: .milliseconds(10)) }
            clock.advance(.seconds(50))
            #expect(
                try await a.send("ping").json
                    == Self.notFound(
                        "expired", "this MCP session expired after 60 s without a request; \(Self.restart)"))
            #expect(await store.sweep() == 1)
            #expect(ended.withLock { $0 }.suffix(2) == ["\(aID) expired", "\(dID) expired"])
            #expect(try await busy.value["structuredContent"]?["exit_code"] == 0)
            #expect(try await ops.send("ping").status == .ok)
            let opsID = try #require(ops.session)
            survivor.withLock { $0 = opsID }
        }
        #expect(ended.withLock { $0 }.last == "\(survivor.withLock { $0 }) shutdown")
        #expect(store.count == 0)
    }
}

/// JSON-RPC to the MCP endpoint as one client, naming its session once it has one.
struct MCPClient: Sendable {
    let client: any TestClientProtocol
    var project = "alpha"
    var token = TestTokens.alpha
    var session: String?

    init(client: any TestClientProtocol, project: String = "alpha", token: String = TestTokens.alpha) {
        self.client = client
        self.project = project
        self.token = token
    }

    var path: String { "/v1/projects/\(project)/mcp" }
    var headers: [String: String] { session.map { ["Mcp-Session-Id": $0] } ?? [:] }

    /// The same client naming session `id`.
    func `in`(_ id: String) -> MCPClient {
        var named = self
        named.session = id
        return named
    }

    func send(_ method: String, _ params: JSON = [:], id: JSON = 1) async throws -> Reply {
        try await client.call(
            .post, path, json: ["jsonrpc": "2.0", "id": id, "method": .string(method), "params": params], token: token,
            headers: headers)
    }

    func notify(_ method: String) async throws -> Reply {
        try await client.call(
            .post, path, json: ["jsonrpc": "2.0", "method": .string(method)], token: token, headers: headers)
    }

    /// A tool's result, or null when the call was refused.
    func tool(_ name: String, _ arguments: JSON) async throws -> JSON {
        try await send("tools/call", ["name": .string(name), "arguments": arguments]).json["result"] ?? .null
    }

    func delete() async throws -> Reply { try await client.call(.delete, path, token: token, headers: headers) }

    /// Initializes without a session id; the client returned names the session opened.
    func initialized() async throws -> MCPClient {
        var fresh = self
        fresh.session = nil
        let reply = try await fresh.send(
            "initialize",
            ["protocolVersion": "2025-06-18", "capabilities": [:], "clientInfo": ["name": "test", "version": "1"]])
        #expect(reply.status == .ok, "\(reply.text)")
        return fresh.in(try #require(reply.header("Mcp-Session-Id")))
    }
}

/// A clock the test moves by hand.
final class TestClock: Sendable {
    private let start = ContinuousClock.now
    private let offset = Mutex(Duration.zero)

    var now: @Sendable () -> ContinuousClock.Instant { { [self] in start + offset.withLock { $0 } } }

    func advance(_ by: Duration) { offset.withLock { $0 += by } }
}
