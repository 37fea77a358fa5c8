import API
import Foundation
import HTTPTypes
import Host
import HummingbirdTesting
import Sandbox
import TestSupport
import Testing

/// Every endpoint over a real socket against a real host: real sandboxes, real processes.
@Suite(.serialized, .enabled(if: LiveHost.available, "needs root and rootfs/out/minimal (make rootfs-minimal)"))
struct LiveTests {
    @Test func projectLifecycleOverHTTP() async throws {
        try await LiveHost.run { client, _ in
            let upload = try await client.call(
                .put, "/v1/projects/second/archive?timeout_s=60", raw: try LiveHost.archive(["a.txt": "one\n"]))
            #expect(upload.status == .created)
            #expect(upload.json["limits"]?["timeout_s"] == "60")
            // A new project's upload materializes it; evicted, warm-up shows its progress.
            #expect(upload.json["state"] == "ready")
            #expect(try await client.call(.delete, "/v1/projects/second/workspace").json["evicted"] == true)
            let warm = try await client.call(
                .post, "/v1/projects/second/warm", headers: ["Accept": "text/event-stream"])
            let events = SSE.parse(warm.text)
            #expect(events.map(\.event).suffix(3) == ["progress", "progress", "project"])
            #expect(events.last?.data["state"] == "ready")
            #expect(events.last?.data["sandbox"] == true)
            let edit = try await client.call(.post, "/v1/projects/second/exec", json: ["command": "echo two >> a.txt"])
            #expect(edit.json["exit_code"] == 0)
            let snapshot = try await client.call(.post, "/v1/projects/second/snapshot")
            // a.txt and `.corral/.gitignore`, written with the project's home.
            #expect(snapshot.json["snapshot"]?["files"] == 2)
            let evict = try await client.call(.delete, "/v1/projects/second/workspace")
            #expect(evict.json["evicted"] == true)
            #expect(try await client.call(.get, "/v1/projects/second").json["state"] == "cold")
            let back = try await client.call(.post, "/v1/projects/second/exec", json: ["command": "cat a.txt"])
            #expect(back.json["stdout"] == "one\ntwo\n")
            let list = try await client.call(.get, "/v1/projects")
            guard case .array(let projects)? = list.json["projects"] else { Issue.record("no list"); return }
            #expect(Set(projects.compactMap { $0["id"]?.stringValue }) == ["demo", "second"])
            let file = try await client.call(.put, "/v1/projects/third", json: ["source": "file:///etc/passwd"])
            #expect(file.status == .unprocessableContent)
            #expect(file.code == "unsupported_source")
            let corrupt = try await client.call(.put, "/v1/projects/third/archive", raw: Array("garbage".utf8))
            #expect(corrupt.status == .unprocessableContent)
            #expect(try await client.call(.get, "/v1/projects/third").status == .notFound)
        }
    }

