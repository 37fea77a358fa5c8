import CShim
import Glibc

/// Why a sandbox could not be created or a job could not be started.
///
/// A job that ran and exited non-zero is not an error: that is a `JobResult`.
public enum SandboxError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A child failed at a named stage of its setup, e.g. `execve: ENOENT`.
    case childFailed(stage: String, errno: Int32)
    /// The sandbox's init has died or the sandbox was destroyed; nothing can enter it.
    case sandboxGone(String)
    /// The configuration cannot work (missing rootfs, bad project id, bad cwd ...).
    case invalidConfiguration(String)
    /// The job's working directory is not inside `/workspace`.
    case cwdOutsideWorkspace(String)
    /// A system call in the host failed.
    case system(SystemError)
    /// The process that enters the sandbox was killed before the job could start, most
    /// often by the OOM killer when the project's memory is already full.
    case killedWhileStarting(signal: Int32)
    /// The job's process could not be created: the project's memory (its cgroup) is full,
    /// so even the kernel's structures for a new process were refused.
    case memoryFullWhileStarting
    /// The job did not reach its execve within the deadline and was killed: a process in
    /// the sandbox stopped it (SIGSTOP) while it was starting.
    case stoppedWhileStarting(after: Duration)

    public var description: String {
        switch self {
        case .childFailed(let stage, let errno): "\(stage): \(Errno.name(errno))"
        case .sandboxGone(let id): "sandbox is gone: \(id)"
        case .invalidConfiguration(let why): "invalid sandbox configuration: \(why)"
        case .cwdOutsideWorkspace(let cwd): "cwd is outside /workspace: \(cwd)"
        case .system(let error): error.description
        case .killedWhileStarting(let signal):
            "the job was killed by signal \(signal) while starting"
                + (signal == SIGKILL ? " (is the project's memory full? free /tmp or /dev/shm)" : "")
        case .memoryFullWhileStarting:
            "the job could not start: the project's memory is full (clone: ENOMEM); free /tmp or /dev/shm"
        case .stoppedWhileStarting(let deadline):
            "the job was stopped before it could start (a process in the sandbox sent it SIGSTOP) and was killed "
                + "after \(deadline)"
        }
    }

    /// Maps a child's `{stage, errno}` record to an error. The stage names come from C
    /// (`cor_stage_name`), where the stages are defined.
    static func child(_ status: cor_status, cwd: String = "") -> SandboxError {
        let stage = status.stage
        if stage == Int32(COR_STAGE_CWD_OUTSIDE.rawValue) { return .cwdOutsideWorkspace(cwd) }
        if stage == Int32(COR_STAGE_FORK.rawValue) && status.err == ENOMEM { return .memoryFullWhileStarting }
        // setns through the init's pidfd fails with ESRCH exactly when that init has died.
        if stage == Int32(COR_STAGE_SETNS.rawValue) && status.err == ESRCH { return .sandboxGone("") }
        return .childFailed(stage: stageName(stage), errno: status.err)
    }

    /// `setns`, `mount(proc)`, …; `stage N` for a number C does not know.
    static func stageName(_ stage: Int32) -> String {
        cor_stage_name(stage).map { String(cString: $0) } ?? "stage \(stage)"
    }
}
