import API
import Foundation
import Sandbox
import Synchronization

@testable import Host

/// A host without sandboxes: projects in memory, and the real job system over a runner
/// that understands `echo X`, `exit N`, `sleep S` and `lines N` (N lines, 50 ms apart).
actor FakeBackend: HostBackend {
    var infos: [String: ProjectInfo] = [:]
    var named: [String: [String: NamedSnapshot]] = [:]
    let jobsystem: JobSystem
    /// When set, submits are refused as the real queue refuses them when full.
    var overloaded = false
    var shutdownCalls = 0
    let reloads: AsyncStream<Int>
    let reloadSink: AsyncStream<Int>.Continuation
    let egress: AsyncStream<EgressEvent>
    let egressSink: AsyncStream<EgressEvent>.Continuation

    init(projects: [String] = ["alpha", "beta"], limits: JobLimits = JobLimits()) throws {
        jobsystem = try JobSystem(runner: FakeRunner(), limits: limits)
        (reloads, reloadSink) = AsyncStream.makeStream(of: Int.self)
        (egress, egressSink) = AsyncStream.makeStream(of: EgressEvent.self)
        for id in projects { infos[id] = Self.info(id) }
    }

    static func info(_ id: String, source: String = "file:///src") -> ProjectInfo {
        ProjectInfo(
            id: id, source: source, state: "cold", sourceVersion: nil, dirty: nil, diskBytes: 0, runningJobs: 0,
            queuedJobs: 0, expiresAt: Date(timeIntervalSince1970: 2_000_000_000), policy: "default", sandbox: false,
            limits: ProjectLimits(timeoutSeconds: 120))
    }

    func setOverloaded(_ value: Bool) { overloaded = value }

    nonisolated let defaultPolicy = "default"

    func register(
        _ id: String, source: String, sha256: String?, policy: String?, limits: RequestedLimits, setup: [String]?
    ) async throws -> ProjectInfo {
        if let policy, policy != "default" { throw HostError.unknownPolicy(policy) }
        if let cpus = limits.cpus, cpus > 1 {
            throw HostError.policyLimits("cpus: requested \(cpus) is above the policy's maximum of 1.0")
        }
        guard source.hasPrefix("file://") || source.hasPrefix("s3://") || source.hasPrefix("https://") else {
            throw CacheError.unsupportedSource(source)
        }
        let kept = infos[id]?.setup.commands ?? []
        infos[id] = Self.info(id, source: source)
        infos[id]!.setup = Self.setup(setup ?? kept)
        return infos[id]!
    }

    func upload(_ id: String, archive: [UInt8], policy: String?, limits: RequestedLimits, setup: [String]?)
        async throws -> ProjectInfo
    {
        guard archive.starts(with: [0x1F, 0x8B]) else { throw CacheError.corruptArchive("not gzip") }
        let kept = infos[id]?.setup.commands ?? []
        infos[id] = Self.info(id, source: "blob:uploads/\(id)")
        infos[id]!.setup = Self.setup(setup ?? kept)
        return infos[id]!
    }

    /// Commands the fake has not run: pending, or none.
    static func setup(_ commands: [String]) -> SetupInfo {
        SetupInfo(status: commands.isEmpty ? .none : .pending, commands: commands)
    }

    func setSetup(_ id: String, commands: [String]) async throws -> ProjectInfo {
        guard infos[id] != nil else { throw HostError.projectNotFound(id) }
        infos[id]!.setup = Self.setup(commands)
        return infos[id]!
    }

    /// "Runs" the commands: every one succeeds, except `false`, which fails with 1.
    func runSetup(_ id: String, progress: (@Sendable (CacheProgress) -> Void)?) async throws -> ProjectInfo {
        guard var info = infos[id] else { throw HostError.projectNotFound(id) }
        let commands = info.setup.commands
        guard !commands.isEmpty else { return info }
        progress?(.setup(.started(commands: commands.count)))
        var failed: Int?
        for (index, command) in commands.enumerated() {
            progress?(.setup(.command(index: index + 1, command: command)))
            progress?(.setup(.output("ran \(command)\n")))
            if command == "false" {
                failed = index + 1
                break
            }
        }
        let status: SetupInfo.Status = failed == nil ? .succeeded : .failed
        progress?(.setup(.finished(status: status.rawValue, exitCode: failed == nil ? 0 : 1, durationMs: 1)))
        info.setup = SetupInfo(
            status: status, commands: commands, key: "sha256:fake", startedAt: Date(timeIntervalSince1970: 0),
            durationMs: 1, exitCode: failed == nil ? 0 : 1, failedCommand: failed)
        infos[id] = info
        return info
    }

    func project(_ id: String) async throws -> ProjectInfo {
        guard let info = infos[id] else { throw HostError.projectNotFound(id) }
        return info
    }

    func projects() async -> [ProjectInfo] { infos.values.sorted { $0.id < $1.id } }

    /// No sandboxes here: nothing ever listens.
    func ports(_ id: String) async throws -> PortList {
        _ = try await project(id)
        return PortList(project: id, sandbox: false, ports: [])
    }

    func portEndpoint(_ id: String, port: UInt16) async throws -> PortEndpoint {
        _ = try await project(id)
        throw PortError.noSandbox(project: id, port: port)
    }

    func warm(_ id: String, progress: (@Sendable (CacheProgress) -> Void)?) async throws -> ProjectInfo {
        guard var info = infos[id] else { throw HostError.projectNotFound(id) }
        progress?(.downloading(TransferProgress(bytes: 10, total: 20, bytesPerSecond: 100)))
        progress?(.extracting)
        progress?(.ready)
        info.state = "ready"
        info.sandbox = true
        infos[id] = info
        return info
    }

    func snapshot(_ id: String) async throws -> SnapshotResult? {
        guard infos[id]?.state == "ready" else { return nil }
        return SnapshotResult(key: "snapshots/\(id)", version: "v1", bytes: 10, files: 1, skipped: 0)
    }

    func evict(_ id: String, discard: Bool) async throws {
        guard infos[id] != nil else { throw HostError.projectNotFound(id) }
        infos[id]?.state = "cold"
    }

    func delete(_ id: String) async throws {
        guard infos.removeValue(forKey: id) != nil else { throw HostError.projectNotFound(id) }
    }

    func patch(_ id: String, archive: [UInt8]) async throws -> PatchSummary {
        guard infos[id] != nil else { throw HostError.projectNotFound(id) }
        guard archive.starts(with: [0x1F, 0x8B]) else { throw CacheError.corruptArchive("not gzip") }
        return PatchSummary(project: id, filesWritten: 1, bytesWritten: Int64(archive.count))
    }

    func createSnapshot(_ id: String, name: String) async throws -> NamedSnapshot {
        guard infos[id] != nil else { throw HostError.projectNotFound(id) }
        guard NamedSnapshot.isValid(name) else { throw CacheError.invalidSnapshotName(name) }
        guard named[id]?[name] == nil else { throw CacheError.snapshotExists(project: id, name: name) }
        let snapshot = NamedSnapshot(
            name: name, project: id, createdAt: Date(), bytes: 10, files: 1, sha256: String(repeating: "0", count: 64))
        named[id, default: [:]][name] = snapshot
        return snapshot
    }

    func snapshots(_ id: String) async throws -> [NamedSnapshot] {
        guard infos[id] != nil else { throw HostError.projectNotFound(id) }
        return (named[id] ?? [:]).values.sorted { $0.createdAt < $1.createdAt }
    }

    func namedSnapshot(_ id: String, name: String) async throws -> NamedSnapshot {
        guard infos[id] != nil else { throw HostError.projectNotFound(id) }
        guard let found = named[id]?[name] else { throw CacheError.snapshotNotFound(project: id, name: name) }
        return found
    }

    func restoreSnapshot(_ id: String, name: String) async throws -> NamedSnapshot {
        try await namedSnapshot(id, name: name)
    }

    func deleteSnapshot(_ id: String, name: String) async throws {
        _ = try await namedSnapshot(id, name: name)
        named[id]?[name] = nil
    }

    /// The real job system, behind the checks the real host makes before a submit.
    nonisolated var jobService: any JobService {
        CheckedJobService(jobsystem) { request in try await self.check(request) }
    }

    func check(_ request: JobRequest) throws {
        guard infos[request.project] != nil else { throw HostError.projectNotFound(request.project) }
        if overloaded { throw JobError.overloaded(retryAfterSeconds: 7, scope: "host") }
        if request.timeoutSeconds > 1800 {
            throw HostError.policyLimits(
                "timeout \(request.timeoutSeconds) s is above the policy's maximum of 1800 s")
        }
    }

    func status() async -> HostStatus {
        HostStatus(
            version: "test", projects: infos.count, sandboxes: 0, queuedJobs: 0, runningJobs: 0, workerSlots: [:],
            cgroupMode: "none", enforcedLimits: [:], policies: ["default": "sha256:x"], policyErrors: [])
    }

    func readiness() async -> [String: Bool] { ["queue": !overloaded, "rootfs": true] }
    func policyReloads() async -> AsyncStream<Int> { reloads }
    func egressEvents() async -> AsyncStream<EgressEvent> { egress }
    func policySummary() async -> (digests: [String: String], errors: [String]) { (["default": "sha256:x"], []) }
    func shutdown(grace: Duration) async {
        shutdownCalls += 1
        await jobsystem.shutdown(grace: grace)
    }
}

