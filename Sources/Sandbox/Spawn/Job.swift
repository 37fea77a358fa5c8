import CShim
import Glibc

/// A command to run inside a sandbox.
public struct JobSpec: Sendable {
    /// Program and arguments; a program without `/` is looked up in the job's `PATH`.
    public var argv: [String]
    /// Environment on top of the sandbox's clean default (PATH, HOME, LANG, ...).
    public var environment: [String: String]
    /// Working directory inside the sandbox; must resolve under `/workspace`.
    public var cwd: String
    /// Bytes written to the job's stdin, then closed; nil gives it /dev/null.
    public var stdin: [UInt8]?
    /// Wall-clock limit; the whole tree is killed when it passes.
    public var timeout: Duration?
    /// Time between SIGTERM and SIGKILL when a job is stopped.
    public var killGrace: Duration
    /// Bytes kept in memory per stream (head and tail halves); the rest is counted.
    public var outputCap: Int
    /// Where, relative to the workspace, the whole output goes (stdout and stderr
    /// interleaved) once it passes ``logThreshold``; nil keeps no log.
    public var logPath: String?
    /// Output, both streams together, past which the whole of it is written to
    /// ``logPath``: an answer that shows only a window of the output can then point to the
    /// rest. A stream cut to ``outputCap`` starts the log too, whichever is smaller.
    public var logThreshold = 1 << 20
    /// The uid and gid the job runs as inside the sandbox.
    public var uid: UInt32
    public var gid: UInt32
    /// Capabilities kept (bit n = capability n); none by default.
    public var keepCapabilities: UInt64
    /// Resource limits set with prlimit before exec.
    public var rlimits: [ResourceLimit]
    /// The compiled seccomp filter loaded last before exec; nil loads none.
    public var seccomp: [sock_filter]?
    /// Called on the event loop thread with every chunk of output as it arrives, for
    /// streaming; must return quickly.
    public var onOutput: (@Sendable (OutputStream, [UInt8]) -> Void)?
    /// A session's driver: the job also gets a pipe to read commands from on fd 3 and one
    /// to write replies to on fd 4 (``RunningJob/channel``), and its output is not kept in
    /// the result (the session hands each chunk on through `onOutput`).
    public var channel = false
    /// Limits of the job's own, instead of the sandbox's: nil runs the job in a leaf of the
    /// jobs' group, under the limits every job of the sandbox shares; set, it runs in a
    /// group of its own beside that one, under these (a project's setup runs so, under its
    /// policy's `[setup.limits]`). A limit the host cannot enforce is refused or skipped as
    /// the sandbox's ``SandboxConfiguration/requireLimits`` says.
    public var ownLimits: CgroupLimits?
    /// How long the job may take to reach its execve before it is killed: only a process
    /// in the sandbox stopping it can make it take more than milliseconds.
    var startDeadline: Duration = .seconds(10)
    /// Tests only: the job stops itself just before execve, as a sandbox process could.
    var stopBeforeExec = false

    public init(
        _ argv: [String],
        environment: [String: String] = [:],
        cwd: String = "/workspace",
        stdin: [UInt8]? = nil,
        timeout: Duration? = nil,
        killGrace: Duration = .seconds(2),
        outputCap: Int = 64 << 10,
        logPath: String? = nil,
        uid: UInt32 = 1000,
        gid: UInt32 = 1000,
        keepCapabilities: UInt64 = 0,
        rlimits: [ResourceLimit] = ResourceLimit.defaults,
        seccomp: [sock_filter]? = nil,
        onOutput: (@Sendable (OutputStream, [UInt8]) -> Void)? = nil
    ) {
        self.argv = argv
        self.environment = environment
        self.cwd = cwd
        self.stdin = stdin
        self.timeout = timeout
        self.killGrace = killGrace
        self.outputCap = outputCap
        self.logPath = logPath
        self.uid = uid
        self.gid = gid
        self.keepCapabilities = keepCapabilities
        self.rlimits = rlimits
        self.seccomp = seccomp
        self.onOutput = onOutput
    }
}

/// The host's ends of a session driver's pipes: it writes commands to `commands` (the
/// driver's fd 3) and reads replies from `replies` (the driver's fd 4, non-blocking).
public struct SessionChannel: Sendable {
    public let commands: Int32
    public let replies: Int32
}

/// Which of a job's output streams a chunk came from.
public enum OutputStream: String, Sendable, Codable {
    case stdout, stderr
}

