import Foundation
import Glibc
import Sandbox
import Synchronization

/// A session's process as the host started it: the driver job in the project's sandbox,
/// and what to do once it is gone.
struct SessionProcess: Sendable {
    let job: RunningJob
    /// `bash`, `sh` or `python3`, until the driver says its version.
    let interpreter: String
    /// Whether the sandbox it runs in is still up (a stopped sandbox explains a death).
    let sandboxAlive: @Sendable () -> Bool
    /// Unpins the project's workspace, which the session held while its process lived.
    let release: @Sendable () async -> Void
}

/// What a session's process reports, bound to the session that started it.
struct SessionEvents: Sendable {
    let output: @Sendable (Sandbox.OutputStream, [UInt8]) -> Void
    let reply: @Sendable ([UInt8]?) -> Void
}

/// A long-lived shell or python process in a project's sandbox, and the runs it served
/// (docs/SESSIONS.md).
final class Session: Sendable {
    let id: String
    let project: String
    let request: SessionRequest
    let owner: String
    let idleTimeoutSeconds: Int
    /// Per-stream cap of a run's kept output.
    let outputCap: Int
    let killGrace: Duration
    /// Starts a process for the session; `SessionEvents` carry its output and replies.
    let launch: @Sendable (SessionEvents) async throws -> SessionProcess
    private let state: Mutex<State>

    struct State {
        var process: SessionProcess?
        /// Bumped by each start, so events of a process that was replaced are ignored.
        var incarnation = 0
        var parser: ReplyParser
        var ready: CheckedContinuation<Void, any Error>?
        var readyReply: Bool = false
        var current: SessionRun?
        var runs: [SessionRun] = []
        var nextRun = 1
        var commandsRun = 0
        var cwd: String
        var startedAt = Date()
        var lastUsed = Date()
        var lastUsedClock = ContinuousClock.now
        var ended: SessionEnd?
        /// Why the host is ending the process, said instead of "killed by signal 9".
        var ending: String?
        var interpreter: String
        var deleted = false
        /// What the process printed before its first run, for a start that fails.
        var startupOutput: [UInt8] = []

        /// A run started or ended now: the idle timeout counts from here.
        mutating func markUsed() {
            lastUsed = Date()
            lastUsedClock = .now
        }
    }

    /// Runs kept for polling after they end.
    static let keptRuns = 16

    init(
        id: String, project: String, request: SessionRequest, owner: String, idleTimeoutSeconds: Int,
        outputCap: Int, killGrace: Duration, launch: @escaping @Sendable (SessionEvents) async throws -> SessionProcess
    ) {
        self.id = id
        self.project = project
        self.request = request
        self.owner = owner
        self.idleTimeoutSeconds = idleTimeoutSeconds
        self.outputCap = outputCap
        self.killGrace = killGrace
        self.launch = launch
        state = Mutex(
            State(
                parser: ReplyParser(kind: request.kind), cwd: request.cwd,
                interpreter: request.kind == .python ? "python3" : "sh"))
    }

    var kind: SessionKind { request.kind }

    // MARK: - Starting and ending

    /// Starts the process and waits for its driver to say it is ready.
    func start() async throws {
        let incarnation = state.withLock { state -> Int in
            state.incarnation += 1
            state.parser = ReplyParser(kind: kind)
            state.readyReply = false
            state.startupOutput = []
            state.ended = nil
            state.ending = nil
            state.commandsRun = 0
            state.cwd = request.cwd
            state.startedAt = Date()
            state.markUsed()
            return state.incarnation
        }
        let events = SessionEvents(
            output: { [weak self] stream, bytes in self?.output(stream, bytes, incarnation: incarnation) },
            reply: { [weak self] bytes in self?.reply(bytes, incarnation: incarnation) })
        let process = try await launch(events)
        let stale = state.withLock { state -> Bool in
            guard state.incarnation == incarnation, !state.deleted else { return true }
            state.process = process
            state.interpreter = process.interpreter
            return false
        }
        if stale {
            await process.job.cancel(signal: .kill)
            await process.release()
            throw SessionError.notFound(project: project, session: id)
        }
        Task { [weak self] in
            let result = await process.job.wait()
            await process.release()
            self?.died(result, incarnation: incarnation, sandboxAlive: process.sandboxAlive())
        }
        // A driver that never says it is ready is killed after 15 s: its death is what
        // resumes the wait (a task group would otherwise wait for the waiting child forever).
        let deadline = Task { [weak self] in
            try await Task.sleep(for: .seconds(15))
            self?.state.withLock { $0.ending = "it did not start within 15 s" }
            await process.job.cancel(signal: .kill)
        }
        defer { deadline.cancel() }
        do {
            try await waitReady(incarnation)
        } catch {
            await process.job.cancel(signal: .kill)
            throw error
        }
    }

