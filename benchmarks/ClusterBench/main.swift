// corral-bench-cluster: a job's round trip through Redis (API client → Redis → worker host
// → Redis → API client) beside the same job through the local JobSystem (the all-in-one
// host's path), and throughput with one and two worker hosts.
//
// Worker hosts are separate processes (corral-cluster-testnode, built beside this binary);
// the API client runs in this process; redis-server is started on loopback in a temp dir.
// Usage: corral-bench-cluster [--rootfs DIR] [--runs N] [--fsync everysec|always]
// With --rootfs (the directory holding `minimal`), jobs run `true` in real sandboxes; without
// it a fake runner ends each job at once, which measures the queue and transport alone.
import Foundation
import Host
import Sandbox
import TestSupport

var options: [String: String] = [:]
var index = 1
while index + 1 < CommandLine.arguments.count {
    options[String(CommandLine.arguments[index].dropFirst(2))] = CommandLine.arguments[index + 1]
    index += 2
}
let runs = options["runs"].flatMap(Int.init) ?? 1000
let rootfs = options["rootfs"].map { URL(fileURLWithPath: $0).standardizedFileURL.path + "/minimal" }
let projects = (0..<8).map { "bench\($0)" }

func percentile(_ samples: [Double], _ p: Double) -> Double {
    let sorted = samples.sorted()
    return sorted[min(sorted.count - 1, Int(Double(sorted.count - 1) * p))]
}

/// `total` operations, `concurrency` in flight: latencies (ms) and operations per second.
func load(_ total: Int, concurrency: Int, _ op: @escaping @Sendable (Int) async throws -> Void) async throws -> (
    [Double], Double
) {
    let start = ContinuousClock.now
    let samples = try await withThrowingTaskGroup(of: [Double].self) { group in
        for lane in 0..<concurrency {
            group.addTask {
                var mine: [Double] = []
                for i in stride(from: lane, to: total, by: concurrency) {
                    let t = ContinuousClock.now
                    try await op(i)
                    mine.append(Double((ContinuousClock.now - t) / .nanoseconds(1)) / 1e6)
                }
                return mine
            }
        }
        return try await group.reduce(into: []) { $0 += $1 }
    }
    let seconds = Double((ContinuousClock.now - start) / .nanoseconds(1)) / 1e9
    return (samples, Double(total) / seconds)
}

func row(_ path: String, _ workers: String, _ concurrency: Int, _ result: ([Double], Double)) {
    let (samples, rate) = result
    print(
        "| \(path) | \(workers) | \(concurrency) | \(samples.count) | "
            + "\(String(format: "%.3f", percentile(samples, 0.5))) | \(String(format: "%.3f", percentile(samples, 0.99))) | "
            + "\(String(format: "%.0f", rate)) |")
}

/// A worker host process.
final class Node: @unchecked Sendable {
    let process = Process()
    let input = Pipe()
    let output = Pipe()

    init(host: String, redis: String) throws {
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        process.executableURL = URL(fileURLWithPath: exe).deletingLastPathComponent()
            .appendingPathComponent("corral-cluster-testnode")
        process.arguments =
            ["--redis", redis, "--host", host, "--per-project", "32"] + (rootfs.map { ["--rootfs", $0] } ?? [])
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        guard String(decoding: line, as: UTF8.self).hasPrefix("ready") else { fatalError("\(host) did not start") }
    }

    func stop() {
        input.fileHandleForWriting.write(Data("shutdown\n".utf8))
        process.waitUntilExit()
    }
}

