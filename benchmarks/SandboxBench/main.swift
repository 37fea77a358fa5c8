// corral-bench-sandbox: exec latency into a warm sandbox beside its baselines, sandbox
// create+destroy, and idle sandbox memory. All figures come from one run, so the ratios
// hold on a noisy machine. Usage: corral-bench-sandbox ROOTFS_DIR [RUNS] [IDLE_SANDBOXES]
import Foundation
import Glibc
import Sandbox

let args = CommandLine.arguments
let rootfsDir = args.count > 1 ? args[1] : "rootfs/out"
let runs = args.count > 2 ? Int(args[2]) ?? 1000 : 1000
let rootfs = URL(fileURLWithPath: rootfsDir).standardizedFileURL.path + "/minimal"

func percentile(_ samples: [Double], _ p: Double) -> Double {
    let sorted = samples.sorted()
    return sorted[min(sorted.count - 1, Int(Double(sorted.count - 1) * p))]
}

func measure(_ n: Int, _ body: () async throws -> Void) async rethrows -> [Double] {
    var samples: [Double] = []
    samples.reserveCapacity(n)
    for _ in 0..<n {
        let start = ContinuousClock.now
        try await body()
        samples.append(Double((ContinuousClock.now - start) / .nanoseconds(1)) / 1e6)
    }
    return samples
}

/// posix_spawn + waitpid: the cost of a plain process start, the floor of every design.
func spawnAndWait(_ argv: [String]) {
    var pid: pid_t = 0
    let cArgs = argv.map { strdup($0) } + [nil]
    defer { cArgs.forEach { free($0) } }
    guard posix_spawn(&pid, argv[0], nil, nil, cArgs, environ) == 0 else { fatalError("spawn \(argv[0])") }
    var status: Int32 = 0
    waitpid(pid, &status, 0)
}

func row(_ name: String, _ samples: [Double], baseline: [Double]? = nil) {
    let p50 = percentile(samples, 0.5)
    let p99 = percentile(samples, 0.99)
    var line = "| \(name) | \(samples.count) | \(String(format: "%.3f", p50)) | \(String(format: "%.3f", p99)) |"
    if let baseline { line += " \(String(format: "%.2f×", p50 / percentile(baseline, 0.5))) |" } else { line += " — |" }
    print(line)
}

func meminfo(_ key: String) -> Int {
    let text = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
    let line = text.split(separator: "\n").first { $0.hasPrefix(key + ":") } ?? ""
    return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
}

func privateKiB(_ pid: pid_t) -> Int {
    let text = (try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8)) ?? ""
    return text.split(separator: "\n").filter { $0.hasPrefix("Private_") }.reduce(0) {
        $0 + (Int($1.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "0") ?? 0)
    }
}

let workspace = FileManager.default.temporaryDirectory.appendingPathComponent("corral-bench-\(getpid())").path
try FileManager.default.createDirectory(atPath: workspace, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(atPath: workspace) }

let sandbox = try await ProjectSandbox.create(
    SandboxConfiguration(projectID: "bench", workspace: workspace, rootfs: rootfs))
// The same sandbox without cgroups: the cost of landing each job in its own cgroup.
let bare = try await ProjectSandbox.create(
    SandboxConfiguration(projectID: "bench-nocg", workspace: workspace, rootfs: rootfs, cgroups: nil))
for _ in 0..<50 { _ = try await bare.exec(JobSpec(["/bin/true"])) }
let trueJob = JobSpec(["/bin/true"])
for _ in 0..<50 { _ = try await sandbox.exec(trueJob) }  // warm up