/// Runs the fake command language of ``FakeBackend``.
struct FakeRunner: JobRunner {
    func start(
        _ request: JobRequest, jobID: String, onOutput: @escaping @Sendable (Sandbox.OutputStream, [UInt8]) -> Void
    ) async throws -> any JobExecution {
        let words = request.command.split(separator: " ", maxSplits: 1).map(String.init)
        if words.first == "unstartable" { throw JobError.invalidRequest("cannot start") }
        return FakeExecution(words: words, timeout: request.timeoutSeconds, onOutput: onOutput)
    }
}

final class FakeExecution: JobExecution {
    let task: Task<JobResult, Never>
    /// The signal a cancel sent; a cancelled fake job exits with 128 + its number.
    let signalled: Signalled

    final class Signalled: Sendable {
        let signal = Mutex(JobSignal.term)
    }

    init(words: [String], timeout: Double, onOutput: @escaping @Sendable (Sandbox.OutputStream, [UInt8]) -> Void) {
        let signalled = Signalled()
        self.signalled = signalled
        task = Task {
            let start = ContinuousClock.now
            var stdout = ""
            func emit(_ text: String) {
                stdout += text
                onOutput(.stdout, Array(text.utf8))
            }
            var code: Int32 = 0
            var status = JobResult.Status.completed
            let argument = words.count > 1 ? words[1] : ""
            switch words.first ?? "" {
            case "echo": emit(argument + "\n")
            case "exit": code = Int32(argument) ?? 1
            case "sleep", "lines":
                let seconds = words[0] == "sleep" ? Double(argument) ?? 1 : 0.05 * (Double(argument) ?? 1)
                let steps = words[0] == "lines" ? Int(argument) ?? 1 : 1
                for step in 1...max(1, steps) {
                    let slice = min(seconds / Double(steps), timeout)
                    if (try? await Task.sleep(for: .milliseconds(Int(slice * 1000)))) == nil {
                        status = .cancelled
                        code = 128 + signalled.signal.withLock { $0.number }
                        break
                    }
                    if words[0] == "lines" { emit("line \(step)\n") }
                    if ContinuousClock.now - start >= .milliseconds(Int(timeout * 1000)) {
                        status = .timedOut
                        code = 124
                        break
                    }
                }
            default: emit("ran: \(words.joined(separator: " "))\n")
            }
            let elapsed = ContinuousClock.now - start
            return JobResult(
                status: status, exitCode: code, signal: nil, timedOut: status == .timedOut, oomKilled: false,
                durationMs: Int(
                    elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000),
                cpuMs: 0, peakMemoryBytes: 0, stdout: stdout, stderr: "", truncated: false, omittedBytes: 0,
                logPath: nil)
        }
    }

