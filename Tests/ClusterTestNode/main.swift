// corral-cluster-testnode: one worker host of a test or benchmark cluster, as its own
// process, so tests can kill -9 it and benchmarks can measure hosts that do not share a
// process. It prints "ready" once registered, and leaves the cluster gracefully on a
// "shutdown" line (or end of file) on stdin, printing "stopped".
//
// Usage: corral-cluster-testnode --redis URL --host NAME [--lease-ms N] [--ledger FILE]
//        [--per-project N] [--rootfs DIR]
// With --rootfs, jobs run for real in a sandbox per project (busybox image); without, a
// fake runner ends each command at once printing COMMAND@HOST (`sleep-MS…` after MS
// milliseconds; `block…` only when cancelled). Every start, and every write-back before a lease is
// released, is appended to the ledger file as one line.
import Cluster
import Foundation
import Host
import Sandbox

var options: [String: String] = [:]
var index = 1
let args = CommandLine.arguments
while index + 1 < args.count, args[index].hasPrefix("--") {
    options[String(args[index].dropFirst(2))] = args[index + 1]
    index += 2
}
guard let url = options["redis"], let host = options["host"] else {
    FileHandle.standardError.write(Data("usage: corral-cluster-testnode --redis URL --host NAME ...\n".utf8))
    exit(2)
}

/// Appends one line with a single write(2), so lines from several processes never mix.
struct Ledger: Sendable {
    let fd: Int32
    init(path: String?) { fd = path.map { open($0, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644) } ?? -1 }
    func note(_ line: String) {
        guard fd >= 0 else { return }
        _ = (line + "\n").withCString { write(fd, $0, strlen($0)) }
    }
}

/// Ends every command at once (or, for `block…`, when cancelled), printing where it ran.
struct FakeRunner: JobRunner {
    let host: String
    let ledger: Ledger

    func start(
        _ request: JobRequest, jobID: String, onOutput: @escaping @Sendable (Sandbox.OutputStream, [UInt8]) -> Void
    ) async throws -> any JobExecution {
        ledger.note("start \(request.command) \(host)")
        onOutput(.stdout, Array("\(request.command)@\(host)\n".utf8))
        if request.command.hasPrefix("sleep-"), let ms = Int(request.command.dropFirst(6).prefix(while: \.isNumber)) {
            let execution = FakeExecution(endsAtOnce: false)
            Task {
                try? await Task.sleep(for: .milliseconds(ms))
                execution.end(exitCode: 0, status: .completed)
            }
            return execution
        }
        return FakeExecution(endsAtOnce: !request.command.hasPrefix("block"))
    }
}

final class FakeExecution: JobExecution, @unchecked Sendable {
    private let lock = NSLock()
    private var result: JobResult?
    private var waiters: [CheckedContinuation<JobResult, Never>] = []

    init(endsAtOnce: Bool) { if endsAtOnce { end(exitCode: 0, status: .completed) } }

    func end(exitCode: Int32, status: JobResult.Status) {
        let done = JobResult(
            status: status, exitCode: exitCode, signal: nil, timedOut: false, oomKilled: false, durationMs: 0,
            cpuMs: 0, peakMemoryBytes: 0, stdout: "", stderr: "", truncated: false, omittedBytes: 0, logPath: nil)
        lock.lock()
        if result == nil { result = done }
        let resume = waiters
        waiters = []
        let final = result!
        lock.unlock()
        resume.forEach { $0.resume(returning: final) }
    }

    func wait() async -> JobResult {
        await withCheckedContinuation { c in
            lock.lock()
            if let result {
                lock.unlock()
                c.resume(returning: result)
            } else {
                waiters.append(c)
                lock.unlock()
            }
        }
    }

    func cancel() async -> JobResult {
        end(exitCode: 143, status: .cancelled)
        return await wait()
    }
}

/// One sandbox per project, made on first use, over a scratch workspace.
actor Sandboxes {
    let rootfs: String
    let scratch: String
    var made: [String: ProjectSandbox] = [:]

    init(rootfs: String, scratch: String) {
        self.rootfs = rootfs
        self.scratch = scratch
    }

    func sandbox(_ project: String) async throws -> ProjectSandbox {
        if let existing = made[project] { return existing }
        let workspace = scratch + "/" + project
        try FileManager.default.createDirectory(atPath: workspace, withIntermediateDirectories: true)
        let sandbox = try await ProjectSandbox.create(
            SandboxConfiguration(projectID: project, workspace: workspace, rootfs: rootfs))
        made[project] = sandbox
        return sandbox
    }

    func destroyAll() async {
        for sandbox in made.values { await sandbox.destroy() }
        made = [:]
        try? FileManager.default.removeItem(atPath: scratch)
    }
}

let ledger = Ledger(path: options["ledger"])
var configuration = ClusterConfiguration(redis: try RedisConfiguration(url: url), blockInterval: .seconds(1))
if let ms = options["lease-ms"].flatMap(Int.init) { configuration.leaseTTL = .milliseconds(ms) }
configuration.redis.maxBackoff = .milliseconds(200)
let perProject = options["per-project"].flatMap(Int.init) ?? 4
var sandboxes: Sandboxes?
let runner: any JobRunner
if let rootfs = options["rootfs"] {
    let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("corral-node-\(getpid())").path
    let pool = Sandboxes(rootfs: rootfs, scratch: scratch)
    sandboxes = pool
    let filter = try SeccompProfile.corralDefault.compile().instructions
    runner = SandboxJobRunner(
        sandbox: { try await pool.sandbox($0) },
        spec: { JobSpec(["/bin/sh", "-c", $0.command], seccomp: filter) })
} else {
    runner = FakeRunner(host: host, ledger: ledger)
}
let worker = try ClusterWorker(
    configuration: configuration, host: host, runner: runner,
    limits: JobLimits(slots: [.short: 64, .long: 8], perProject: [.short: perProject, .long: perProject])
) { project in
    ledger.note("release \(project) \(host)")
}
try await worker.start()
FileHandle.standardOutput.write(Data("ready\n".utf8))
// Blocking reads of stdin belong on a thread of their own, not the cooperative pool.
await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
    let reader = Thread {
        while let line = readLine(), line != "shutdown" {}
        done.resume()
    }
    reader.start()
}
await worker.shutdown(grace: .seconds(5))
await sandboxes?.destroyAll()
FileHandle.standardOutput.write(Data("stopped\n".utf8))
