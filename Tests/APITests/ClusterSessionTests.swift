import Foundation
import Testing

/// Sessions through an API node: each lives on its project's owner, is reached from the node
/// with its owner's token checks intact, and after a failover is reported lost by the new
/// owner, never silently replaced.
extension ClusterAPITests {
    /// One call to the API node with an agent's token: the status and the JSON body.
    static func call(_ api: Node, _ method: String, _ path: String, _ body: String? = nil, token: String) -> (
        status: Int, json: [String: Any]
    ) {
        var args = ["-X", method, "-H", "Authorization: Bearer \(token)", "-w", "\n%{http_code}"]
        if let body { args += ["-H", "Content-Type: application/json", "--data-binary", body] }
        let text = Node.curl(args + ["http://127.0.0.1:\(api.port)\(path)"])
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let status = Int(lines.last ?? "") ?? 0
        let payload = Data(lines.dropLast().joined(separator: "\n").utf8)
        let json = (try? JSONSerialization.jsonObject(with: payload) as? [String: Any]) ?? ["raw": text]
        return (status, json)
    }

    static func code(_ json: [String: Any]) -> String? { (json["error"] as? [String: Any])?["code"] as? String }

    static func body(_ object: [String: Any]) -> String {
        String(decoding: try! JSONSerialization.data(withJSONObject: object), as: UTF8.self)
    }

