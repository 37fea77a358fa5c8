import Glibc

/// What "the job" is when it has to be signalled or killed: every process it started.
///
/// Until the job's cgroup is wired in, the tree is the job's session (the job process is a
/// session and group leader); processes that start sessions of their own escape it, which
/// the cgroup closes.
final class ProcessTree: Sendable {
    let leader: pid_t

    init(leader: pid_t) { self.leader = leader }

    /// Signals every process of the tree. Called only while the leader is unreaped (alive
    /// or a zombie), so its group id cannot belong to anyone else.
    func signal(_ signal: Int32) { _ = Glibc.kill(-leader, signal) }

    /// SIGKILL to the whole tree, without waiting.
    func kill() { signal(SIGKILL) }

    /// CPU and memory accounting of the tree, when a cgroup keeps it.
    func usage() -> TreeUsage? { nil }

    /// The job has ended and its result is out: release what the tree holds.
    func finished() {}
}

/// What a job's tree used, from the kernel's counters.
struct TreeUsage {
    var cpuNanos: UInt64
    var peakMemoryBytes: UInt64
    var oomKills: Int
}
