// corral-bench-cluster: a job's round trip through Redis (API client → Redis → worker host
// → Redis → API client) beside the same job through the local JobSystem (the all-in-one
// host's path), and throughput with one and two worker hosts.
//
// Worker hosts are separate processes (corral-cluster-testnode, built beside this binary);
// the API client runs in this process; redis-server is started on loopback in a temp dir.
// Usage: corral-bench-cluster [--rootfs DIR] [--runs N] [--fsync everysec|always]
// With --rootfs (the directory holding `minimal`), jobs run `true` in real sandboxes; without
// it a fake runner ends each job at once, which measures the queue and transport alone.
import Cluster
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
let ok: @Sendable (JobSnapshot) -> Void = { snap in
    guard snap.record.state == .completed, snap.record.result?.exitCode == 0 else {
        fatalError("job ended \(snap.record.state): \(snap.record.error ?? "")")
    }
}
/// Jobs of `set` take turns over its projects.
func request(_ set: [String], _ i: Int) -> JobRequest { JobRequest(project: set[i % set.count], command: "true") }

// Two project sets: `single` all leased to worker-1, `spread` half on each host. Both hosts
// live throughout, so the 1-host and 2-host series differ only in where their projects are.
let single = projects.map { "one-\($0)" }
let spread = projects.map { "two-\($0)" }
let (jobs, cleanup) = try await localJobs()
let client = ClusterJobClient(configuration: configuration)
let nodes = [try Node(host: "worker-1", redis: server.url), try Node(host: "worker-2", redis: server.url)]
for (i, project) in single.enumerated() + spread.enumerated().map({ ($0.offset, $0.element) }) {
    let host = project.hasPrefix("one-") || i % 2 == 0 ? "worker-1" : "worker-2"
    guard try await client.leases.acquire(project, for: host) else { fatalError("cannot lease \(project)") }
}
for i in 0..<64 {
    ok(try await jobs.run(request(projects, i), budget: .seconds(30)))
    ok(try await client.run(request(single, i), budget: .seconds(30)))
    ok(try await client.run(request(spread, i), budget: .seconds(30)))
}

struct Series {
    let name: String
    let hosts: String
    let concurrency: Int
    let op: @Sendable (Int) async throws -> Void
    var samples: [Double] = []
    var seconds = 0.0
}
var series = [
    Series(name: "JobSystem.run (all-in-one)", hosts: "-", concurrency: 1) {
        ok(try await jobs.run(request(projects, $0), budget: .seconds(60)))
    },
    Series(name: "ClusterJobClient.run (via Redis)", hosts: "1", concurrency: 1) {
        ok(try await client.run(request(single, $0), budget: .seconds(60)))
    },
    Series(name: "JobSystem.run (all-in-one)", hosts: "-", concurrency: 32) {
        ok(try await jobs.run(request(projects, $0), budget: .seconds(60)))
    },
    Series(name: "ClusterJobClient.run (via Redis)", hosts: "1", concurrency: 32) {
        ok(try await client.run(request(single, $0), budget: .seconds(60)))
    },
    Series(name: "ClusterJobClient.run (via Redis)", hosts: "2", concurrency: 32) {
        ok(try await client.run(request(spread, $0), budget: .seconds(60)))
    },
]
// Interleaved rounds, so load drift on this shared machine hits every series alike.
let rounds = 10
for _ in 0..<rounds {
    for k in series.indices {
        let (samples, rate) = try await load(runs / rounds, concurrency: series[k].concurrency, series[k].op)
        series[k].samples += samples
        series[k].seconds += Double(samples.count) / rate
    }
}

print(
    "runner: \(rootfs == nil ? "fake (ends at once)" : "sandbox, /bin/sh -c true"); redis appendfsync \(server.appendfsync)"
)
print("| path | worker hosts | concurrency | runs | p50 ms | p99 ms | jobs/s |")
print("|---|---|---|---|---|---|---|")
for s in series {
    row(s.name, s.hosts, s.concurrency, (s.samples, Double(s.samples.count) / s.seconds))
}
let p50 = { (k: Int) in percentile(series[k].samples, 0.5) }
let rate = { (k: Int) in Double(series[k].samples.count) / series[k].seconds }
print("")
print(
    "round trip at concurrency 1, via Redis − all-in-one: p50 +\(String(format: "%.3f", p50(1) - p50(0))) ms (\(String(format: "%.2f", p50(1) / p50(0)))×)"
)
print(
    "throughput at concurrency 32: 2 hosts / 1 host = \(String(format: "%.2f", rate(4) / rate(3)))×; 1 host / all-in-one = \(String(format: "%.2f", rate(3) / rate(2)))×"
)

await jobs.shutdown(grace: .seconds(1))
await cleanup()
for node in nodes { node.stop() }
client.close()
server.stop()