print("| operation | runs | p50 ms | p99 ms | p50 vs fork+exec |")
print("|---|---|---|---|---|")
// Interleaved in rounds so drift in the machine's load hits every series alike.
var plain: [Double] = [], nsenter: [Double] = [], corral: [Double] = [], uncgrouped: [Double] = []
let rounds = 10
for _ in 0..<rounds {
    plain += await measure(runs / rounds) { spawnAndWait([rootfs + "/bin/true"]) }
    nsenter += await measure(runs / rounds) {
        spawnAndWait([
            "/usr/bin/nsenter", "-t", "\(sandbox.initPID)", "-U", "-m", "-p", "-n", "-u", "-i", "-C",
            "--preserve-credentials", "/bin/true",
        ])
    }
    corral += try await measure(runs / rounds) { _ = try await sandbox.exec(trueJob) }
    uncgrouped += try await measure(runs / rounds) { _ = try await bare.exec(trueJob) }
}
row("fork+exec `true` (host, baseline)", plain, baseline: plain)
row("`nsenter` 7 namespaces + `true` (baseline)", nsenter, baseline: plain)
row("corral exec `true` in a warm sandbox", corral, baseline: plain)
row("corral exec `true`, no job cgroup (baseline)", uncgrouped, baseline: plain)
print("")
print(String(format: "corral exec p50 / nsenter p50 = %.2f×", percentile(corral, 0.5) / percentile(nsenter, 0.5)))
print(
    String(
        format: "job cgroup cost: p50 %+.3f ms, p99 %+.3f ms (%.2f× at p50)",
        percentile(corral, 0.5) - percentile(uncgrouped, 0.5), percentile(corral, 0.99) - percentile(uncgrouped, 0.99),
        percentile(corral, 0.5) / percentile(uncgrouped, 0.5)))
await sandbox.destroy()
await bare.destroy()

let createRuns = max(20, runs / 10)
let lifecycle = try await measure(createRuns) {
    let s = try await ProjectSandbox.create(
        SandboxConfiguration(projectID: "bench", workspace: workspace, rootfs: rootfs))
    await s.destroy()
}
print("")
print("| operation | runs | p50 ms | p99 ms | |")
print("|---|---|---|---|---|")
row("sandbox create + destroy", lifecycle)

/// What a set of idle sandboxes pins and the kernel cannot reclaim (the density measure of
/// docs/BENCHMARKS.md): anonymous pages, unreclaimable slab, page tables and kernel stacks,
/// read after dropping the page cache and reclaimable slab, in KiB. `MemAvailable` drifts
/// too much on these machines to divide by a hundred.
func pinnedKiB() -> Int {
    sync()
    if let drop = FileHandle(forWritingAtPath: "/proc/sys/vm/drop_caches") {
        drop.write(Data("3\n".utf8))
        try? drop.close()
    }
    return pinnedParts().values.reduce(0, +)
}

func pinnedParts() -> [String: Int] {
    Dictionary(
        uniqueKeysWithValues: ["AnonPages", "SUnreclaim", "PageTables", "KernelStack", "Percpu"].map {
            ($0, meminfo($0))
        })
}

let count = args.count > 3 ? Int(args[3]) ?? 100 : 100
let pinnedBefore = pinnedKiB()
let partsBefore = pinnedParts()
let availableBefore = meminfo("MemAvailable")
var idle: [ProjectSandbox] = []
for i in 0..<count {
    idle.append(
        try await ProjectSandbox.create(
            SandboxConfiguration(projectID: "idle-\(i)", workspace: workspace, rootfs: rootfs)))
}
try await Task.sleep(for: .milliseconds(500))
let availableAfter = meminfo("MemAvailable")
let pinnedAfter = pinnedKiB()
let partsAfter = pinnedParts()
for (k, v) in partsAfter.sorted(by: { $0.key < $1.key }) { print("  \(k): \((v - partsBefore[k]!) / count) KiB") }
let privates = idle.map { privateKiB($0.initPID) }
print("")
print("idle sandboxes: \(count)")
print("  init private memory (smaps Private_*): p50 \(percentile(privates.map(Double.init), 0.5)) KiB")
print("  MemAvailable drop per sandbox (init + kernel objects): \((availableBefore - availableAfter) / count) KiB")
print(
    "  pinned per sandbox (AnonPages + SUnreclaim + PageTables + KernelStack, caches dropped): "
        + "\((pinnedAfter - pinnedBefore) / count) KiB")
for s in idle { await s.destroy() }
