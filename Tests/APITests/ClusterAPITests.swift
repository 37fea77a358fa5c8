import Foundation
import Sandbox
import Synchronization
import TestSupport
import Testing

/// The cluster as operators run it: a real `redis-server`, two `corral worker` processes
/// with sandboxes and a `corral api` node, all separate processes talking HTTP and Redis
/// on loopback, sharing one blob directory. Calls go to the API node only.
@Suite(.serialized, .enabled(if: RedisServer.isAvailable, "needs redis-server (make test installs it)"))
struct ClusterAPITests {
    /// One `corral` process serving HTTP on a loopback port.
    final class Node: @unchecked Sendable {
        let name: String
        let port: Int
        let process = Process()

        /// Where the process's log goes: a node that fails to start says why there.
        let log: String

        init(_ name: String, arguments: [String], port: Int, token: String, log: String) throws {
            self.name = name
            self.port = port
            self.log = log
            process.executableURL = URL(fileURLWithPath: HostCrashTests.corral)
            process.arguments = arguments
            process.environment = ["CORRAL_WORKER_TOKEN": token, "PATH": "/usr/bin:/bin"]
            // A restarted node appends to its log, so a failure shows both runs.
            try ProcessLog.run(process, loggingTo: log)
            for _ in 0..<400 {
                if Self.curl(["http://127.0.0.1:\(port)/health"]).contains("ok") { return }
                if !process.isRunning { break }
                usleep(50_000)
            }
            let error = ProcessLog.failure(name, port: port, process: process, log: log)
            stop(SIGKILL)
            throw error
        }

        static func curl(_ args: [String]) -> String {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            p.arguments = ["-s", "--max-time", "60"] + args
            let out = Pipe()
            p.standardOutput = out
            guard (try? p.run()) != nil else { return "" }
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            return String(decoding: data, as: UTF8.self)
        }

        func json(_ method: String, _ path: String, _ body: String? = nil) -> [String: Any] {
            var args = ["-X", method, "http://127.0.0.1:\(port)\(path)"]
            if let body { args += ["-H", "Content-Type: application/json", "--data-binary", body] }
            let text = Self.curl(args)
            return (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? ["raw": text]
        }

        func stop(_ signal: Int32) {
            guard process.isRunning else { return }
            kill(process.processIdentifier, signal)
            process.waitUntilExit()
        }
    }

    /// Redis, the shared blob directory, two workers and an API node.
    final class Cluster: @unchecked Sendable {
        let dir: TemporaryDirectory
        let redis: RedisServer
        let prefix = "t\(getpid())x\(UInt32.random(in: 0...UInt32.max))"
        let token = "cluster-token-\(UUID().uuidString)"
        /// Each worker's is this plus `-<name>`; one per cluster, because a worker stopped
        /// cleanly removes its prefix, which must not be another cluster's (suites that make
        /// clusters may run in parallel).
        let cgroupPrefix = TestCgroups.ownPrefix + "-cluster-" + UUID().uuidString.prefix(8).lowercased()
        var workers: [String: Node] = [:]
        var api: Node!

        /// `apiTokens`: the API node's tokens file (the node is open without one); `policies`:
        /// more policy files beside the default, by name.
        init(apiTokens: String? = nil, policies extra: [String: String] = [:]) throws {
            dir = try TemporaryDirectory()
            redis = try RedisServer()
            let policies = dir.path + "/policies"
            try FileManager.default.createDirectory(atPath: policies, withIntermediateDirectories: true)
            try "rootfs = \"minimal\"\n[limits]\nworkspace = \"64MiB\"\n".write(
                toFile: policies + "/default.toml", atomically: true, encoding: .utf8)
            for (name, text) in extra {
                try text.write(toFile: policies + "/\(name).toml", atomically: true, encoding: .utf8)
            }
            do {
                for name in ["w1", "w2"] { try startWorker(name) }
                if let apiTokens {
                    try apiTokens.write(toFile: dir.path + "/tokens.json", atomically: true, encoding: .utf8)
                }
                try startAPI(tokens: apiTokens == nil ? nil : dir.path + "/tokens.json")
            } catch {
                stop()
                throw error
            }
        }

        func startAPI(tokens: String? = nil) throws {
            let port = try LoopbackPort.free()
            api = try Node(
                "api",
                arguments: [
                    "api", "--bind", "127.0.0.1:\(port)", "--redis", redis.url, "--key-prefix", prefix,
                    "--lease-ms", "1500", "--data-dir", dir.path + "/api", "--log-format", "text",
                ] + (tokens.map { ["--tokens", $0] } ?? []), port: port, token: token, log: dir.path + "/api.log")
        }