/// One prlimit applied to a job process.
public struct ResourceLimit: Sendable, Hashable {
    public var resource: Int32
    public var soft: UInt64
    public var hard: UInt64

    public init(resource: Int32, soft: UInt64, hard: UInt64) {
        self.resource = resource
        self.soft = soft
        self.hard = hard
    }

    /// No core dumps (they would land in the workspace) and a sane descriptor limit.
    public static let defaults: [ResourceLimit] = [
        ResourceLimit(resource: Int32(RLIMIT_CORE.rawValue), soft: 0, hard: 0),
        ResourceLimit(resource: Int32(RLIMIT_NOFILE.rawValue), soft: 4096, hard: 4096),
    ]
}

/// How a job ended. A non-zero exit is a result like any other.
public struct JobResult: Sendable, Equatable, Codable {
    public enum Status: String, Sendable, Codable {
        case completed, timedOut = "timed_out", cancelled
        /// The sandbox's init died while the job ran (killed from outside the sandbox), and
        /// the kernel killed every process of the sandbox with it, the job's included.
        case sandboxDied = "sandbox_died"
    }

    public var status: Status
    /// The exit code, or 128 + signal when killed by a signal (124 on timeout, as
    /// coreutils' `timeout` does).
    public var exitCode: Int32
    /// The signal that killed the job's main process, if one did.
    public var signal: Int32?
    public var timedOut: Bool
    public var oomKilled: Bool
    public var durationMs: Int
    public var cpuMs: Int
    public var peakMemoryBytes: UInt64
    public var stdout: String
    public var stderr: String
    /// Whether either stream was cut to the cap.
    public var truncated: Bool
    public var omittedBytes: Int
    /// Bytes cut from the middle of ``stdout`` and of ``stderr`` (together
    /// ``omittedBytes``); nil in records from before they were counted apart.
    public var stdoutOmittedBytes: Int?
    public var stderrOmittedBytes: Int?
    /// Where the whole output is, inside the sandbox: set when the job printed more than
    /// ``JobSpec/logThreshold`` (or a stream was cut) and the file holds all of it.
    public var logPath: String?
    /// Limits of the sandbox that the host could not enforce (`cpu`, `memory`, `pids` → why),
    /// when its policy allowed running without them; nil when every limit was enforced.
    public var unenforcedLimits: [String: String]?
    /// Processes of the job's tree still running when its main process exited (`server &`,
    /// `nohup … &`), which were killed with it: the job is its whole tree. Nil when nothing
    /// counted them (no cgroup) or the job was stopped (timeout, cancel) rather than ending
    /// on its own.
    public var leftoverProcesses: Int?

    public init(
        status: Status, exitCode: Int32, signal: Int32?, timedOut: Bool, oomKilled: Bool, durationMs: Int, cpuMs: Int,
        peakMemoryBytes: UInt64, stdout: String, stderr: String, truncated: Bool, omittedBytes: Int, logPath: String?,
        unenforcedLimits: [String: String]? = nil, leftoverProcesses: Int? = nil, stdoutOmittedBytes: Int? = nil,
        stderrOmittedBytes: Int? = nil
    ) {
        self.stdoutOmittedBytes = stdoutOmittedBytes
        self.stderrOmittedBytes = stderrOmittedBytes
        self.status = status
        self.exitCode = exitCode
        self.signal = signal
        self.timedOut = timedOut
        self.oomKilled = oomKilled
        self.durationMs = durationMs
        self.cpuMs = cpuMs
        self.peakMemoryBytes = peakMemoryBytes
        self.stdout = stdout
        self.stderr = stderr
        self.truncated = truncated
        self.omittedBytes = omittedBytes
        self.logPath = logPath
        self.unenforcedLimits = unenforcedLimits
        self.leftoverProcesses = leftoverProcesses
    }

    enum CodingKeys: String, CodingKey {
        case status, signal, stdout, stderr, truncated
        case exitCode = "exit_code"
        case timedOut = "timed_out"
        case oomKilled = "oom_killed"
        case durationMs = "duration_ms"
        case cpuMs = "cpu_ms"
        case peakMemoryBytes = "peak_memory_bytes"
        case omittedBytes = "omitted_bytes"
        case stdoutOmittedBytes = "stdout_omitted_bytes"
        case stderrOmittedBytes = "stderr_omitted_bytes"
        case logPath = "log_path"
        case unenforcedLimits = "unenforced_limits"
        case leftoverProcesses = "leftover_processes"
    }
}
