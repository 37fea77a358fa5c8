import CShim
import Foundation
import Glibc

/// A job process the host started inside a sandbox, with the parent's ends of its pipes.
struct SpawnedProcess {
    let pid: pid_t
    let pidfd: Int32
    let stdout: Int32
    let stderr: Int32
    /// A session's pipes (``JobSpec/channel``): the write end of what the process reads
    /// on fd 3, and the read end of what it writes on fd 4.
    var channel: SessionChannel?
}

/// Starts job processes inside a sandbox through the C shim.
enum Spawner {
    /// Namespaces a job joins: everything the init has (defined in C, where the kernel's
    /// CLONE_NEW* names are visible).
    static let namespaces: Int32 = cor_sandbox_namespaces()

    /// The highest capability number this kernel knows.
    static let lastCapability: Int32 = {
        let text = (try? String(contentsOfFile: "/proc/sys/kernel/cap_last_cap", encoding: .utf8)) ?? ""
        return Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 63
    }()

    /// Blocking: clones, waits for the job to exec (or fail), and returns. Runs on a
    /// spawn thread, never on the async pool.
    static func spawn(
        _ job: JobSpec, environment: [String], initPidfd: Int32, cgroupFDs: [Int32]
    ) throws -> SpawnedProcess {
        var fds = Pipes()
        defer { fds.closeAll() }
        let stdinFD: Int32
        if job.stdin != nil {
            (fds.stdinRead, fds.stdinWrite) = try makePipe()
            stdinFD = fds.stdinRead
        } else {
            fds.devNull = try syscall("open(/dev/null)") { open("/dev/null", O_RDONLY | O_CLOEXEC) }
            stdinFD = fds.devNull
        }
        (fds.stdoutRead, fds.stdoutWrite) = try makePipe()
        (fds.stderrRead, fds.stderrWrite) = try makePipe()
        (fds.statusRead, fds.statusWrite) = try makePipe()
        if job.channel {
            (fds.commandsRead, fds.commandsWrite) = try makePipe()
            (fds.repliesRead, fds.repliesWrite) = try makePipe()
            // The child moves these to 3 and 4: no source may sit at a target.
            for fd in [\Pipes.commandsRead, \Pipes.repliesWrite, \Pipes.statusWrite] {
                fds[keyPath: fd] = try raise(fds[keyPath: fd], above: 16)
            }
            // Read ends the host drains without blocking when a reply arrives.
            for fd in [fds.stdoutRead, fds.stderrRead, fds.repliesRead] {
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            }
        }
        let extraFDs: [Int32] = job.channel ? [fds.commandsRead, fds.repliesWrite] : []

        let argv = CStringArray(job.argv)
        let envp = CStringArray(environment)
        let pathValue = environment.first { $0.hasPrefix("PATH=") }.map { String($0.dropFirst(5)) } ?? ""
        let pathDirs = CStringArray(pathValue.split(separator: ":").map(String.init))
        let scratch = UnsafeMutablePointer<CChar>.allocate(capacity: 8192)
        defer { scratch.deallocate() }
        let rlimits = job.rlimits.map { cor_rlimit(resource: $0.resource, soft: $0.soft, hard: $0.hard) }
        var filter = job.seccomp ?? []
        let watch = StartWatch(after: job.startDeadline)

        let apid: pid_t = job.cwd.withCString { cwd in
            "/workspace".withCString { root in
                cgroupFDs.withUnsafeBufferPointer { cgroups in
                    extraFDs.withUnsafeBufferPointer { extras in
                        rlimits.withUnsafeBufferPointer { limits in
                            filter.withUnsafeMutableBufferPointer { instructions in
                                var prog = sock_fprog(len: UInt16(instructions.count), filter: instructions.baseAddress)
                                return withUnsafePointer(to: &prog) { progPointer in
                                    var plan = cor_exec_plan()
                                    plan.init_pidfd = initPidfd
                                    plan.ns_flags = namespaces
                                    plan.cgroup_fds = cgroups.baseAddress
                                    plan.n_cgroup_fds = Int32(cgroups.count)
                                    plan.stdin_fd = stdinFD
                                    plan.stdout_fd = fds.stdoutWrite
                                    plan.stderr_fd = fds.stderrWrite
                                    plan.extra_fds = extras.baseAddress
                                    plan.n_extra_fds = Int32(extras.count)
                                    plan.status_fd = fds.statusWrite
                                    plan.uid = job.uid
                                    plan.gid = job.gid
                                    plan.keep_caps = job.keepCapabilities
                                    plan.last_cap = lastCapability
                                    plan.rlimits = limits.baseAddress
                                    plan.n_rlimits = Int32(limits.count)
                                    plan.cwd = cwd
                                    plan.cwd_root = root
                                    plan.argv = UnsafePointer(argv.pointer)
                                    plan.envp = UnsafePointer(envp.pointer)
                                    plan.path_dirs = UnsafePointer(pathDirs.pointer)
                                    plan.seccomp = job.seccomp == nil ? nil : progPointer
                                    plan.scratch = scratch
                                    plan.scratch_len = 8192
                                    plan.job_pid = watch.pid
                                    plan.stop_before_exec = job.stopBeforeExec ? 1 : 0
                                    return cor_enter(&plan)
                                }
                            }
                        }
                    }
                }
            }
        }
        let stopped = watch.finish()
        if apid < 0 { throw SandboxError.system(SystemError("clone", errno: errno)) }
        // Only the children may hold the write ends now, so EOF on the status pipe means
        // both have exec'd or exited.
        fds.closeChildEnds()
        if let bytes = job.stdin { feedStdin(bytes, fds.takeStdinWrite()) }

        var jobPID: pid_t = 0
        var failure: cor_status?
        var record = cor_status()
        while readRecord(fds.statusRead, &record) {
            if record.stage == Int32(COR_STAGE_PID.rawValue) {
                jobPID = record.value
            } else if failure == nil {
                failure = record
            }
        }
        var status: Int32 = 0
        retryingInterrupted { waitpid(apid, &status, 0) }

        // The kernel stored the job's pid in our memory at its clone, so a job exists even
        // when its records are lost: in a project whose memory is full, a write to the
        // status pipe (its buffer is charged to the project) can fail with ENOMEM. An
        // unreaped job would stay a zombie in the sandbox's pid namespace, and the init
        // cannot exit while one remains.
        let cloned = watch.pid.pointee
        let child = jobPID > 0 ? jobPID : cloned
        func reapChild() {
            guard child > 0 else { return }
            kill(child, SIGKILL)
            retryingInterrupted { waitpid(child, &status, 0) }
        }
        if let failure {
            reapChild()
            throw SandboxError.child(failure, cwd: job.cwd)
        }
        if stopped {
            reapChild()
            throw SandboxError.stoppedWhileStarting(after: job.startDeadline)
        }
        if jobPID <= 0 && cloned > 0 {
            reapChild()
            throw SandboxError.memoryFullWhileStarting
        }
        guard jobPID > 0 else {
            // No pid and no failure record: the entering process died without a word.
            if (status & 0x7f) != 0 && (status & 0x7f) != 0x7f {
                throw SandboxError.killedWhileStarting(signal: status & 0x7f)
            }
            throw SandboxError.childFailed(stage: "clone", errno: EPROTO)
        }
        // The job is our child and unreaped, so its pid cannot have been reused.
        let pidfd = cor_pidfd_open(jobPID)
        if pidfd < 0 {
            let e = errno
            kill(jobPID, SIGKILL)
            retryingInterrupted { waitpid(jobPID, &status, 0) }
            throw SandboxError.system(SystemError("pidfd_open", errno: e))
        }
        return SpawnedProcess(
            pid: jobPID, pidfd: pidfd, stdout: fds.takeStdoutRead(), stderr: fds.takeStderrRead(),
            channel: job.channel ? fds.takeChannel() : nil)
    }