    private func waitReady(_ incarnation: Int) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let outcome = state.withLock { state -> Result<Void, any Error>? in
                guard state.incarnation == incarnation else {
                    return .failure(SessionError.notFound(project: project, session: id))
                }
                if state.readyReply { return .success(()) }
                if let ended = state.ended { return .failure(startFailure(ended, output: state.startupOutput)) }
                state.ready = continuation
                return nil
            }
            if let outcome { continuation.resume(with: outcome) }
        }
    }

    private func startFailure(_ end: SessionEnd, output: [UInt8]) -> SessionError {
        let said = String(decoding: output.suffix(2000), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return .unavailable(
            "the session's \(kind.rawValue) ended as it started (\(end.reason))" + (said.isEmpty ? "" : ": " + said))
    }

    /// Ends the process (if it runs) with `reason` and waits until it is gone.
    func stop(reason: String) async {
        let process = state.withLock { state -> SessionProcess? in
            if state.process != nil { state.ending = reason }
            return state.process
        }
        guard let process else { return }
        await process.job.cancel(signal: .kill)
        // The death handler runs on its own task; wait for it to record the end.
        while state.withLock({ $0.process != nil }) { try? await Task.sleep(for: .milliseconds(2)) }
    }

    /// Ends the session for good (delete, eviction, idle, shutdown).
    func end(reason: String) async {
        state.withLock { $0.deleted = true }
        await stop(reason: reason)
    }

    /// Ends the process and starts a fresh one under the same id.
    func restart() async throws {
        if let run = state.withLock({ $0.current }) { _ = run.markInterrupted(.cancelled) }
        await stop(reason: "restarted")
        state.withLock { state in
            state.runs = []
            state.current = nil
        }
        try await start()
    }

    // MARK: - Events (event loop thread, and the death task)

    private func output(_ stream: Sandbox.OutputStream, _ bytes: [UInt8], incarnation: Int) {
        let run = state.withLock { state -> SessionRun? in
            guard state.incarnation == incarnation else { return nil }
            if state.current == nil && state.startupOutput.count < 8192 { state.startupOutput += bytes.prefix(8192) }
            return state.current
        }
        run?.append(stream, bytes)
    }

    private func reply(_ bytes: [UInt8]?, incarnation: Int) {
        guard let bytes else { return }  // EOF: the process's death says the rest
        var ready: CheckedContinuation<Void, any Error>?
        var finished: (SessionRun, ReplyParser.Reply)?
        var broken = false
        state.withLock { state in
            guard state.incarnation == incarnation else { return }
            guard let replies = state.parser.feed(bytes) else {
                broken = true
                return
            }
            for reply in replies {
                switch reply {
                case .shell(let id, _, let cwd) where id == 0:
                    state.cwd = cwd
                    state.readyReply = true
                    ready = state.ready
                    state.ready = nil
                case .python(let fields) where fields["ready"] != nil:
                    if let version = fields["version"]?.asString { state.interpreter = "python \(version)" }
                    state.readyReply = true
                    ready = state.ready
                    state.ready = nil
                case .shell(let id, _, let cwd):
                    state.cwd = cwd
                    if let run = state.current, run.number == id {
                        finished = (run, reply)
                        state.current = nil
                        state.markUsed()
                    }
                case .python(let fields):
                    if let run = state.current, case .number(let id)? = fields["id"], Int(id) == run.number {
                        finished = (run, reply)
                        state.current = nil
                        state.markUsed()
                    }
                }
            }
        }
        ready?.resume()
        if let (run, reply) = finished {
            switch reply {
            case .shell(_, let status, let cwd): run.finish(status: status, cwd: cwd)
            case .python(let fields): run.finish(python: fields)
            }
        }
        if broken {
            // Something wrote to the reply pipe that is not the driver's framing: the
            // session can no longer be trusted to tell runs apart.
            let process = state.withLock { state -> SessionProcess? in
                state.ending = "its reply pipe carried something other than the driver's replies"
                return state.process
            }
            if let process { Task { await process.job.cancel(signal: .kill) } }
        }
    }

    private func died(_ result: JobResult, incarnation: Int, sandboxAlive: Bool) {
        let (run, ready, end) = state.withLock {
            state -> (SessionRun?, CheckedContinuation<Void, any Error>?, SessionEnd?) in
            guard state.incarnation == incarnation else { return (nil, nil, nil) }
            let end = Self.describe(result, kind: kind, ending: state.ending, sandboxAlive: sandboxAlive)
            state.ended = end
            state.process = nil
            let run = state.current
            state.current = nil
            let ready = state.ready
            state.ready = nil
            return (run, ready, end)
        }
        guard let end else { return }
        run?.lose(end)
        if let ready {
            let output = state.withLock { $0.startupOutput }
            ready.resume(throwing: startFailure(end, output: output))
        }
    }

    static func describe(_ result: JobResult, kind: SessionKind, ending: String?, sandboxAlive: Bool) -> SessionEnd {
        let signal = result.signal
        let code: Int32? = signal == nil ? result.exitCode : nil
        let what = kind == .python ? "the python interpreter" : "the shell"
        let reason: String
        if let ending {
            reason = ending
        } else if result.oomKilled {
            reason = "the kernel's OOM killer killed \(what): the project's memory limit was reached"
        } else if result.status == .sandboxDied {
            reason = "the project's sandbox died (its init process was killed), and \(what) with it"
        } else if !sandboxAlive {
            reason = "the project's sandbox was stopped"
        } else if let signal {
            reason = "\(what) was killed by signal \(signal)"
        } else {
            reason = "\(what) exited with code \(result.exitCode)"
        }
        return SessionEnd(reason: reason, exitCode: code, signal: signal, oomKilled: result.oomKilled)
    }

    // MARK: - Runs

    /// Starts a run; throws when the session is busy or dead.
    func run(_ request: SessionRunRequest, timeoutSeconds: Double) async throws -> SessionRun {
        let (process, number) = try state.withLock { state -> (SessionProcess, Int) in
            let process = try idleProcess(state)
            defer { state.nextRun += 1 }
            return (process, state.nextRun)
        }
        let baseline = Set(process.job.processes)
        let run = SessionRun(
            number: number, sessionID: id, project: project, kind: kind, timeoutSeconds: timeoutSeconds,
            outputCap: outputCap,
            baseline: baseline)
        // Checked again: another run may have started, or the process died, while the
        // baseline was read.
        try state.withLock { state in
            _ = try idleProcess(state)
            state.current = run
            state.runs.append(run)
            if state.runs.count > Self.keptRuns { state.runs.removeFirst(state.runs.count - Self.keptRuns) }
            state.commandsRun += 1
            state.markUsed()
        }
        let frame =
            kind == .shell
            ? SessionDrivers.shellFrame(id: number, command: request.input, stdin: request.stdin)
            : SessionDrivers.pythonFrame(id: number, code: request.input)
        do {
            try await process.job.send(frame)
        } catch {
            // The process is dying: its death handler ends the run as lost.
        }
        Task { [weak self] in
            try? await Task.sleep(for: .milliseconds(Int(timeoutSeconds * 1000)))
            await self?.interrupt(run, as: .timedOut, signal: SIGINT)
        }
        return run
    }

    /// The process, when it lives and runs nothing; else why a run cannot start.
    private func idleProcess(_ state: State) throws -> SessionProcess {
        if let current = state.current { throw SessionError.busy(session: id, run: current.id) }
        guard let process = state.process else {
            throw SessionError.dead(session: id, end: state.ended ?? SessionEnd(reason: "it is not running"))
        }
        return process
    }

    /// A run of this session by id, running or kept.
    func run(_ id: String) -> SessionRun? {
        state.withLock { state in state.runs.last { $0.id == id } }
    }

    /// Interrupts a run: SIGINT to the shell or interpreter and `signal` to what the run
    /// started, as a terminal's Ctrl-C reaches a whole foreground job (the shell driver's trap
    /// then ends the whole command; python raises KeyboardInterrupt); SIGKILL to what the run
    /// started after the grace; and if the run still has not ended, the session's process
    /// itself.
    func interrupt(_ run: SessionRun, as reason: SessionRunStatus, signal: Int32) async {
        guard run.markInterrupted(reason) else { return }
        guard let process = state.withLock({ $0.process }) else { return }
        let driver = process.job.pid
        func targets() -> [pid_t] {
            let spawned = Self.started(since: run.baseline, driver: driver, now: process.job.processes)
            return [driver] + spawned
        }
        // The driver gets SIGINT whatever the caller asked for: it is the one signal the
        // driver turns into the end of a command; TERM, HUP, QUIT or KILL would end the session.
        for pid in targets() { _ = Glibc.kill(pid, pid == driver ? SIGINT : signal) }
        if await ended(run, within: killGrace) { return }
        if kind == .shell {
            for pid in targets().dropFirst() { _ = Glibc.kill(pid, SIGKILL) }
            if await ended(run, within: .seconds(1)) { return }
        }
        let what = kind == .python ? "the python interpreter" : "the command ran in the shell itself"
        state.withLock { $0.ending = "\(what) did not stop when interrupted, so the session was ended" }
        await process.job.cancel(signal: .kill)
        _ = await run.waitFinished(budget: .seconds(5))
    }

    private func ended(_ run: SessionRun, within: Duration) async -> Bool {
        let deadline = ContinuousClock.now + within
        while !run.isFinished {
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return true
    }

    /// Processes started since `baseline` that do not descend from a process that was
    /// already there (other than the driver): a server a previous command left running
    /// keeps its workers when a later command is interrupted.
    static func started(since baseline: Set<pid_t>, driver: pid_t, now: [pid_t]) -> [pid_t] {
        let present = Set(now)
        var parent: [pid_t: pid_t] = [:]
        for pid in now { parent[pid] = parentPID(pid) }
        return now.filter { pid in
            guard pid != driver, !baseline.contains(pid) else { return false }
            var cursor = parent[pid] ?? 0
            while present.contains(cursor) {
                if cursor == driver { return true }
                if baseline.contains(cursor) { return false }
                cursor = parent[cursor] ?? 0
            }
            return true
        }
    }

    /// The parent of a host pid, from `/proc/PID/stat` (field 4, after the command name in
    /// parentheses, which may itself hold spaces and parentheses).
    static func parentPID(_ pid: pid_t) -> pid_t? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        return fields.count > 1 ? pid_t(fields[1]) : nil
    }

    // MARK: - Reading

    /// The host pids of the session's process tree now; empty when dead or without cgroups.
    var processes: [pid_t] { state.withLock { $0.process }?.job.processes ?? [] }

    var info: SessionInfo {
        let process = state.withLock { $0.process }
        let memory = process?.job.usageNow?.currentMemoryBytes
        return state.withLock { state in
            SessionInfo(
                sessionID: id, project: project, kind: kind,
                state: state.process == nil ? .dead : state.current == nil ? .idle : .busy, cwd: state.cwd,
                owner: owner, startedAt: state.startedAt, lastUsedAt: state.lastUsed, commandsRun: state.commandsRun,
                memoryBytes: state.process == nil ? nil : memory, idleTimeoutSeconds: idleTimeoutSeconds,
                runID: state.current?.id, ended: state.ended, interpreter: state.interpreter)
        }
    }

    /// Whether it has been idle (or dead) longer than its idle timeout.
    func isIdle(now: ContinuousClock.Instant) -> Bool {
        state.withLock { state in
            state.current == nil && now - state.lastUsedClock > .seconds(idleTimeoutSeconds)
        }
    }
}