    @Test func commandsTimeoutsBudgetsAndCancelInRealSandboxes() async throws {
        try await LiveHost.run { client, _ in
            let exec = try await client.call(
                .post, "/v1/projects/demo/exec",
                json: [
                    "command": "sh hello.sh; echo err >&2; cat; echo $GREETING; pwd; exit 5", "stdin": "in\n",
                    "env": ["GREETING": "hey"], "cwd": "/workspace",
                ])
            #expect(exec.json["status"] == "completed")
            #expect(exec.json["exit_code"] == 5)
            #expect(exec.json["stdout"] == "hello from sh\nin\nhey\n/workspace\n")
            #expect(exec.json["stderr"] == "err\n")
            #expect(exec.json["oom_killed"] == false)
            let timeout = try await client.call(
                .post, "/v1/projects/demo/exec", json: ["command": "echo partial; sleep 30", "timeout_s": 1])
            #expect(timeout.json["status"] == "timed_out")
            #expect(timeout.json["exit_code"] == 124)
            #expect(timeout.json["output"] == "partial\n")
            #expect(
                timeout.json["message"]?.stringValue?.hasPrefix("The command did not finish within its timeout of 1 s")
                    == true)
            let above = try await client.call(
                .post, "/v1/projects/demo/exec", json: ["command": "true", "timeout_s": 100_000])
            #expect(above.status == .unprocessableContent)
            #expect(above.json["error"]?["message"] == "timeout 100000.0 s is above the project's maximum of 1800 s")
            let running = try await client.call(
                .post, "/v1/projects/demo/exec", json: ["command": "sleep 1; echo late", "wait_s": 0.2])
            #expect(running.json["status"] == "running")
            let id = try #require(running.json["job_id"]?.stringValue)
            let done = try await client.call(.get, "/v1/projects/demo/jobs/\(id)?wait=10&since=0")
            #expect(done.json["output"] == "late\n")
            let final = try await client.call(.get, "/v1/projects/demo/jobs/\(id)?wait=10&since=5")
            #expect(final.json["status"] == "completed")
            let cwd = try await client.call(.post, "/v1/projects/demo/exec", json: ["command": "pwd", "cwd": "../../"])
            #expect(cwd.json["status"] == "failed_to_start")
            let background = try await client.call(
                .post, "/v1/projects/demo/jobs", json: ["command": "echo started; sleep 60"])
            #expect(background.status == .accepted)
            let job = try #require(background.json["job_id"]?.stringValue)
            _ = try await client.call(.get, "/v1/projects/demo/jobs/\(job)?wait=5")
            let start = ContinuousClock.now
            let cancel = try await client.call(.post, "/v1/projects/demo/jobs/\(job)/cancel")
            #expect(cancel.json["status"] == "cancelled")
            #expect(ContinuousClock.now - start < .seconds(10))
            let events = try await client.call(.get, "/v1/projects/demo/jobs/\(job)/events")
            let parsed = SSE.parse(events.text)
            #expect(parsed.first { $0.event == "output" }?.data["text"] == "started\n")
            #expect(parsed.last?.event == "exit")
            #expect(parsed.last?.data["status"] == "cancelled")
        }
    }

    @Test func toolsOverHTTPRunInTheSandbox() async throws {
        let files = FakeFiles()
        files.put("demo", "hello.py", "print('hi')\n")
        try await LiveHost.run(files: files) { client, _ in
            let bash = try await client.call(
                .post, "/v1/projects/demo/tools/bash", json: ["command": "python3 -V 2>&1 || echo no python; id -u"])
            #expect(bash.json["isError"] == false)
            #expect(bash.json["structuredContent"]?["stdout"]?.stringValue?.hasSuffix("1000\n") == true)
            let start = try await client.call(
                .post, "/v1/projects/demo/tools/bash", json: ["command": "echo bg; sleep 30", "background": true])
            let id = try #require(start.json["structuredContent"]?["job_id"]?.stringValue)
            let output = try await client.call(
                .post, "/v1/projects/demo/tools/job_output", json: ["job_id": .string(id), "wait": 5])
            #expect(output.json["structuredContent"]?["output"] == "bg\n")
            let kill = try await client.call(.post, "/v1/projects/demo/tools/job_kill", json: ["job_id": .string(id)])
            #expect(kill.json["structuredContent"]?["status"] == "cancelled")
            let info = try await client.call(.post, "/v1/projects/demo/tools/project_info", json: [:])
            #expect(info.json["structuredContent"]?["state"] == "ready")
            #expect(info.json["structuredContent"]?["limits"]?["pids_max"] == "256")
            #expect(info.json["structuredContent"]?["limits"]?["pids"]?.stringValue?.hasPrefix("enforced by ") == true)
            #expect(info.json["structuredContent"]?["limits"]?["require_limits"] == "true")
            let read = try await client.call(.post, "/v1/projects/demo/tools/read_file", json: ["path": "hello.py"])
            #expect(read.json["content"] == [["type": "text", "text": "1\tprint('hi')"]])
        }
    }

    @Test func metricsCountCacheHitsMissesAndDownloadedBytes() async throws {
        try await LiveHost.run { client, host in
            // Uploaded (which materializes a new project) and not used yet: nothing counted.
            func metric(_ name: String) async throws -> String? {
                let text = try await client.call(.get, "/metrics").text
                return text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.map(String.init)
            }
            #expect(try await metric("corral_cache_hits_total") == "corral_cache_hits_total 0")
            #expect(try await metric("corral_cache_misses_total") == "corral_cache_misses_total 0")
            #expect(try await metric("corral_cache_downloaded_bytes_total") == "corral_cache_downloaded_bytes_total 0")
            let source = try await host.cache.status("demo").source
            let archive = await host.configuration.dataDirectory + "/cache/blobs/" + source.dropFirst("blob:".count)
            let size = try #require(try FileManager.default.attributesOfItem(atPath: archive)[.size] as? Int)
            // Cold: a miss that downloads the archive. Then warm: a hit that downloads nothing.
            try await host.evict("demo")
            #expect(try await client.call(.post, "/v1/projects/demo/warm").json["state"] == "ready")
            #expect(try await client.call(.post, "/v1/projects/demo/warm").json["state"] == "ready")
            #expect(try await metric("corral_cache_hits_total") == "corral_cache_hits_total 1")
            #expect(try await metric("corral_cache_misses_total") == "corral_cache_misses_total 1")
            #expect(
                try await metric("corral_cache_downloaded_bytes_total")
                    == "corral_cache_downloaded_bytes_total \(size)")
            // Sampling again adds nothing.
            #expect(try await metric("corral_cache_hits_total") == "corral_cache_hits_total 1")
            #expect(try await host.cache.counters == CacheCounters(hits: 1, misses: 1, downloadedBytes: Int64(size)))
        }
    }

    @Test func registeringASourceOnAPrivateAddressIs422ForbiddenAddress() async throws {
        try await LiveHost.run { client, _ in
            let metadata = try await client.call(
                .put, "/v1/projects/ssrf", json: ["source": "http://169.254.169.254/latest/meta-data/iam"])
            #expect(metadata.status == .unprocessableContent)
            #expect(metadata.code == "forbidden_address")
            #expect(
                metadata.json["error"]?["message"]
                    == "169.254.169.254 is a link-local address; http(s) sources may reach it only if allowed with --allow-source-host"
            )
            let missing = try await client.call(.get, "/v1/projects/ssrf")
            #expect(missing.status == .notFound)
        }
    }

    @Test func jobKillSendsTheSignalAskedForToTheWholeTree() async throws {
        try await LiveHost.run { client, _ in
            func background(_ command: String) async throws -> String {
                let start = try await client.call(
                    .post, "/v1/projects/demo/tools/bash", json: ["command": .string(command), "background": true])
                let id = try #require(start.json["structuredContent"]?["job_id"]?.stringValue)
                // Signals sent before the shell set its traps would not test them.
                let ready = try await client.call(.get, "/v1/projects/demo/jobs/\(id)?wait=10")
                #expect(ready.json["output"] == "ready\n")
                return id
            }
            // A job that handles Ctrl-C its own way: INT reaches it and its exit status is kept.
            let trapping = try await background(
                "trap 'echo got INT; exit 3' INT; echo ready; while :; do sleep 0.1; done")
            let kill = try await client.call(
                .post, "/v1/projects/demo/tools/job_kill", json: ["job_id": .string(trapping), "signal": "INT"])
            let result = try #require(kill.json["structuredContent"])
            #expect(result["status"] == "cancelled")
            #expect(result["exit_code"] == 3)
            #expect(result["signal"] == .null)
            #expect(result["stdout"] == "ready\ngot INT\n")
            #expect(
                ToolText.first(kill.json)
                    == "Job \(trapping) was stopped with SIGINT, then SIGKILL for anything left after the grace period; it and every process it started are gone.\nIts output:\nready\ngot INT\n[exit code 3]"
            )
            // KILL does not wait out the grace, even for a job that ignores TERM and INT.
            let stubborn = try await background("trap '' TERM INT; echo ready; sleep 60")
            let start = ContinuousClock.now
            let killed = try await client.call(
                .post, "/v1/projects/demo/jobs/\(stubborn)/cancel", json: ["signal": "KILL"])
            #expect(ContinuousClock.now - start < .milliseconds(1500))
            #expect(killed.json["status"] == "cancelled")
            #expect(killed.json["signal"] == 9)
            #expect(killed.json["exit_code"] == 137)
            let bad = try await client.call(
                .post, "/v1/projects/demo/jobs/\(stubborn)/cancel", json: ["signal": "STOP"])
            #expect(bad.status == .unprocessableContent)
            #expect(bad.json["error"]?["message"] == "`signal` must be one of TERM, INT, HUP, QUIT, KILL, got \"STOP\"")
        }
    }

    @Test func theHostsFileToolsBehindTheGateway() async throws {
        @Sendable func firstText(_ json: JSON) -> String? {
            guard case .array(let items)? = json["content"] else { return nil }
            return items.first?["text"]?.stringValue
        }
        try await LiveHost.run(realFiles: true) { client, _ in
            let read = try await client.call(.post, "/v1/projects/demo/tools/read_file", json: ["path": "hello.py"])
            #expect(read.json["isError"] == false)
            #expect(firstText(read.json)?.contains("1\tprint('hello from python')") == true)
            let edit = try await client.call(
                .post, "/v1/projects/demo/tools/edit_file",
                json: ["path": "hello.py", "old_str": "hello from python", "new_str": "edited"])
            #expect(edit.json["isError"] == false)
            let run = try await client.call(.post, "/v1/projects/demo/tools/bash", json: ["command": "cat hello.py"])
            #expect(run.json["structuredContent"]?["stdout"] == "print('edited')\n")
            let escape = try await client.call(
                .post, "/v1/projects/demo/tools/read_file", json: ["path": "../../etc/passwd"])
            #expect(escape.json["isError"] == true)
            #expect(escape.json["structuredContent"]?["code"] == "path_outside_project")
            let grep = try await client.call(
                .post, "/v1/projects/demo/tools/grep", json: ["pattern": "needle", "case_insensitive": true])
            #expect(firstText(grep.json)?.contains("notes.txt:1:a needle here") == true, "\(grep.text)")
            #expect(escape.status == .ok)
            // Wrong arguments to a file tool are refused as a command tool's are: 422.
            let badPattern = try await client.call(.post, "/v1/projects/demo/tools/grep", json: ["pattern": "("])
            #expect(badPattern.status == .unprocessableContent)
            #expect(badPattern.json["isError"] == true)
            #expect(badPattern.json["structuredContent"]?["code"] == "invalid_argument")
            let unknown = try await client.call(.post, "/v1/projects/demo/tools/read_file", json: ["paht": "x"])
            #expect(unknown.status == .unprocessableContent)
            #expect(unknown.json["structuredContent"]?["code"] == "invalid_argument")
        }
    }

    @Test func compatibilityEndpointsAgainstARealWorkspace() async throws {
        try await LiveHost.run { client, _ in
            let execute = try await client.call(
                .post, "/execute", json: ["project_id": "demo", "command": "sh hello.sh; exit 2"])
            #expect(execute.json == ["stdout": "hello from sh\n", "stderr": "", "return_code": 2])
            let read = try await client.call(
                .post, "/file/read", json: ["project_id": "demo", "file_path": "hello.py"])
            #expect(read.json == ["content": "print('hello from python')\n", "error": nil, "exists": true, "size": 27])
            let missing = try await client.call(
                .post, "/file/read", json: ["project_id": "demo", "file_path": "nope.txt"])
            #expect(
                missing.json == [
                    "content": "", "error": "not_found: nope.txt does not exist", "exists": false, "size": nil,
                ])
            let dir = try await client.call(
                .post, "/file/read", json: ["project_id": "demo", "file_path": "/workspace/src"])
            #expect(dir.json["error"] == "is_directory: /workspace/src is a directory")
            #expect(dir.json["content"] == "")
            // A symlink planted by a job reads the sandbox's own /etc, never the host's.
            _ = try await client.call(
                .post, "/execute", json: ["project_id": "demo", "command": "ln -s /etc/hostname host"])
            let link = try await client.call(.post, "/file/read", json: ["project_id": "demo", "file_path": "host"])
            let image = try String(contentsOfFile: LiveHost.rootfs + "/minimal/etc/hostname", encoding: .utf8)
            #expect(link.json["content"]?.stringValue == image)
            #expect(
                link.json["content"]?.stringValue != (try? String(contentsOfFile: "/etc/hostname", encoding: .utf8)))
            let search = try await client.call(.post, "/search", json: ["project_id": "demo", "query": "needle"])
            #expect(search.json["count"] == 2)
            let hits = search.json["results"]
            #expect(
                hits == [
                    ["file": "notes.txt", "line": 1, "text": "a needle here"],
                    ["file": "src/app.js", "line": 1, "text": "console.log('needle in js')"],
                ]
                    || hits == [
                        ["file": "src/app.js", "line": 1, "text": "console.log('needle in js')"],
                        ["file": "notes.txt", "line": 1, "text": "a needle here"],
                    ])
            let folded = try await client.call(
                .post, "/search",
                json: ["project_id": "demo", "query": "needle", "case_insensitive": true, "glob": "*.txt"])
            #expect(folded.json["count"] == 2)
            let injection = try await client.call(
                .post, "/search", json: ["project_id": "demo", "query": "\"; touch /workspace/pwned; echo \""])
            #expect(injection.json["count"] == 0)
            // A bad pattern is the answer, never an empty result; with max_results 1 the
            // search is cut by head, which is still a success.
            let badPattern = try await client.call(
                .post, "/search", json: ["project_id": "demo", "query": "(", "regex": true])
            #expect(badPattern.status == .unprocessableContent, "\(badPattern.text)")
            #expect(badPattern.json["error"]?["code"] == "invalid_argument")
            #expect(
                badPattern.json["error"]?["message"]?.stringValue?.hasPrefix(
                    "`query` is not a valid regular expression (") == true, "\(badPattern.text)")
            let literal = try await client.call(
                .post, "/search", json: ["project_id": "demo", "query": "log(", "glob": "*.js"])
            #expect(literal.status == .ok)
            #expect(
                literal.json["results"] == [["file": "src/app.js", "line": 1, "text": "console.log('needle in js')"]])
            let cut = try await client.call(
                .post, "/search", json: ["project_id": "demo", "query": "needle", "max_results": 1])
            #expect(cut.status == .ok, "\(cut.text)")
            #expect(cut.json["count"] == 1)
            #expect(cut.json["truncated"] == true)
            let check = try await client.call(
                .post, "/execute", json: ["project_id": "demo", "command": "test -e pwned; echo $?"])
            #expect(check.json["stdout"] == "1\n")
        }
    }

    @Test func operationsAndMetricsFromLoopback() async throws {
        let configuration = APIConfiguration(port: 0, tokens: TestTokens.store)
        try await LiveHost.run(configuration) { client, _ in
            let ready = try await client.call(.get, "/ready", token: TestTokens.alpha)
            #expect(ready.status == .ok, "\(ready.text)")
            #expect(ready.json["checks"] == ["blob_store": true, "cgroups": true, "queue": true, "rootfs": true])
            let status = try await client.call(.get, "/status", token: TestTokens.admin)
            #expect(status.json["cgroup_mode"] == "hybrid")
            #expect(status.json["projects"] == 1)
            // Over a real socket the peer is loopback: metrics need no token, but a user
            // token is still only a user's.
            let metrics = try await client.call(.get, "/metrics")
            #expect(metrics.status == .ok)
            #expect(metrics.text.contains("corral_http_requests_total"))
            #expect(try await client.call(.get, "/metrics", token: TestTokens.alpha).status == .forbidden)
            #expect(try await client.call(.get, "/v1/projects/demo").status == .unauthorized)
            #expect(try await client.call(.get, "/v1/projects/demo", token: TestTokens.beta).status == .forbidden)
            let exec = try await client.call(
                .post, "/v1/projects/demo/exec", json: ["command": "echo ok"], token: TestTokens.admin)
            #expect(exec.json["stdout"] == "ok\n")
            #expect(try await client.call(.get, "/health").json["status"] == "ok")
            #expect(try await client.call(.get, "/").json["service"] == "corral")
            let spec = try await client.call(.get, "/openapi.json", token: TestTokens.alpha)
            #expect(spec.body == OpenAPIDocument.bytes)
            let jobs = try await client.call(.get, "/v1/projects/demo/jobs?limit=5", token: TestTokens.admin)
            #expect(jobs.json["jobs"]?.arrayCount == 1)
            let tools = try await client.call(.get, "/v1/projects/demo/tools", token: TestTokens.admin)
            // bash, job_output, job_kill, project_info and python (no file tools in this host).
            #expect(tools.json["tools"]?.arrayCount == 5)
            let ping = try await client.call(
                .post, "/v1/projects/demo/mcp", json: ["jsonrpc": "2.0", "id": 1, "method": "ping"],
                token: TestTokens.admin)
            #expect(ping.json == ["jsonrpc": "2.0", "id": 1, "result": [:]])
        }
    }
}