        func startWorker(_ name: String) throws {
            let port = try LoopbackPort.free()
            workers[name] = try Node(
                name,
                arguments: [
                    "worker", "--name", name, "--bind", "127.0.0.1:\(port)", "--redis", redis.url, "--key-prefix",
                    prefix, "--lease-ms", "1500", "--blob-dir", dir.path + "/blobs", "--data-dir",
                    dir.path + "/" + name, "--policies-dir", dir.path + "/policies", "--rootfs-dir",
                    TestPaths.rootfsDirectory, "--cgroup-prefix", "\(cgroupPrefix)-\(name)", "--log-format", "text",
                    "--shutdown-grace", "5",
                ], port: port, token: token, log: dir.path + "/\(name).log")
        }

        /// Redis as the test sees it, through redis-cli.
        func redisGet(_ args: [String]) -> String {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/redis-cli")
            p.arguments = ["-p", String(redis.port)] + args
            let out = Pipe()
            p.standardOutput = out
            guard (try? p.run()) != nil else { return "" }
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }

        func owner(_ project: String) -> String { redisGet(["GET", "\(prefix):owner:\(project)"]) }
        func jobHost(_ id: String) -> String { redisGet(["HGET", "\(prefix):job:\(id)", "host"]) }

        func upload(_ project: String, _ files: [String: String]) throws -> [String: Any] {
            let archive = try LiveArchive.make(files)
            defer { unlink(archive) }
            let text = Node.curl([
                "-X", "PUT", "--data-binary", "@\(archive)",
                "http://127.0.0.1:\(api.port)/v1/projects/\(project)/archive",
            ])
            return (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? ["raw": text]
        }

        func exec(_ project: String, _ command: String) -> [String: Any] {
            let body = String(
                decoding: try! JSONSerialization.data(withJSONObject: ["command": command]), as: UTF8.self)
            return api.json("POST", "/v1/projects/\(project)/exec", body)
        }

        func tool(_ project: String, _ name: String, _ arguments: [String: Any]) -> [String: Any] {
            let body = String(decoding: try! JSONSerialization.data(withJSONObject: arguments), as: UTF8.self)
            return api.json("POST", "/v1/projects/\(project)/tools/\(name)", body)
        }

        /// Stops everything; the sandboxes of a killed worker are found by their cgroups.
        func stop() {
            api?.stop(SIGKILL)
            for worker in workers.values { worker.stop(SIGTERM) }
            for name in ["w1", "w2"] { TestCgroups.remove(prefix: "\(cgroupPrefix)-\(name)") }
            redis.stop()
            dir.remove()
        }

        /// Mounts, loop devices' backing files and cgroups of this cluster still present.
        var leftovers: [String] {
            let mounts = (try? KernelFile.read("/proc/self/mountinfo")) ?? ""
            var found = mounts.split(separator: "\n").filter { $0.contains(dir.path + "/") }.map(String.init)
            for root in ["/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/memory", "/sys/fs/cgroup"] {
                for name in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
                where name.hasPrefix(cgroupPrefix) {
                    found.append(root + "/" + name)
                }
            }
            return found
        }
    }

    static func text(_ reply: [String: Any]) -> String? {
        ((reply["content"] as? [[String: Any]])?.first?["text"] as? String)
    }

