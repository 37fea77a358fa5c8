import Cluster
import Foundation
import Host
import TestSupport
import Testing

/// A worker host as its own process (corral-cluster-testnode), so it can really die.
final class ClusterNodeProcess: @unchecked Sendable {
    let host: String
    private let process = Process()
    private let input = Pipe()
    private let output = Pipe()

    static var binary: String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("corral-cluster-testnode")
            .path
    }

    static var isAvailable: Bool { FileManager.default.isExecutableFile(atPath: binary) }

    init(host: String, redis: String, ledger: String, leaseMilliseconds: Int, perProject: Int = 1) throws {
        self.host = host
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = [
            "--redis", redis, "--host", host, "--ledger", ledger, "--lease-ms", String(leaseMilliseconds),
            "--per-project", String(perProject),
        ]
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        guard readLine() == "ready" else {
            kill()
            throw TestSupportError("\(host) did not start")
        }
    }

    private func readLine() -> String {
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        return String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// kill -9: no shutdown, no hand-over, no last words.
    func kill() {
        guard process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Asks for a graceful shutdown and waits for the process to exit.
    func shutdown() -> Bool {
        input.fileHandleForWriting.write(Data("shutdown\n".utf8))
        let said = readLine()
        process.waitUntilExit()
        return said == "stopped" && process.terminationStatus == 0
    }

    deinit { kill() }
}

/// The ledger the node processes append to: `start COMMAND HOST` and `release PROJECT HOST`.
struct NodeLedger {
    let path: String

    var lines: [[String]] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map {
            $0.split(separator: " ").map(String.init)
        }
    }

    func hosts(started command: String) -> [String] {
        lines.filter { $0.count == 3 && $0[0] == "start" && $0[1] == command }.map { $0[2] }
    }
}

/// Two worker hosts as separate processes and this process as the API node, over a real
/// redis-server: routing, kill -9 failover, and a graceful hand-over.
@Suite(
    .serialized, .enabled(if: RedisServer.isAvailable, "needs /usr/bin/redis-server"),
    .enabled(if: ClusterNodeProcess.isAvailable, "needs corral-cluster-testnode (swift build --build-tests)"))
struct ClusterProcessTests {
    static let leaseMilliseconds = 1500