    /// `fd` itself if it is at or above `floor`, else a close-on-exec copy there (the
    /// original is closed).
    private static func raise(_ fd: Int32, above floor: Int32) throws -> Int32 {
        guard fd < floor else { return fd }
        let copy = try syscall("fcntl(F_DUPFD_CLOEXEC)") { fcntl(fd, F_DUPFD_CLOEXEC, floor) }
        close(fd)
        return copy
    }

    private static func makePipe() throws -> (Int32, Int32) {
        var p: [Int32] = [-1, -1]
        try syscall("pipe2") { cor_pipe_cloexec(&p) }
        return (p[0], p[1])
    }

    private static func readRecord(_ fd: Int32, _ record: inout cor_status) -> Bool {
        let size = MemoryLayout<cor_status>.size
        return retryingInterrupted { withUnsafeMutableBytes(of: &record) { read(fd, $0.baseAddress, size) } } == size
    }

    /// Writes stdin on its own thread: a job that reads slowly must not hold up the spawn.
    private static func feedStdin(_ bytes: [UInt8], _ fd: Int32) {
        let writer: @Sendable () -> Void = {
            var offset = 0
            while offset < bytes.count {
                let n = retryingInterrupted { bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } }
                if n <= 0 { break }
                offset += n
            }
            close(fd)
        }
        if bytes.count <= 16 << 10 {
            writer()  // fits in the pipe buffer: never blocks
        } else {
            // Its own thread, not the pool's: a job that never reads its stdin would hold a
            // pool thread for its whole life.
            Thread.detachNewThread(writer)
        }
    }
}