    @Test func aSessionLivesOnTheOwnerKeepsItsStateAndIsReportedLostAfterAFailover() async throws {
        let tokens = """
            {"tokens": [{"name": "alice", "secret": "alice-secret-0123456789", "projects": ["*"]},
                        {"name": "bob", "secret": "bob-secret-0123456789", "projects": ["*"]}]}
            """
        let cluster = try Cluster(apiTokens: tokens)
        defer {
            cluster.stop()
            #expect(cluster.leftovers == [])
        }
        let api = cluster.api!
        let (alice, bob) = ("alice-secret-0123456789", "bob-secret-0123456789")
        let archive = try LiveArchive.make(["a.txt": "a\n"])
        defer { unlink(archive) }
        let uploaded = Node.curl([
            "-X", "PUT", "--data-binary", "@\(archive)", "-H", "Authorization: Bearer \(alice)",
            "http://127.0.0.1:\(api.port)/v1/projects/s1/archive",
        ])
        #expect(uploaded.contains("\"id\":\"s1\""), "\(uploaded)")
        let base = "/v1/projects/s1/sessions"

        // Created on the owner; cwd and variables persist between runs on it.
        let made = Self.call(api, "POST", base, #"{"kind": "shell"}"#, token: alice)
        #expect(made.status == 201, "\(made.json)")
        #expect(made.json["owner"] as? String == "alice", "\(made.json)")
        let session = try #require(made.json["session_id"] as? String, "\(made.json)")
        let first = Self.call(
            api, "POST", "\(base)/\(session)/run", #"{"input": "cd /tmp && export X=1"}"#, token: alice)
        #expect(first.json["status"] as? String == "completed" && first.json["exit_code"] as? Int == 0, "\(first)")
        let second = Self.call(api, "POST", "\(base)/\(session)/run", #"{"input": "echo $X; pwd"}"#, token: alice)
        #expect(second.json["stdout"] as? String == "1\n/tmp\n", "\(second)")
        #expect(second.json["cwd"] as? String == "/tmp", "\(second)")

        // A run outlasting its wait answers running; the node's long-poll, cancel and event
        // stream reach it on the owner.
        let long = Self.call(
            api, "POST", "\(base)/\(session)/run", Self.body(["input": "echo tick; sleep 30", "wait_s": 0.2]),
            token: alice)
        #expect(long.json["status"] as? String == "running", "\(long)")
        let run = try #require(long.json["run_id"] as? String, "\(long)")
        let polled = Self.call(api, "GET", "\(base)/\(session)/runs/\(run)?wait=10&since=0", token: alice)
        #expect(polled.json["output"] as? String == "tick\n" && polled.json["cursor"] as? Int == 5, "\(polled)")
        let busy = Self.call(api, "POST", "\(base)/\(session)/run", #"{"input": "true"}"#, token: alice)
        #expect(busy.status == 409 && Self.code(busy.json) == "session_busy", "\(busy)")
        let cancelled = Self.call(
            api, "POST", "\(base)/\(session)/runs/\(run)/cancel", #"{"signal": "INT"}"#, token: alice)
        #expect(cancelled.json["status"] as? String == "cancelled", "\(cancelled)")
        #expect(cancelled.json["stdout"] as? String == "tick\n", "\(cancelled)")
        let events = Node.curl([
            "-H", "Authorization: Bearer \(alice)", "http://127.0.0.1:\(api.port)\(base)/\(session)/runs/\(run)/events",
        ])
        #expect(events.contains("event: status\ndata: {\"status\":\"cancelled\"}"), "\(events)")
        #expect(events.contains("event: exit\n"), "\(events)")

        // Another token neither sees nor uses it.
        for (method, path) in [("GET", "\(base)/\(session)"), ("POST", "\(base)/\(session)/run")] {
            let tried = Self.call(api, method, path, #"{"input": "echo $X"}"#, token: bob)
            #expect(tried.status == 404 && Self.code(tried.json) == "session_not_found", "\(path): \(tried)")
        }
        #expect((Self.call(api, "GET", base, token: bob).json["sessions"] as? [Any])?.count == 0)
        #expect((Self.call(api, "GET", base, token: alice).json["sessions"] as? [Any])?.count == 1)

        // Restarted and deleted through the node.
        let other = try #require(Self.call(api, "POST", base, "{}", token: alice).json["session_id"] as? String)
        let restarted = Self.call(api, "POST", "\(base)/\(other)/restart", token: alice)
        #expect(restarted.status == 200 && restarted.json["state"] as? String == "idle", "\(restarted)")
        #expect(Self.call(api, "DELETE", "\(base)/\(other)", token: alice).status == 204)
        let deleted = Self.call(api, "GET", "\(base)/\(other)", token: alice)
        #expect(deleted.status == 404 && Self.code(deleted.json) == "session_not_found", "\(deleted)")

        // The owner dies; the project moves with its last write-back, not its sessions.
        let victim = cluster.owner("s1")
        let survivor = victim == "w1" ? "w2" : "w1"
        cluster.workers[victim]!.stop(SIGKILL)
        // Until the dead owner's lease (1.5 s) lapses a call may answer 503 and Retry-After,
        // which a client retries; the exec then runs on the survivor.
        var moved = Self.call(api, "POST", "/v1/projects/s1/exec", #"{"command": "cat a.txt"}"#, token: alice)
        for _ in 0..<50 where moved.status == 503 {
            try await Task.sleep(for: .milliseconds(200))
            moved = Self.call(api, "POST", "/v1/projects/s1/exec", #"{"command": "cat a.txt"}"#, token: alice)
        }
        #expect(moved.json["stdout"] as? String == "a\n", "\(moved)")
        #expect(cluster.owner("s1") == survivor)
        for (method, path) in [("POST", "\(base)/\(session)/run"), ("GET", "\(base)/\(session)")] {
            let lost = Self.call(api, method, path, #"{"input": "echo $X; pwd"}"#, token: alice)
            #expect(lost.status == 410 && Self.code(lost.json) == "session_lost", "\(path): \(lost)")
        }
        #expect((Self.call(api, "GET", base, token: alice).json["sessions"] as? [Any])?.count == 0)
        let fresh = Self.call(api, "POST", base, #"{"kind": "shell"}"#, token: alice)
        let replacement = try #require(fresh.json["session_id"] as? String, "\(fresh)")
        let clean = Self.call(
            api, "POST", "\(base)/\(replacement)/run", #"{"input": "echo \"[$X]\"; pwd"}"#, token: alice)
        #expect(clean.json["stdout"] as? String == "[]\n/workspace\n", "\(clean)")

        // Nobody owns the project once the survivor leaves too: the node itself answers.
        cluster.workers[survivor]!.stop(SIGTERM)
        #expect(cluster.owner("s1") == "")
        let gone = Self.call(api, "GET", "\(base)/\(replacement)", token: alice)
        #expect(gone.status == 410 && Self.code(gone.json) == "session_lost", "\(gone)")
        #expect((Self.call(api, "GET", base, token: alice).json["sessions"] as? [Any])?.count == 0)
        #expect(cluster.owner("s1") == "", "a call about a session leased the project")
    }
}
