import CShim
import Foundation
import Glibc
import Synchronization

/// A job running inside a sandbox: wait for it, or stop its whole process tree.
public final class RunningJob: Sendable {
    /// The job's number within its sandbox.
    public let id: Int
    /// The host pid of the job's main process.
    public let pid: pid_t
    let started: ContinuousClock.Instant
    let killGrace: Duration
    let logPath: String?
    let onOutput: (@Sendable (OutputStream, [UInt8]) -> Void)?
    /// The sandbox's limits that were not enforced, for the result.
    let unenforcedLimits: [CgroupResource: String]
    /// A session driver's pipes (``JobSpec/channel``); its output is handed on, not kept.
    public let channel: SessionChannel?
    /// Whether the sandbox's init is dying on its own (``ProjectSandbox``): asked when the
    /// job was killed by SIGKILL, to tell the sandbox's death from any other kill.
    private let sandboxDying: @Sendable () -> Bool
    private let tree: ProcessTree
    private let state: Mutex<State>

    struct State: ~Copyable {
        var stdout: OutputCapture
        var stderr: OutputCapture
        var log: OutputLog?
        var openStreams = 2
        /// stdout's and stderr's read ends, until their handler has seen EOF (the event loop
        /// closes a descriptor right after, so a drain must not touch it then).
        var streams: [(fd: Int32, stream: OutputStream)] = []
        var commandsOpen = true
        var exit: (code: Int32, status: Int32, usage: rusage, at: ContinuousClock.Instant)?
        var reason: JobResult.Status = .completed
        var leftover: Int?
        var result: JobResult?
        var waiters: [CheckedContinuation<JobResult, Never>] = []
    }

    init(
        id: Int, process: SpawnedProcess, job: JobSpec, tree: ProcessTree, openLog: (@Sendable () -> Int32?)?,
        unenforcedLimits: [CgroupResource: String] = [:], sandboxDying: @escaping @Sendable () -> Bool = { false }
    ) {
        self.id = id
        self.pid = process.pid
        self.started = .now
        self.killGrace = job.killGrace
        self.logPath = job.logPath.map { "/workspace/" + $0 }
        self.onOutput = job.onOutput
        self.tree = tree
        self.unenforcedLimits = unenforcedLimits
        self.channel = process.channel
        self.sandboxDying = sandboxDying
        let state = State(
            stdout: OutputCapture(cap: job.outputCap), stderr: OutputCapture(cap: job.outputCap),
            log: openLog.map { OutputLog(threshold: min(job.logThreshold, job.outputCap), open: $0) })
        self.state = Mutex(state)
    }

    /// Starts watching the job's pipes and exit. Called once, right after the spawn.
    func watch(_ process: SpawnedProcess, timeout: Duration?) throws {
        state.withLock { $0.streams = [(process.stdout, .stdout), (process.stderr, .stderr)] }
        for (fd, isStdout) in [(process.stdout, true), (process.stderr, false)] {
            try EventLoop.shared.watch(fd) { [self] _ in readChunk(fd, isStdout: isStdout) }
        }
        try EventLoop.shared.watch(process.pidfd) { [self] _ in reap(process.pidfd) }
        if let timeout {
            Task { [self] in
                try? await Task.sleep(for: timeout)
                await stop(reason: .timedOut)
            }
        }
    }

    /// Waits for the job to end and returns its result; any number of callers may wait.
    public func wait() async -> JobResult {
        await withCheckedContinuation { continuation in
            let done: JobResult? = state.withLock { state in
                if let result = state.result { return result }
                state.waiters.append(continuation)
                return nil
            }
            if let done { continuation.resume(returning: done) }
        }
    }

    /// Whether the job has ended.
    public var isFinished: Bool { state.withLock { $0.result != nil } }

    /// Sends `signal` to every process of the job's tree.
    public func signal(_ signal: Int32) { tree.signal(signal) }

    /// Stops the job: SIGTERM to the whole tree, SIGKILL to whatever is left after the
    /// grace period. Returns once the job has ended.
    @discardableResult
    public func cancel() async -> JobResult {
        await cancel(signal: .term)
    }