/// Kills a job that has not exec'd by a deadline. Until its execve the job shares the
/// host's memory and the spawning thread waits for it (vfork), and it already has the
/// sandbox's uid, so any process in the sandbox may stop it with SIGSTOP, which cannot be
/// blocked. Without the deadline that would hang a host thread for good.
private final class StartWatch: @unchecked Sendable {
    /// Where the kernel stores the job's pid when it clones it (CLONE_PARENT_SETTID).
    let pid = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
    private let lock = NSLock()
    private var finished = false
    private var killed = false

    init(after deadline: Duration) {
        pid.initialize(to: 0)
        let nanoseconds = Int(deadline.nanoseconds)
        DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(nanoseconds)) { [self] in
            lock.withLock {
                // Finished means the job has exec'd or died and may already be reaped: its
                // pid could name another process by now, so it is only killed before that.
                let job = pid.pointee
                if !finished && job > 0 {
                    kill(job, SIGKILL)
                    killed = true
                }
            }
        }
    }

    // The timer holds the watch until it has fired, so the pid outlives both users.
    deinit { pid.deallocate() }

    /// Called once the spawn has returned; true if the deadline killed the job.
    func finish() -> Bool {
        lock.withLock {
            finished = true
            return killed
        }
    }
}

/// The parent's side of a spawn's pipes; whatever is not handed on is closed.
private struct Pipes {
    var stdinRead: Int32 = -1, stdinWrite: Int32 = -1, devNull: Int32 = -1
    var stdoutRead: Int32 = -1, stdoutWrite: Int32 = -1
    var stderrRead: Int32 = -1, stderrWrite: Int32 = -1
    var statusRead: Int32 = -1, statusWrite: Int32 = -1
    var commandsRead: Int32 = -1, commandsWrite: Int32 = -1
    var repliesRead: Int32 = -1, repliesWrite: Int32 = -1

    mutating func closeChildEnds() {
        for fd in [stdinRead, devNull, stdoutWrite, stderrWrite, statusWrite, commandsRead, repliesWrite] where fd >= 0
        {
            close(fd)
        }
        (stdinRead, devNull, stdoutWrite, stderrWrite, statusWrite) = (-1, -1, -1, -1, -1)
        (commandsRead, repliesWrite) = (-1, -1)
    }

    mutating func takeChannel() -> SessionChannel {
        defer { (commandsWrite, repliesRead) = (-1, -1) }
        return SessionChannel(commands: commandsWrite, replies: repliesRead)
    }

    mutating func takeStdinWrite() -> Int32 { defer { stdinWrite = -1 }; return stdinWrite }
    mutating func takeStdoutRead() -> Int32 { defer { stdoutRead = -1 }; return stdoutRead }
    mutating func takeStderrRead() -> Int32 { defer { stderrRead = -1 }; return stderrRead }

    mutating func closeAll() {
        for fd in [
            stdinRead, stdinWrite, devNull, stdoutRead, stdoutWrite, stderrRead, stderrWrite, statusRead, statusWrite,
            commandsRead, commandsWrite, repliesRead, repliesWrite,
        ]
        where fd >= 0 { close(fd) }
    }
}