    @Test func twentyProjectsSpreadOverBothWorkersAndEveryCallLandsOnTheOwner() throws {
        let cluster = try Cluster()
        defer {
            cluster.stop()
            #expect(cluster.leftovers == [])
        }
        var owners: [String: String] = [:]
        for n in 0..<20 {
            let project = "p\(n)"
            let created = try cluster.upload(project, ["name.txt": "\(project)\n"])
            #expect(created["id"] as? String == project, "\(created)")
            let ran = cluster.exec(project, "cat name.txt")
            #expect(ran["status"] as? String == "completed", "\(ran)")
            #expect(ran["stdout"] as? String == "\(project)\n", "\(ran)")
            owners[project] = cluster.owner(project)
            let job = try #require(ran["job_id"] as? String)
            #expect(cluster.jobHost(job) == owners[project], "job \(job) of \(project) ran off its owner")
        }
        // The least-loaded worker gets each new project: ten each.
        #expect(owners.values.filter { $0 == "w1" }.count == 10, "\(owners)")
        #expect(owners.values.filter { $0 == "w2" }.count == 10, "\(owners)")

        // A file call and a job see the same workspace: both went to the owner.
        for project in ["p0", "p1"] {
            let wrote = cluster.tool(project, "write_file", ["path": "note.txt", "content": "from \(project)\n"])
            #expect(wrote["isError"] as? Bool == false, "\(wrote)")
            let cat = cluster.exec(project, "cat note.txt")
            #expect(cat["stdout"] as? String == "from \(project)\n", "\(cat)")
            let read = cluster.tool(project, "read_file", ["path": "name.txt"])
            #expect(Self.text(read) == "     1\t\(project)", "\(read)")
        }
        // job_kill's signal travels through Redis to the owner: INT reaches the job's trap.
        let started = cluster.tool(
            "p2", "bash",
            ["command": "trap 'echo got INT; exit 3' INT; echo ready; while :; do sleep 0.1; done", "background": true])
        let trapping = try #require((started["structuredContent"] as? [String: Any])?["job_id"] as? String)
        let ready = cluster.api.json("GET", "/v1/projects/p2/jobs/\(trapping)?wait=10")
        #expect(ready["output"] as? String == "ready\n", "\(ready)")
        let killed = cluster.tool("p2", "job_kill", ["job_id": trapping, "signal": "INT"])
        let result = killed["structuredContent"] as? [String: Any]
        #expect(result?["status"] as? String == "cancelled", "\(killed)")
        #expect(result?["exit_code"] as? Int == 3, "\(killed)")
        #expect(result?["stdout"] as? String == "ready\ngot INT\n", "\(killed)")
        // Model-facing errors come back from the owner as they are.
        let missing = cluster.tool("p0", "read_file", ["path": "absent.txt"])
        #expect(missing["isError"] as? Bool == true)
        #expect((missing["structuredContent"] as? [String: Any])?["code"] as? String == "not_found", "\(missing)")
        // A project the cluster does not know is not leased to anyone.
        let unknown = cluster.api.json("GET", "/v1/projects/nope")
        #expect((unknown["error"] as? [String: Any])?["code"] as? String == "project_not_found", "\(unknown)")
        #expect(cluster.owner("nope") == "")
        let info = cluster.api.json("GET", "/v1/projects/p3")
        #expect(info["state"] as? String == "ready", "\(info)")
        let listed = cluster.api.json("GET", "/v1/projects")
        #expect((listed["projects"] as? [[String: Any]])?.count == 20)
    }

