// corral-bench-jobs: the job system's round trip through its Swift API (no HTTP) beside the
// same job spawned directly in the same sandbox, at concurrency 1, 8 and 32, and throughput.
// Usage: corral-bench-jobs ROOTFS_DIR [RUNS]
import Foundation
import Host
import Sandbox

let args = CommandLine.arguments
let rootfsDir = args.count > 1 ? args[1] : "rootfs/out"
let runs = args.count > 2 ? Int(args[2]) ?? 640 : 640
let rootfs = URL(fileURLWithPath: rootfsDir).standardizedFileURL.path + "/minimal"

func percentile(_ samples: [Double], _ p: Double) -> Double {
    let sorted = samples.sorted()
    return sorted[min(sorted.count - 1, Int(Double(sorted.count - 1) * p))]
}

/// Runs `total` operations with `concurrency` in flight; returns per-operation latencies
/// (ms) and operations per second.
func load(_ total: Int, concurrency: Int, _ op: @escaping @Sendable () async throws -> Void) async throws -> (
    [Double], Double
) {
    let start = ContinuousClock.now
    let samples = try await withThrowingTaskGroup(of: [Double].self) { group in
        for worker in 0..<concurrency {
            group.addTask {
                var mine: [Double] = []
                for _ in stride(from: worker, to: total, by: concurrency) {
                    let t = ContinuousClock.now
                    try await op()
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

let workspace = FileManager.default.temporaryDirectory.appendingPathComponent("corral-bench-jobs-\(getpid())").path
try FileManager.default.createDirectory(atPath: workspace, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(atPath: workspace) }
let sandbox = try await ProjectSandbox.create(
    SandboxConfiguration(projectID: "bench", workspace: workspace, rootfs: rootfs))
let filter = try SeccompProfile.corralDefault.compile().instructions
let spec: @Sendable (JobRequest) throws -> JobSpec = { request in
    JobSpec(["/bin/sh", "-c", request.command], seccomp: filter)
}
// Per-project slots wide enough that the queue's own overhead is measured, not its cap.
let jobs = try JobSystem(
    runner: SandboxJobRunner(sandbox: { _ in sandbox }, spec: spec),
    limits: JobLimits(slots: [.short: 64, .long: 8], perProject: [.short: 32, .long: 4]))
let request = JobRequest(project: "bench", command: "true")
let direct = try spec(request)
for _ in 0..<30 { _ = try await jobs.run(request, budget: .seconds(30)) }

print("| path | concurrency | runs | p50 ms | p99 ms | jobs/s |")
print("|---|---|---|---|---|---|")
for concurrency in [1, 8, 32] {
    let (base, baseRate) = try await load(runs, concurrency: concurrency) { _ = try await sandbox.exec(direct) }
    let (queued, queuedRate) = try await load(runs, concurrency: concurrency) {
        let snap = try await jobs.run(request, budget: .seconds(60))
        guard snap.record.state == .completed else { fatalError("job ended \(snap.record.state)") }
    }
    for (name, samples, rate) in [("sandbox.exec (baseline)", base, baseRate), ("JobSystem.run", queued, queuedRate)] {
        print(
            "| \(name) | \(concurrency) | \(samples.count) | \(String(format: "%.3f", percentile(samples, 0.5))) | "
                + "\(String(format: "%.3f", percentile(samples, 0.99))) | \(String(format: "%.0f", rate)) |")
    }
}
await jobs.shutdown(grace: .seconds(1))
await sandbox.destroy()

// MARK: - read_file through the host's fast lane, alone and while 4 CPU-bound builds run

let data = FileManager.default.temporaryDirectory.appendingPathComponent("corral-bench-host-\(getpid())").path
defer { try? FileManager.default.removeItem(atPath: data) }
let policies = data + "/policies"
try FileManager.default.createDirectory(atPath: policies + "/src", withIntermediateDirectories: true)
try "rootfs = \"minimal\"\n".write(toFile: policies + "/default.toml", atomically: true, encoding: .utf8)
try String(repeating: "let x = 1\n", count: 2000).write(
    toFile: policies + "/src/f.swift", atomically: true, encoding: .utf8)
let tar = Process()
tar.executableURL = URL(fileURLWithPath: "/usr/bin/bsdtar")
tar.arguments = ["-czf", data + "/p.tar.gz", "-C", policies + "/src", "."]
try tar.run()
tar.waitUntilExit()
let host = try await CorralHost.open(
    HostConfiguration(
        dataDirectory: data + "/var", rootfsDirectory: URL(fileURLWithPath: rootfsDir).standardizedFileURL.path,
        policiesDirectory: policies))
_ = try await host.upload("bench", archive: Array(try Data(contentsOf: URL(fileURLWithPath: data + "/p.tar.gz"))))
let readArgs: [String: JSONValue] = ["path": .string("f.swift"), "offset": .number(100), "limit": .number(50)]
func reads(_ n: Int) async throws -> [Double] {
    var samples: [Double] = []
    for _ in 0..<n {
        let t = ContinuousClock.now
        let r = try await host.fileTool(project: "bench", name: "read_file", arguments: readArgs, caller: nil)
        guard !r.isError else { fatalError(r.text) }
        samples.append(Double((ContinuousClock.now - t) / .nanoseconds(1)) / 1e6)
    }
    return samples
}
_ = try await reads(50)
let quiet = try await reads(runs)
var builds: [String] = []
for _ in 0..<4 {
    builds.append(
        try await host.jobService.submit(
            JobRequest(project: "bench", command: "while :; do :; done", timeoutSeconds: 600, background: true)
        ).id)
}
try await Task.sleep(for: .milliseconds(500))
let loaded = try await reads(runs)
for id in builds { _ = try await host.jobs.cancel(id) }
// The data directory is thrown away: its workspace volumes go with it (a kept host
// would leave them mounted for its next start to adopt).
for project in await host.projects() { try? await host.evict(project.id, discard: true) }
await host.shutdown(grace: .seconds(1))
print("")
print("| read_file (50 lines) via CorralHost | runs | p50 ms | p99 ms |")
print("|---|---|---|---|")
for (name, samples) in [("alone", quiet), ("while 4 CPU-bound builds run", loaded)] {
    print(
        "| \(name) | \(samples.count) | \(String(format: "%.3f", percentile(samples, 0.5))) | "
            + "\(String(format: "%.3f", percentile(samples, 0.99))) |")
}
