import Foundation
import Logging
import Sandbox
import Synchronization

/// Runs projects' setup commands once per file set, before their other jobs
/// (docs/ENVIRONMENTS.md, "Setup").
///
/// A run is a job of the project in the project's own sandbox, so what it installs lands in
/// the workspace: as the policy's user, at `/workspace`, one command after another with
/// `/bin/sh -c`, stopping at the first that fails, under the policy's `[setup]` timeout, in
/// a cgroup of its own with `[setup.limits]`, while the egress proxy applies
/// `[setup.network]` to the project. One run per project at a time: jobs, sessions and
/// warm-ups that need it wait for the same run. Its record is kept with the workspace by
/// the cache, so a restart, an eviction or another host restoring the workspace knows it ran.
actor SetupRunner {
    /// What a run needs of the host.
    struct Context: Sendable {
        let cache: ProjectCache
        /// Materializes and pins the workspace and finds its sandbox (``HostJobRunner``'s).
        let sandbox: @Sendable (ResolvedProject) async throws -> ProjectSandbox
        let resolve: @Sendable (String) throws -> ResolvedProject
        /// The project's setup commands as registered now.
        let commands: @Sendable (String) -> [String]
        let rootfsDirectory: String
    }

    /// One run in progress: who waits for it, what it has printed so far, the command that
    /// is running (so a shutdown can stop it).
    final class Run: Sendable {
        let key: String
        let startedAt = Date()
        let fanout = ProgressFanout()
        let tail = OutputTail()
        let job = Mutex<RunningJob?>(nil)
        let task: Mutex<Task<Outcome, Never>?> = Mutex(nil)

        init(key: String) { self.key = key }
    }

    /// How a run ended.
    enum Outcome: Sendable {
        /// It ran: every command succeeded, or one failed (the record says which and how).
        case finished(SetupRecord)
        /// It was cut short (the sandbox went, the host is stopping): nothing is recorded as
        /// done, so setup runs again.
        case interrupted(String)
        /// It could not begin: the workspace or the sandbox could not be had.
        case unavailable(any Error)
    }

    let context: Context
    /// The projects whose setup runs now: the egress proxy applies `[setup.network]` to them.
    nonisolated let active: SetupGate
    private var runs: [String: Run] = [:]
    /// Runs started by an upload or a change of commands, which nobody waits for.
    private var background: [UUID: Task<Void, Never>] = [:]
    private var closed = false
    private let logger = Logger(label: "corral.setup")

    init(_ context: Context, gate: SetupGate) {
        self.context = context
        self.active = gate
    }

    // MARK: - Waiting for setup

    /// Returns once the project's setup has run on its current files, running it first if
    /// it must (and waiting for a run in progress). Throws ``HostError/setupFailed(project:message:)``
    /// when it failed for the current files and commands. A cold project has nothing to
    /// prepare yet: its setup runs after it is materialized.
    func ensure(_ id: String, progress: (@Sendable (CacheProgress) -> Void)? = nil) async throws {
        if let run = runs[id] { return try await wait(for: run, id, progress: progress) }
        guard let need = try await need(id, force: false) else { return }
        // Another caller may have started it while this one looked.
        try await wait(for: runs[id] ?? start(id, need), id, progress: progress)
    }

    /// Runs the project's setup now, whatever its record says (joining a run in progress),
    /// and returns its record; nil when the project has no setup commands. A failed run is
    /// a result here, not an error.
    func rerun(_ id: String, progress: (@Sendable (CacheProgress) -> Void)? = nil) async throws -> SetupRecord? {
        let run: Run
        if let running = runs[id] {
            run = running
        } else {
            guard let need = try await need(id, force: true) else { return nil }
            run = runs[id] ?? start(id, need)
        }
        run.fanout.add(progress)
        switch await outcome(of: run) {
        case .finished(let record): return record
        case .interrupted(let why): throw CacheError.busy(why)
        case .unavailable(let error): throw error
        }
    }

    /// Starts the project's setup if it needs to run, without waiting: after an upload
    /// made or replaced the workspace, or the commands changed on a materialized project.
    func startInBackground(_ id: String) {
        guard !closed else { return }
        let token = UUID()
        background[token] = Task {
            do { try await self.ensure(id) } catch { self.logger.info("setup of \(id): \(error)") }
            self.finishBackground(token)
        }
    }

    private func finishBackground(_ token: UUID) { background[token] = nil }

    /// Why jobs of the project are refused now (its setup failed for its current files and
    /// commands), or nil. Never starts anything.
    func failure(_ id: String) async -> HostError? {
        guard runs[id] == nil, let project = try? context.resolve(id) else { return nil }
        let commands = context.commands(id)
        guard !commands.isEmpty, let state = try? await context.cache.setupState(id), let base = state.baseVersion,
            let record = state.record, record.status == .failed,
            record.key == SetupKey.of(baseVersion: base, commands: commands, rootfs: project.policy.rootfs)
        else { return nil }
        return Self.failed(id, record, commands: commands)
    }

    /// The project's setup as `GET /v1/projects/{id}` shows it.
    func info(_ id: String, policy: Policy?) async -> SetupInfo {
        let commands = context.commands(id)
        guard !commands.isEmpty else { return SetupInfo(status: .none) }
        if let run = runs[id] {
            return SetupInfo(
                status: .running, commands: commands, key: run.key, startedAt: run.startedAt,
                outputTail: run.tail.text)
        }
        var info = SetupInfo(status: .pending, commands: commands)
        guard let policy, let state = try? await context.cache.setupState(id), let base = state.baseVersion else {
            return info
        }
        info.key = SetupKey.of(baseVersion: base, commands: commands, rootfs: policy.rootfs)
        // A record of other files or commands, or of a run cut short, is no answer: pending.
        if let record = state.record, record.key == info.key, record.status != .running {
            info = SetupInfo(record, commands: commands)
        }
        return info
    }

    // MARK: - Stopping

    /// Waits until the project's run, if one is going, has ended: after its sandbox was
    /// destroyed (an eviction), so the workspace is no longer pinned by it.
    func settle(_ id: String) async {
        guard let run = runs[id] else { return }
        _ = await outcome(of: run)
    }

    /// Starts no more runs and stops those in progress (their commands are killed; nothing
    /// is recorded as done), waiting until every one has ended.
    func shutdown() async {
        closed = true
        for run in runs.values {
            let job = run.job.withLock { $0 }
            _ = await job?.cancel(signal: .kill)
        }
        for run in runs.values { _ = await outcome(of: run) }
        for task in background.values { await task.value }
    }

    // MARK: - A run

    /// What a run needs: the commands, the key and the workspace they run for.
    struct Need: Sendable {
        let project: ResolvedProject
        let commands: [String]
        let key: String
        let workspace: Workspace
    }

    /// What must run for the project now, or nil. Without `force` a record of the current
    /// key answers: done, or failed (thrown).
    private func need(_ id: String, force: Bool) async throws -> Need? {
        let commands = context.commands(id)
        guard !commands.isEmpty else { return nil }
        let project = try context.resolve(id)
        var state = try await context.cache.setupState(id)
        if state.workspace == nil, force {
            // A rerun asked for by hand materializes the project first.
            _ = try await context.sandbox(project)
            try? await context.cache.release(id)
            state = try await context.cache.setupState(id)
        }
        guard let workspace = state.workspace, let base = state.baseVersion else { return nil }
        let key = SetupKey.of(baseVersion: base, commands: commands, rootfs: project.policy.rootfs)
        if !force, let record = state.record, record.key == key {
            switch record.status {
            case .succeeded: return nil
            case .failed: throw Self.failed(id, record, commands: commands)
            // Not running here: a run a restart (or a crash elsewhere) cut short.
            case .running: break
            }
        }
        return Need(project: project, commands: commands, key: key, workspace: workspace)
    }

    private func start(_ id: String, _ need: Need) -> Run {
        let run = Run(key: need.key)
        runs[id] = run
        active.insert(id)
        run.task.withLock {
            $0 = Task {
                let outcome = await self.perform(id, need, run)
                await self.finish(id, run)
                return outcome
            }
        }
        return run
    }

    private func finish(_ id: String, _ run: Run) {
        if runs[id] === run {
            runs[id] = nil
            active.remove(id)
        }
    }

    private func outcome(of run: Run) async -> Outcome {
        guard let task = run.task.withLock({ $0 }) else { return .interrupted("setup did not start") }
        return await task.value
    }

    private func wait(for run: Run, _ id: String, progress: (@Sendable (CacheProgress) -> Void)?) async throws {
        run.fanout.add(progress)
        switch await outcome(of: run) {
        case .finished(let record):
            if record.status == .failed { throw Self.failed(id, record, commands: context.commands(id)) }
        case .interrupted(let why): throw CacheError.busy(why)
        case .unavailable(let error): throw error
        }
    }

    private func perform(_ id: String, _ need: Need, _ run: Run) async -> Outcome {
        guard !closed else { return .interrupted("the host is shutting down; setup of \(id) did not start") }
        let sandbox: ProjectSandbox
        do {
            sandbox = try await context.sandbox(need.project)
        } catch {
            return .unavailable(error)
        }
        let outcome = await runCommands(id, need, run, in: sandbox)
        try? await context.cache.release(id)
        return outcome
    }

    private func runCommands(_ id: String, _ need: Need, _ run: Run, in sandbox: ProjectSandbox) async -> Outcome {
        let cache = context.cache
        var record = SetupRecord(status: .running, key: need.key, startedAt: run.startedAt)
        _ = try? await cache.recordSetup(id, record, on: need.workspace)
        logger.info("setup started", metadata: ["project": "\(id)", "commands": "\(need.commands.count)"])
        run.fanout.send(.setup(.started(commands: need.commands.count)))
        let deadline = ContinuousClock.now + .seconds(need.project.policy.setup.timeoutSeconds)
        let interrupted =
            "setup of \(id) was interrupted (its sandbox stopped, or the host is stopping); it runs again with the next job"
        commands: for (index, command) in need.commands.enumerated() {
            if closed { return .interrupted(interrupted) }
            switch await runOne(index, command, need, run, in: sandbox, until: deadline) {
            case .succeeded: record.exitCode = 0
            case .interrupted: return .interrupted(interrupted)
            case .failed(let exitCode, let error):
                (record.exitCode, record.error, record.failedCommand) = (exitCode, error, index + 1)
                break commands
            }
        }
        record.status = record.failedCommand == nil ? .succeeded : .failed
        record.durationMs = Int((Date().timeIntervalSince(run.startedAt) * 1000).rounded())
        record.outputTail = run.tail.text
        _ = try? await cache.recordSetup(id, record, on: need.workspace)
        logger.info(
            "setup \(record.status.rawValue)",
            metadata: [
                "project": "\(id)", "duration_ms": "\(record.durationMs ?? 0)",
                "exit_code": "\(record.exitCode.map(String.init) ?? "none")",
            ])
        run.fanout.send(
            .setup(
                .finished(status: record.status.rawValue, exitCode: record.exitCode, durationMs: record.durationMs ?? 0)
            ))
        return .finished(record)
    }

    /// How one command ended.
    private enum CommandEnd {
        case succeeded
        case failed(exitCode: Int32?, error: String?)
        /// Its sandbox went, or the host is stopping: nothing to record.
        case interrupted
    }

    /// Runs the command `index` (0-based) of a run in the sandbox, until `deadline` at most.
    private func runOne(
        _ index: Int, _ command: String, _ need: Need, _ run: Run, in sandbox: ProjectSandbox,
        until deadline: ContinuousClock.Instant
    ) async -> CommandEnd {
        let policy = need.project.policy
        run.tail.append(Array("$ \(command)\n".utf8))
        run.fanout.send(.setup(.command(index: index + 1, command: command)))
        let result: JobResult
        do {
            let remaining = deadline - ContinuousClock.now
            let job = try await sandbox.start(spec(need, command: command, timeout: remaining, run: run))
            run.job.withLock { $0 = job }
            // A shutdown that began while the command started has not seen it: stop it here.
            if closed { _ = await job.cancel(signal: .kill) }
            result = await job.wait()
            run.job.withLock { $0 = nil }
        } catch {
            guard sandbox.isAlive else { return .interrupted }
            return .failed(exitCode: nil, error: "command \(index + 1) could not start: \(error)")
        }
        guard sandbox.isAlive, result.status != .cancelled, result.status != .sandboxDied, !closed else {
            return .interrupted
        }
        if result.status == .timedOut {
            return .failed(
                exitCode: result.exitCode,
                error:
                    "setup took longer than its \(policy.setup.timeoutSeconds) s ([setup] timeout_s of policy \"\(policy.name)\") and was killed"
            )
        }
        if result.oomKilled {
            let memory = ByteSize.format(setupLimits(need.project).memoryBytes ?? 0)
            return .failed(
                exitCode: result.exitCode,
                error:
                    "command \(index + 1) was killed for using more memory than setup may (\(memory), [setup.limits] memory of policy \"\(policy.name)\")"
            )
        }
        return result.exitCode == 0 ? .succeeded : .failed(exitCode: result.exitCode, error: nil)
    }

    /// One command as a sandbox job: the policy's identity, seccomp and environment (with the
    /// proxy when `[setup.network]` gives network), `[setup.limits]`, at `/workspace`.
    private func spec(_ need: Need, command: String, timeout: Duration, run: Run) throws -> JobSpec {
        let policy = need.project.policy
        let environment = HostJobRunner.environment(policy, network: policy.setup.network.mode, requested: [:])
        let shell = JobShell.sh.program(rootfs: context.rootfsDirectory + "/" + policy.rootfs)
        var spec = JobSpec(
            [shell, "-c", command], environment: environment, cwd: "/workspace",
            timeout: max(timeout, .milliseconds(1)), uid: policy.user.uid, gid: policy.user.gid,
            keepCapabilities: policy.capabilities.mask, seccomp: try policy.seccompProgram().instructions
        ) { [tail = run.tail, fanout = run.fanout] _, bytes in
            tail.append(bytes)
            fanout.send(.setup(.output(String(decoding: bytes, as: UTF8.self))))
        }
        spec.ownLimits = setupLimits(need.project)
        return spec
    }

    /// `[setup.limits]`, each limit the policy leaves out the project's own.
    private func setupLimits(_ project: ResolvedProject) -> CgroupLimits {
        let setup = project.policy.setup
        return CgroupLimits(
            cpus: setup.cpus ?? project.limits.cpus, memoryBytes: setup.memoryBytes ?? project.limits.memoryBytes,
            pids: setup.pids ?? project.limits.pids)
    }

    /// The refusal of a project whose setup failed, with the exit code and the output tail.
    static func failed(_ id: String, _ record: SetupRecord, commands: [String]) -> HostError {
        var what = "setup of project \(id) failed"
        if let index = record.failedCommand, index <= commands.count {
            what += ": command \(index) of \(commands.count) (`\(commands[index - 1])`)"
            if let code = record.exitCode, record.error == nil { what += " exited with \(code)" }
        }
        if let error = record.error { what += ": \(error)" }
        let tail = record.outputTail.isEmpty ? "(no output)" : record.outputTail
        return .setupFailed(
            project: id,
            message:
                "\(what). Jobs are refused until the setup commands change (PUT /v1/projects/\(id)/setup), the files change, or setup runs again (POST /v1/projects/\(id)/setup/run). The end of its output:\n\(tail)"
        )
    }
}

/// The projects whose setup runs now, read by the egress proxy for every connection.
final class SetupGate: Sendable {
    private let projects = Mutex<Set<String>>([])

    func insert(_ id: String) { _ = projects.withLock { $0.insert(id) } }
    func remove(_ id: String) { _ = projects.withLock { $0.remove(id) } }
    func contains(_ id: String) -> Bool { projects.withLock { $0.contains(id) } }
}

/// The last ``SetupRecord/tailBytes`` of a run's output, filled from the event loop.
final class OutputTail: Sendable {
    private let bytes = Mutex<[UInt8]>([])

    func append(_ chunk: [UInt8]) {
        bytes.withLock { bytes in
            bytes += chunk
            if bytes.count > SetupRecord.tailBytes { bytes.removeFirst(bytes.count - SetupRecord.tailBytes) }
        }
    }

    var text: String { String(decoding: bytes.withLock { $0 }, as: UTF8.self) }
}