    @Test func killingAWorkerMovesItsProjectsWithTheirLastSnapshotAndInterruptsItsRunningJob() throws {
        let cluster = try Cluster()
        defer {
            cluster.stop()
            #expect(cluster.leftovers == [])
        }
        for n in 0..<4 {
            _ = try cluster.upload("k\(n)", ["name.txt": "k\(n)\n"])
            let wrote = cluster.tool("k\(n)", "write_file", ["path": "saved.txt", "content": "saved k\(n)\n"])
            #expect(wrote["isError"] as? Bool == false, "\(wrote)")
            let snap = cluster.api.json("POST", "/v1/projects/k\(n)/snapshot")
            #expect((snap["snapshot"] as? [String: Any])?["key"] as? String == "snapshots/k\(n).tar.zst", "\(snap)")
        }
        let victim = cluster.owner("k0")
        let survivor = victim == "w1" ? "w2" : "w1"
        let moving = (0..<4).map { "k\($0)" }.filter { cluster.owner($0) == victim }
        #expect(moving.count == 2)
        // A job running on the victim when it dies is reported, never re-run.
        let submitted = cluster.api.json("POST", "/v1/projects/k0/jobs", #"{"command": "echo started; sleep 60"}"#)
        let job = try #require(submitted["job_id"] as? String, "\(submitted)")
        let running = cluster.api.json("GET", "/v1/projects/k0/jobs/\(job)?wait=10&since=0")
        #expect(running["status"] as? String == "running", "\(running)")

        cluster.workers[victim]!.stop(SIGKILL)
        for project in moving {
            // Within the lease (1.5 s) and one job: the first exec may wait for the lease.
            let ran = cluster.exec(project, "cat saved.txt name.txt")
            #expect(ran["status"] as? String == "completed", "\(ran)")
            #expect(ran["stdout"] as? String == "saved \(project)\n\(project)\n", "\(ran)")
            #expect(cluster.owner(project) == survivor)
        }
        let after = cluster.api.json("GET", "/v1/projects/k0/jobs/\(job)?wait=10")
        #expect(after["status"] as? String == "interrupted", "\(after)")
    }

    @Test func aGracefulShutdownHandsProjectsOverWithTheirUnsavedChanges() throws {
        let cluster = try Cluster()
        defer {
            cluster.stop()
            #expect(cluster.leftovers == [])
        }
        for n in 0..<2 { _ = try cluster.upload("g\(n)", ["name.txt": "g\(n)\n"]) }
        let leaving = cluster.owner("g0")
        let staying = leaving == "w1" ? "w2" : "w1"
        // Changed after the last write-back: only the hand-over can carry it.
        let wrote = cluster.tool("g0", "write_file", ["path": "late.txt", "content": "written late\n"])
        #expect(wrote["isError"] as? Bool == false, "\(wrote)")
        cluster.workers[leaving]!.stop(SIGTERM)
        #expect(cluster.workers[leaving]!.process.terminationStatus == 0)
        #expect(cluster.owner("g0") == "")
        let read = cluster.tool("g0", "read_file", ["path": "late.txt"])
        #expect(Self.text(read) == "     1\twritten late", "\(read)")
        #expect(cluster.owner("g0") == staying)
        // The host that left comes back with its data (its old copy of g0 still on disk),
        // g0 changes on the other, and then moves back: the old copy must not be served.
        try cluster.startWorker(leaving)
        let changed = cluster.tool("g0", "write_file", ["path": "late.txt", "content": "changed on \(staying)\n"])
        #expect(changed["isError"] as? Bool == false, "\(changed)")
        cluster.workers[staying]!.stop(SIGTERM)
        let back = cluster.tool("g0", "read_file", ["path": "late.txt"])
        #expect(Self.text(back) == "     1\tchanged on \(staying)", "\(back)")
        #expect(cluster.owner("g0") == leaving)
        // The status of the cluster counts what is left.
        let status = cluster.api.json("GET", "/status")
        #expect((status["worker_slots"] as? [String: Any])?["workers"] as? Int == 1, "\(status)")
        #expect(status["projects"] as? Int == 2, "\(status)")
    }
}

extension ClusterAPITests {
    @Test func redisRestartedMidLoadLosesNoAcceptedJobAndRunsNoneTwice() throws {
        let cluster = try Cluster()
        defer {
            cluster.stop()
            #expect(cluster.leftovers == [])
        }
        let projects = ["r0", "r1", "r2", "r3"]
        for project in projects { _ = try cluster.upload(project, ["name.txt": "\(project)\n"]) }
        /// Submits job `i`, which appends its number to ran.txt: the node's reply, as text.
        let port = cluster.api.port
        @Sendable func submit(_ i: Int) -> String {
            Node.curl([
                "-X", "POST", "http://127.0.0.1:\(port)/v1/projects/\(projects[i % projects.count])/jobs", "-H",
                "Content-Type: application/json", "--data-binary",
                #"{"command": "echo \#(i) >> ran.txt; echo job \#(i)"}"#,
            ])
        }
        // Submissions keep coming while Redis is killed and started again.
        let replies = Mutex<[Int: String]>([:])
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) {
            for i in 0..<60 {
                let reply = submit(i)
                replies.withLock { $0[i] = reply }
                usleep(20_000)
            }
        }
        usleep(300_000)
        try cluster.redis.restart(after: 0.5)
        group.wait()
        // A submission during the outage is either accepted (the node retried it through
        // the outage) or refused with 503 `unavailable`, for the client to retry: never
        // accepted and then lost.
        var accepted: [Int: (project: String, id: String)] = [:]
        for i in 0..<60 {
            let text = replies.withLock { $0[i] } ?? ""
            let reply = (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? ["raw": text]
            if let id = reply["job_id"] as? String {
                accepted[i] = (projects[i % projects.count], id)
            } else {
                #expect((reply["error"] as? [String: Any])?["code"] as? String == "unavailable", "job \(i): \(reply)")
            }
        }
        // Service has resumed: every submission after the restart is accepted.
        for i in 60..<70 {
            let reply = cluster.api.json(
                "POST", "/v1/projects/\(projects[i % projects.count])/jobs",
                #"{"command": "echo \#(i) >> ran.txt; echo job \#(i)"}"#)
            let id = try #require(reply["job_id"] as? String, "job \(i): \(reply)")
            accepted[i] = (projects[i % projects.count], id)
        }
        for (i, job) in accepted.sorted(by: { $0.key < $1.key }) {
            let done = cluster.api.json("GET", "/v1/projects/\(job.project)/jobs/\(job.id)?wait=60")
            #expect(done["status"] as? String == "completed", "job \(i): \(done)")
            #expect(done["stdout"] as? String == "job \(i)\n", "job \(i): \(done)")
        }
        // Every accepted job ran exactly once, in its own project's workspace.
        for project in projects {
            let ran = cluster.exec(project, "sort -n ran.txt | tr '\\n' ' '")
            let expected = accepted.filter { $0.value.project == project }.keys.sorted().map(String.init)
            #expect(ran["stdout"] as? String == expected.joined(separator: " ") + " ", "\(project): \(ran)")
        }
    }
}

extension ClusterAPITests {
    /// In a cluster the worker sees only the worker token, an admin: the API node, where the
    /// agent's token is known, must refuse a policy the agent may not use.
    @Test func anAgentTokenThroughTheAPINodeMayRegisterOnlyUnderItsPolicies() throws {
        let tokens = """
            {"tokens": [{"name": "agent", "secret": "agent-secret-0123456789", "projects": ["*"]},
                        {"name": "strict", "secret": "strict-secret-0123456789", "projects": ["*"],
                         "policies": ["strict"]}]}
            """
        let cluster = try Cluster(apiTokens: tokens, policies: ["strict": "extends = \"default\"\n"])
        defer {
            cluster.stop()
            #expect(cluster.leftovers == [])
        }
        let archive = try LiveArchive.make(["a.txt": "a\n"])
        defer { unlink(archive) }
        func upload(_ project: String, _ query: String, token: String) -> [String: Any] {
            let text = Node.curl([
                "-X", "PUT", "--data-binary", "@\(archive)", "-H", "Authorization: Bearer \(token)",
                "http://127.0.0.1:\(cluster.api.port)/v1/projects/\(project)/archive\(query)",
            ])
            return (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? ["raw": text]
        }
        let refused = upload("c1", "?policy=strict", token: "agent-secret-0123456789")
        let error = refused["error"] as? [String: Any]
        #expect(error?["code"] as? String == "forbidden", "\(refused)")
        #expect(
            error?["message"] as? String
                == "token \"agent\" may not use policy \"strict\"; the policies it may use: default", "\(refused)")
        // Refused before any worker was asked: nobody owns the project.
        #expect(cluster.owner("c1") == "")
        let allowed = upload("c1", "?policy=strict", token: "strict-secret-0123456789")
        #expect(allowed["policy"] as? String == "strict", "\(allowed)")
        let unnamed = upload("c2", "", token: "agent-secret-0123456789")
        #expect(unnamed["policy"] as? String == "default", "\(unnamed)")
    }