    func wait() async -> JobResult { await task.value }

    func cancel() async -> JobResult { await cancel(signal: .term) }

    func cancel(signal: JobSignal) async -> JobResult {
        signalled.signal.withLock { $0 = signal }
        task.cancel()
        return await task.value
    }
}

/// File tools over an in-memory tree per project: enough to route and wrap calls.
final class FakeFiles: FileToolBackend {
    let files = Mutex<[String: [String: String]]>([:])
    let fileToolNames = [
        "read_file", "write_file", "edit_file", "read_text_file", "list_dir", "glob", "grep", "file_info",
    ]

    func put(_ project: String, _ path: String, _ text: String) {
        files.withLock { $0[project, default: [:]][path] = text }
    }

    func callFileTool(project: String, name: String, arguments: [String: JSON], caller: String?) async throws
        -> ToolResult
    {
        let path = arguments["path"]?.stringValue ?? ""
        switch name {
        case "read_file", "read_text_file":
            guard let text = files.withLock({ $0[project]?[path] }) else {
                return ToolResult(
                    text: "not_found: \(path)", structured: ["code": "not_found"], isError: true,
                    errorCode: "not_found")
            }
            let numbered = text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().enumerated()
                .map { "\($0.offset + 1)\t\($0.element)" }.joined(separator: "\n")
            return ToolResult(text: numbered, structured: ["path": .string(path)], isError: false)
        case "write_file":
            put(project, path, arguments["content"]?.stringValue ?? "")
            return ToolResult(text: "wrote \(path)", structured: [:], isError: false)
        case "edit_file":
            let old = arguments["old_str"]?.stringValue ?? ""
            let new = arguments["new_str"]?.stringValue ?? ""
            let ok = files.withLock { tree -> Bool in
                guard let text = tree[project]?[path], text.contains(old), !old.isEmpty else { return false }
                tree[project]?[path] = text.replacingOccurrences(of: old, with: new)
                return true
            }
            return ok
                ? ToolResult(text: "edited \(path)", structured: [:], isError: false)
                : ToolResult(
                    text: "old_str_not_found in \(path)", structured: [:], isError: true,
                    errorCode: "old_str_not_found")
        default:
            return ToolResult(text: "\(name) ok", structured: [:], isError: false)
        }
    }
}