/// The all-in-one path: a local JobSystem with the same runner the nodes use.
func localJobs() async throws -> (JobSystem, @Sendable () async -> Void) {
    let limits = JobLimits(slots: [.short: 64, .long: 8], perProject: [.short: 32, .long: 4])
    guard let rootfs else {
        struct Instant: JobRunner, JobExecution {
            func start(
                _ request: JobRequest, jobID: String,
                onOutput: @escaping @Sendable (Sandbox.OutputStream, [UInt8]) -> Void
            ) async throws -> any JobExecution { self }
            func wait() async -> JobResult {
                JobResult(
                    status: .completed, exitCode: 0, signal: nil, timedOut: false, oomKilled: false, durationMs: 0,
                    cpuMs: 0, peakMemoryBytes: 0, stdout: "", stderr: "", truncated: false, omittedBytes: 0,
                    logPath: nil)
            }
            func cancel() async -> JobResult { await wait() }
        }
        return (try JobSystem(runner: Instant(), limits: limits), {})
    }
    let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("corral-bench-cluster-\(getpid())")
    var sandboxes: [String: ProjectSandbox] = [:]
    for project in projects {
        let workspace = scratch.appendingPathComponent(project).path
        try FileManager.default.createDirectory(atPath: workspace, withIntermediateDirectories: true)
        sandboxes[project] = try await ProjectSandbox.create(
            SandboxConfiguration(projectID: project, workspace: workspace, rootfs: rootfs))
    }
    let filter = try SeccompProfile.corralDefault.compile().instructions
    let made = sandboxes
    let runner = SandboxJobRunner(
        sandbox: { made[$0]! }, spec: { JobSpec(["/bin/sh", "-c", $0.command], seccomp: filter) })
    return (
        try JobSystem(runner: runner, limits: limits),
        {
            for sandbox in made.values { await sandbox.destroy() }
            try? FileManager.default.removeItem(at: scratch)
        }
    )
}

let server = try RedisServer(appendfsync: options["fsync"] ?? "everysec")
let configuration = ClusterConfiguration(redis: try RedisConfiguration(url: server.url))
let request: @Sendable (Int) -> JobRequest = { JobRequest(project: projects[$0 % projects.count], command: "true") }
let ok: @Sendable (JobSnapshot) -> Void = { snap in
    guard snap.record.state == .completed, snap.record.result?.exitCode == 0 else {
        fatalError("job ended \(snap.record.state): \(snap.record.error ?? "")")
    }
}

print("runner: \(rootfs == nil ? "fake (ends at once)" : "sandbox, /bin/sh -c true"); redis appendfsync \(server.appendfsync)")
print("| path | worker hosts | concurrency | runs | p50 ms | p99 ms | jobs/s |")
print("|---|---|---|---|---|---|---|")
let (jobs, cleanup) = try await localJobs()
for i in 0..<50 { ok(try await jobs.run(request(i), budget: .seconds(30))) }
for concurrency in [1, 32] {
    row(
        "JobSystem.run (all-in-one)", "-", concurrency,
        try await load(runs, concurrency: concurrency) { ok(try await jobs.run(request($0), budget: .seconds(60))) })
}
await jobs.shutdown(grace: .seconds(1))
await cleanup()

let client = ClusterJobClient(configuration: configuration)
var nodes = [try Node(host: "worker-1", redis: server.url)]
for hosts in [1, 2] {
    if hosts == 2 {
        // Projects are leased to the first host already: release them so both hosts share.
        for project in projects { _ = try await client.leases.release(project, from: "worker-1") }
        nodes.append(try Node(host: "worker-2", redis: server.url))
    }
    for i in 0..<(50 * hosts) { ok(try await client.run(request(i), budget: .seconds(30))) }
    var owners: [String: Int] = [:]
    for project in projects { owners[try await client.owner(of: project) ?? "none", default: 0] += 1 }
    for concurrency in hosts == 1 ? [1, 32] : [32] {
        row(
            "ClusterJobClient.run (via Redis)", "\(hosts) \(owners.sorted { $0.key < $1.key })", concurrency,
            try await load(runs, concurrency: concurrency) { ok(try await client.run(request($0), budget: .seconds(60))) })
    }
}
for node in nodes { node.stop() }
client.close()
server.stop()