    /// A project's connections leave from the worker that owns it, through that worker's
    /// egress proxy, and are audited there.
    @Test func aJobOnAWorkerReachesAnAllowedHostThroughThatWorkersProxy() throws {
        let files = try TemporaryDirectory()
        try "through the worker's proxy\n".write(toFile: files.path + "/hello.txt", atomically: true, encoding: .utf8)
        let upstream = try LoopbackHTTPServer(serving: files.url)
        defer { upstream.stop() }
        let net = """
            rootfs = "minimal"
            [network]
            mode = "allowlist"
            egress = ["localhost:\(upstream.port)"]
            allow_private = ["127.0.0.0/8"]
            """
        let cluster = try Cluster(policies: ["net": net])
        defer {
            cluster.stop()
            #expect(cluster.leftovers == [])
        }
        let archive = try LiveArchive.make(["a.txt": "a\n"])
        defer { unlink(archive) }
        let created = Node.curl([
            "-X", "PUT", "--data-binary", "@\(archive)",
            "http://127.0.0.1:\(cluster.api.port)/v1/projects/e1/archive?policy=net",
        ])
        #expect(created.contains("\"policy\":\"net\""), "\(created)")
        let ran = cluster.exec("e1", "wget -q -O - http://localhost:\(upstream.port)/hello.txt")
        #expect(ran["stdout"] as? String == "through the worker's proxy\n", "\(ran)")
        let owner = cluster.owner("e1")
        // The line is written as the connection ends, on the worker's own task.
        var audit = ""
        var line: Substring = ""
        for _ in 0..<100 where line.isEmpty {
            audit = (try? String(contentsOfFile: cluster.dir.path + "/\(owner)/audit.log", encoding: .utf8)) ?? ""
            line = audit.split(separator: "\n").first { $0.contains("\"event\":\"egress\"") } ?? ""
            if line.isEmpty { usleep(20_000) }
        }
        #expect(line.contains("\"project\":\"e1\"") && line.contains("\"decision\":\"allowed\""), "\(owner): \(audit)")
    }
}