    @Test func killingAWorkerMovesItsProjectsAndSettlesEveryJobExactlyOnce() async throws {
        let server = try RedisServer()
        let dir = try TemporaryDirectory()
        let ledger = NodeLedger(path: dir.path + "/ledger")
        let a = try ClusterNodeProcess(
            host: "host-a", redis: server.url, ledger: ledger.path, leaseMilliseconds: Self.leaseMilliseconds)
        let b = try ClusterNodeProcess(
            host: "host-b", redis: server.url, ledger: ledger.path, leaseMilliseconds: Self.leaseMilliseconds)
        var configuration = ClusterConfiguration(redis: try RedisConfiguration(url: server.url))
        configuration.leaseTTL = .milliseconds(Self.leaseMilliseconds)
        let client = ClusterJobClient(configuration: configuration)
        defer { client.close() }

        // 20 projects, spread over both hosts; each project's jobs on its owner.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for p in 0..<20 {
                group.addTask {
                    for j in 0..<2 {
                        let snap = try await client.run(
                            JobRequest(project: "p\(p)", command: "warm-\(p)-\(j)"), budget: .seconds(10))
                        #expect(snap.record.state == .completed)
                    }
                }
            }
            try await group.waitForAll()
        }
        var owners: [String: String] = [:]
        for p in 0..<20 { owners["p\(p)"] = try await client.owner(of: "p\(p)") }
        #expect(owners.values.filter { $0 == "host-a" }.count == 10)
        #expect(owners.values.filter { $0 == "host-b" }.count == 10)
        for p in 0..<20 {
            for j in 0..<2 { #expect(ledger.hosts(started: "warm-\(p)-\(j)") == [owners["p\(p)"]!]) }
        }

        // One of host-a's projects has a job running and three waiting behind it.
        let project = try #require(owners.filter { $0.value == "host-a" }.keys.sorted().first)
        let running = try await client.submit(JobRequest(project: project, command: "block-running"))
        #expect(try await client.waitFor(running.id, state: .running))
        var waiting: [JobRecord] = []
        for i in 0..<3 { waiting.append(try await client.submit(JobRequest(project: project, command: "wait-\(i)"))) }

        a.kill()
        let killed = ContinuousClock.now
        for (i, job) in waiting.enumerated() {
            let snap = try await client.wait(job.id, timeout: .seconds(15), untilFinished: true)
            #expect(snap.record.state == .completed)
            #expect(snap.output == "wait-\(i)@host-b\n")
        }
        let moved = ContinuousClock.now - killed
        #expect(moved < .milliseconds(Self.leaseMilliseconds) + .seconds(2), "took \(moved)")
        let interrupted = try await client.wait(running.id, timeout: .seconds(5), untilFinished: true)
        #expect(interrupted.record.state == .interrupted)
        #expect(ledger.hosts(started: "block-running") == ["host-a"])
        for i in 0..<3 { #expect(ledger.hosts(started: "wait-\(i)") == ["host-b"]) }

        // Every project host-a had now lives on host-b (the others stayed where they were).
        for (p, owner) in owners where owner == "host-a" {
            let snap = try await client.run(JobRequest(project: p, command: "after-\(p)"), budget: .seconds(10))
            #expect(snap.output == "after-\(p)@host-b\n")
            #expect(try await client.owner(of: p) == "host-b")
        }
        #expect(try await client.liveWorkers() == ["host-b"])
        #expect(b.shutdown())
    }

    @Test func aGracefulShutdownWritesBackThenHandsItsProjectsOver() async throws {
        let server = try RedisServer()
        let dir = try TemporaryDirectory()
        let ledger = NodeLedger(path: dir.path + "/ledger")
        let a = try ClusterNodeProcess(
            host: "host-a", redis: server.url, ledger: ledger.path, leaseMilliseconds: Self.leaseMilliseconds)
        let b = try ClusterNodeProcess(
            host: "host-b", redis: server.url, ledger: ledger.path, leaseMilliseconds: Self.leaseMilliseconds)
        var configuration = ClusterConfiguration(redis: try RedisConfiguration(url: server.url))
        configuration.leaseTTL = .milliseconds(Self.leaseMilliseconds)
        let client = ClusterJobClient(configuration: configuration)
        defer { client.close() }
        #expect(try await client.leases.acquire("p", for: "host-a"))
        let build = try await client.submit(JobRequest(project: "p", command: "sleep-500-build"))
        #expect(try await client.waitFor(build.id, state: .running))
        let next = try await client.submit(JobRequest(project: "p", command: "next"))

        #expect(a.shutdown())
        #expect(try await client.wait(build.id, timeout: .seconds(5), untilFinished: true).record.state == .completed)
        let snap = try await client.wait(next.id, timeout: .seconds(10), untilFinished: true)
        #expect(snap.output == "next@host-b\n")
        #expect(try await client.owner(of: "p") == "host-b")
        // The write-back came before the new owner started anything of the project.
        let lines = ledger.lines.map { $0.joined(separator: " ") }
        let released = try #require(lines.firstIndex(of: "release p host-a"))
        let started = try #require(lines.firstIndex(of: "start next host-b"))
        #expect(released < started)
        #expect(ledger.hosts(started: "sleep-500-build") == ["host-a"])
        #expect(b.shutdown())
    }

    @Test func redisRestartedUnderLoadWithWorkerProcessesLosesNothingAccepted() async throws {
        let server = try RedisServer()
        let dir = try TemporaryDirectory()
        let ledger = NodeLedger(path: dir.path + "/ledger")
        let nodes = try ["host-a", "host-b"].map {
            try ClusterNodeProcess(
                host: $0, redis: server.url, ledger: ledger.path, leaseMilliseconds: 3000, perProject: 4)
        }
        var configuration = ClusterConfiguration(redis: try RedisConfiguration(url: server.url))
        configuration.leaseTTL = .seconds(3)
        configuration.redis.maxBackoff = .milliseconds(200)
        let client = ClusterJobClient(configuration: configuration, outageRetry: .zero)
        defer { client.close() }
        let accepted = Locked<[String: String]>([:])
        let refusals = Locked(0)
        // A submit in flight when Redis goes away is not refused but settled: it waits for
        // Redis to say whether the job was recorded.
        let settled = Locked(Duration.zero)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for i in 0..<60 {
                    let request = JobRequest(
                        project: "p\(i % 6)", command: "job-\(i)", idempotencyKey: "k\(i)", submitter: "load")
                    while true {
                        do {
                            let started = ContinuousClock.now
                            let record = try await client.submit(request)
                            let took = ContinuousClock.now - started
                            settled.update { $0 = max($0, took) }
                            accepted.update { $0[record.id] = request.command }
                            break
                        } catch ClusterError.redisUnavailable {
                            refusals.update { $0 += 1 }
                            try await Task.sleep(for: .milliseconds(100))
                        }
                    }
                    try await Task.sleep(for: .milliseconds(25))
                }
            }
            group.addTask {
                try await Task.sleep(for: .milliseconds(400))
                try server.restart(after: 1.0)
            }
            try await group.waitForAll()
        }
        #expect(
            refusals.value > 0 || settled.value > .milliseconds(500),
            "the outage was never seen: no refusal, slowest submit \(settled.value)")
        #expect(accepted.value.count == 60)
        for (id, command) in accepted.value {
            let snap = try await client.wait(id, timeout: .seconds(20), untilFinished: true)
            #expect(snap.record.state == .completed, "\(command): \(snap.record.state) \(snap.record.error ?? "")")
            #expect(ledger.hosts(started: command).count == 1, "\(command) started \(ledger.hosts(started: command))")
        }
        for node in nodes { #expect(node.shutdown()) }
    }
}
