import Glibc

/// A real child process for tests that put processes into cgroups, spawned with posix_spawn.
///
/// The child starts with an empty signal mask and default dispositions: the test runner blocks
/// SIGTERM and a child would otherwise inherit that, which would make "ignores SIGTERM" tests
/// prove nothing. A *gated* child blocks in `read` on a pipe until ``release()``, so a test
/// can attach it to a cgroup before it runs the part that matters (a fork bomb must not start
/// outside its cgroup).
public final class ChildProcess: @unchecked Sendable {
    public let pid: pid_t
    private var gate: Int32
    private var reaped: Int32?

    /// Spawns `argv` (absolute path first). `inheritedFDs` become fds 3, 4, … in the child.
    public init(_ argv: [String], gated: Bool = false, inheritedFDs: [Int32] = []) throws {
        // Move the sources out of the way first: dup2(fd, 3 + i) would clobber a later source
        // that happens to be numbered 3 + i. dup2 clears O_CLOEXEC, so the copies survive exec.
        let sources = inheritedFDs.map { fcntl($0, F_DUPFD_CLOEXEC, 1000) }
        defer { for fd in sources where fd >= 0 { close(fd) } }
        guard sources.allSatisfy({ $0 >= 0 }) else { throw TestSupportError("F_DUPFD_CLOEXEC: errno \(errno)") }
        var fds: [Int32] = [-1, -1]
        if gated {
            guard pipe(&fds) == 0 else { throw TestSupportError("pipe: errno \(errno)") }
            // CLOEXEC so no other child spawned meanwhile inherits the gate; dup2 onto 0 clears it.
            for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        }
        defer { if gated { close(fds[0]) } }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if gated {
            posix_spawn_file_actions_adddup2(&actions, fds[0], 0)
            posix_spawn_file_actions_addclose(&actions, fds[1])
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        for (index, fd) in sources.enumerated() {
            posix_spawn_file_actions_adddup2(&actions, fd, Int32(3 + index))
        }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGPIPE, SIGCHLD, SIGHUP] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let cArgs = argv.map { strdup($0) } + [nil]
        defer { for arg in cArgs { free(arg) } }
        var child: pid_t = 0
        let result = posix_spawn(&child, argv[0], &actions, &attributes, cArgs, environ)
        guard result == 0 else {
            if gated { close(fds[1]) }
            throw TestSupportError("posix_spawn(\(argv[0])): errno \(result)")
        }
        pid = child
        gate = gated ? fds[1] : -1
    }

    /// `/bin/sh -c script`; when gated, the script runs only after ``release()``.
    public static func shell(_ script: String, gated: Bool = false, inheritedFDs: [Int32] = []) throws -> ChildProcess {
        try ChildProcess(
            ["/bin/sh", "-c", gated ? "read _; " + script : script], gated: gated, inheritedFDs: inheritedFDs)
    }

    /// Lets a gated child run.
    public func release() {
        guard gate >= 0 else { return }
        _ = "go\n".withCString { write(gate, $0, 3) }
        close(gate)
        gate = -1
    }

    /// Sends SIGKILL (the runner's blocked SIGTERM would never arrive).
    public func kill() { _ = Glibc.kill(pid, SIGKILL) }

    /// Reaps the child, waiting at most `seconds`; the raw wait status, or nil on timeout.
    @discardableResult
    public func wait(seconds: Double = 10) -> Int32? {
        if let reaped { return reaped }
        let deadline = monotonicSeconds() + seconds
        while true {
            var status: Int32 = 0
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid {
                reaped = status
                return status
            }
            if result < 0 || monotonicSeconds() > deadline { return nil }
            usleep(5_000)
        }
    }

    /// The signal that ended the child, if it was killed by one (call after ``wait(seconds:)``).
    public var terminationSignal: Int32? {
        guard let status = reaped, status & 0x7f != 0, status & 0x7f != 0x7f else { return nil }
        return status & 0x7f
    }

    /// The exit code, if the child exited normally.
    public var exitCode: Int32? {
        guard let status = reaped, status & 0x7f == 0 else { return nil }
        return (status >> 8) & 0xff
    }

    deinit {
        if gate >= 0 { close(gate) }
        if reaped == nil {
            kill()
            wait(seconds: 5)
        }
    }
}

/// Seconds on the monotonic clock.
public func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// Re-checks `condition` every 10 ms until it holds or `seconds` pass; whether it held.
public func waitUntil(seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = monotonicSeconds() + seconds
    while true {
        if try condition() { return true }
        if monotonicSeconds() > deadline { return false }
        usleep(10_000)
    }
}

/// What `/proc/<pid>/stat` says about a process: its state letter (R, S, Z, …) and the
/// fields tests check; nil when the pid no longer exists.
public struct ProcStat: Sendable {
    public let state: Character
    public let parent: pid_t
    public let session: pid_t
    public let command: String

    public init?(pid: pid_t) {
        let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1024)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count > 0 else { return nil }
        let text = String(decoding: buffer[0..<count], as: UTF8.self)
        // "pid (comm) S ppid pgrp session …"; comm may hold spaces, so split after the last ')'.
        guard let lparen = text.firstIndex(of: "("), let rparen = text.lastIndex(of: ")") else { return nil }
        command = String(text[text.index(after: lparen)..<rparen])
        let rest = text[text.index(after: rparen)...].split(separator: " ")
        guard rest.count > 4, let state = rest[0].first, let parent = pid_t(rest[1]), let session = pid_t(rest[3])
        else { return nil }
        self.state = state
        self.parent = parent
        self.session = session
    }

    /// The signals a process ignores, from `/proc/<pid>/status` `SigIgn`.
    public static func ignoredSignals(pid: pid_t) -> UInt64? {
        guard let file = fopen("/proc/\(pid)/status", "r") else { return nil }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            let text = String(cString: line)
            if text.hasPrefix("SigIgn:") {
                return UInt64(String(text.dropFirst(7).filter { !$0.isWhitespace }), radix: 16)
            }
        }
        return nil
    }
}

/// Whether `pid` can still run code: it exists and is not a zombie.
public func isRunning(_ pid: pid_t) -> Bool {
    guard let stat = ProcStat(pid: pid) else { return false }
    return stat.state != "Z" && stat.state != "X"
}