    /// Stops the job: `signal` to every process of its tree, so a job that handles it (an
    /// interrupted test runner printing its summary) can end its own way, then SIGKILL to
    /// whatever is left after the grace period. `.kill` kills the tree at once. Returns once
    /// the job has ended; its result says `cancelled` with the exit status it ended with.
    @discardableResult
    public func cancel(signal: JobSignal) async -> JobResult {
        await stop(reason: .cancelled, signal: signal.number)
        return await wait()
    }

    /// A second stop while one waits out its grace still acts: a KILL kills at once.
    func stop(reason: JobResult.Status, signal: Int32 = SIGTERM) async {
        let running = state.withLock { state in
            guard state.exit == nil else { return false }
            if state.reason == .completed { state.reason = reason }
            return true
        }
        guard running else { return }
        if signal != SIGKILL {
            tree.signal(signal)
            let deadline = ContinuousClock.now + killGrace
            while !isExited, ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(10))
            }
        }
        tree.kill()
    }

    private var isExited: Bool { state.withLock { $0.exit != nil } }

    // MARK: - Event handlers (on the event loop thread)

    private func readChunk(_ fd: Int32, isStdout: Bool) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && (errno == EINTR || errno == EAGAIN) { return true }
        if n > 0 {
            if channel == nil {
                state.withLock { state in
                    buffer.withUnsafeBytes { raw in
                        let chunk = UnsafeRawBufferPointer(rebasing: raw[0..<n])
                        if isStdout { state.stdout.append(chunk) } else { state.stderr.append(chunk) }
                        state.log?.append(chunk)
                    }
                }
            }
            onOutput?(isStdout ? .stdout : .stderr, Array(buffer[0..<n]))
            return true
        }
        let result = state.withLock { state -> JobResult? in
            state.openStreams -= 1
            state.streams.removeAll { $0.fd == fd }
            return finishIfDone(&state)
        }
        if let result { resume(result) }
        return false
    }

    /// Hands on everything stdout and stderr hold now (their read ends are non-blocking for
    /// a session); stops at EOF, which the streams' own handlers then see.
    private func drainOutput() {
        let streams = state.withLock { $0.streams }
        // Each with its own name: once stdout has closed, stderr is the only one left.
        for (fd, stream) in streams {
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { break }
                onOutput?(stream, Array(buffer[0..<n]))
            }
        }
    }

    // MARK: - A session's channel

    /// Calls `handler` on the event loop thread with each chunk the driver writes to its
    /// reply pipe, and with nil once that pipe is closed. Before each chunk, everything the
    /// output pipes hold is handed to `onOutput`: whatever a command printed before its
    /// reply came is part of its output, not the next one's.
    public func watchReplies(_ handler: @escaping @Sendable ([UInt8]?) -> Void) throws {
        guard let channel else { return }
        try EventLoop.shared.watch(channel.replies) { [self] _ in
            drainOutput()
            var buffer = [UInt8](repeating: 0, count: 65_536)
            let n = buffer.withUnsafeMutableBytes { read(channel.replies, $0.baseAddress, $0.count) }
            if n < 0 && (errno == EINTR || errno == EAGAIN) { return true }
            if n > 0 {
                handler(Array(buffer[0..<n]))
                return true
            }
            handler(nil)
            return false
        }
    }

    /// Writes `bytes` to the driver's command pipe, on a blocking thread (a driver that does
    /// not read would otherwise hold an async one). Throws once the job has ended, or with
    /// EPIPE when the driver closed its end.
    public func send(_ bytes: [UInt8]) async throws {
        guard let channel else { throw SandboxError.invalidConfiguration("the job has no command channel") }
        Self.ignoreSIGPIPE
        // A copy, so the original can be closed when the job ends while this write waits.
        let fd = try state.withLock { state -> Int32 in
            guard state.commandsOpen else { throw SystemError("write(commands)", errno: EPIPE) }
            return try syscall("fcntl(F_DUPFD_CLOEXEC)") { fcntl(channel.commands, F_DUPFD_CLOEXEC, 0) }
        }
        try await ProjectSandbox.blocking("corral-session-send") {
            defer { close(fd) }
            var offset = 0
            while offset < bytes.count {
                let n = retryingInterrupted { bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } }
                if n <= 0 { throw SystemError("write(commands)", errno: n < 0 ? errno : EPIPE) }
                offset += n
            }
        }
    }

    /// A write to a pipe whose driver died raises SIGPIPE, whose default action would end
    /// the host: it must fail with EPIPE instead.
    private static let ignoreSIGPIPE: Void = { _ = Glibc.signal(SIGPIPE, SIG_IGN) }()

    /// The processes of the job's tree now (host pids); empty without a cgroup.
    public var processes: [pid_t] { (try? tree.leaf?.pids()) ?? [] }

    /// The kernel's counters for the job's tree now; nil without a cgroup.
    public var usageNow: CgroupUsage? { try? tree.leaf?.usage() }

    private func reap(_ pidfd: Int32) -> Bool {
        var code: Int32 = 0
        var status: Int32 = 0
        var usage = rusage()
        // Peek first (WNOWAIT): while the main process is an unreaped zombie its pid, and
        // so its group id, cannot be reused, so killing the rest of the tree is safe even
        // without a cgroup.
        if cor_waitid_pidfd(pidfd, WEXITED | WNOHANG | WNOWAIT, &code, &status, &usage) == 0 { return true }
        let now = ContinuousClock.now
        // Killed by SIGKILL while the sandbox's init is dying: the kernel killed it with the
        // sandbox. Asked before this job is reaped, as the init cannot finish dying until
        // every process of its namespace is reaped, so it is still there to ask.
        let died = code == CLD_KILLED && status == SIGKILL && sandboxDying()
        // Daemons the job left behind would hold its pipes open forever: the job is its
        // whole tree, so the rest goes with the main process. Counted first, for the result.
        let leftover = tree.others()
        tree.kill()
        let r = cor_waitid_pidfd(pidfd, WEXITED | WNOHANG, &code, &status, &usage)
        let result = state.withLock { state -> JobResult? in
            state.exit = (r == 1 ? code : Int32(CLD_EXITED), r == 1 ? status : 255, usage, now)
            state.leftover = leftover
            if died && state.reason == .completed { state.reason = .sandboxDied }
            return finishIfDone(&state)
        }
        if let result { resume(result) }
        return false
    }

    private func finishIfDone(_ state: inout State) -> JobResult? {
        guard state.result == nil, state.openStreams == 0, let exit = state.exit else { return nil }
        let usage = tree.usage()
        var signal: Int32? = nil
        var exitCode = exit.status
        if exit.code == CLD_KILLED || exit.code == CLD_DUMPED {
            signal = exit.status
            exitCode = 128 + exit.status
        }
        let timedOut = state.reason == .timedOut
        if timedOut { exitCode = 124 }
        let rusageCPU =
            (Int(exit.usage.ru_utime.tv_sec) + Int(exit.usage.ru_stime.tv_sec)) * 1000
            + (Int(exit.usage.ru_utime.tv_usec) + Int(exit.usage.ru_stime.tv_usec)) / 1000
        state.log?.finish()
        let logged = state.log?.isWhole == true ? logPath : nil
        let result = JobResult(
            status: state.reason,
            exitCode: exitCode,
            signal: signal,
            timedOut: timedOut,
            oomKilled: (usage?.oomKills ?? 0) > 0 && signal == SIGKILL,
            durationMs: Int((exit.at - started) / .milliseconds(1)),
            cpuMs: usage.map { Int($0.cpuNanos / 1_000_000) } ?? rusageCPU,
            peakMemoryBytes: usage?.peakMemoryBytes ?? UInt64(exit.usage.ru_maxrss) * 1024,
            stdout: state.stdout.text(logPath: logged),
            stderr: state.stderr.text(logPath: logged),
            truncated: state.stdout.omitted + state.stderr.omitted > 0,
            omittedBytes: state.stdout.omitted + state.stderr.omitted,
            logPath: logged,
            unenforcedLimits: unenforcedLimits.isEmpty
                ? nil : Dictionary(uniqueKeysWithValues: unenforcedLimits.map { ($0.key.rawValue, $0.value) }),
            leftoverProcesses: state.reason == .completed ? state.leftover : nil,
            stdoutOmittedBytes: state.stdout.omitted, stderrOmittedBytes: state.stderr.omitted
        )
        state.result = result
        return result
    }

    private func resume(_ result: JobResult) {
        let waiters = state.withLock { state in
            defer { state.waiters = [] }
            if let channel, state.commandsOpen {
                state.commandsOpen = false
                close(channel.commands)
            }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: result) }
        tree.finished()
    }
}
