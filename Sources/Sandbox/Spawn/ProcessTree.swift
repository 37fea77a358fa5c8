import Foundation
import Glibc

/// What "the job" is when it has to be signalled, killed or accounted: every process it
/// started.
///
/// With a cgroup (the normal case) the tree is the job's leaf cgroup, which nothing inside
/// can leave: daemons that setsid or double-fork are still in it. Without one (a host with
/// no usable cgroup hierarchy) it falls back to the job's session, which such daemons escape.
final class ProcessTree: Sendable {
    let leader: pid_t
    let leaf: LeafCgroup?

    init(leader: pid_t, leaf: LeafCgroup?) {
        self.leader = leader
        self.leaf = leaf
    }

    /// Signals every process of the tree. Called only while the leader is unreaped (alive
    /// or a zombie), so in the fallback its group id cannot belong to anyone else.
    func signal(_ signal: Int32) {
        guard let leaf else {
            _ = Glibc.kill(-leader, signal)
            return
        }
        for pid in (try? leaf.pids()) ?? [] { _ = Glibc.kill(pid, signal) }
    }

    /// SIGKILL to the whole tree. With a cgroup the kill is atomic (cgroup.kill or a
    /// freezer) and the bounded wait for the cgroup to empty runs on a thread of its own,
    /// so the caller (the event loop) never blocks.
    func kill() {
        guard let leaf else {
            signal(SIGKILL)
            return
        }
        BlockingExecutor.shared.execute("corral-kill") { try? leaf.kill(timeout: .seconds(5)) }
    }

    /// How many processes of the tree are alive besides the leader; nil without a cgroup,
    /// whose fallback (the session) cannot be listed.
    func others() -> Int? {
        guard let leaf, let pids = try? leaf.pids() else { return nil }
        return pids.filter { $0 != leader }.count
    }

    /// CPU, peak memory and OOM kills of the tree, from the kernel's counters.
    func usage() -> TreeUsage? {
        guard let usage = try? leaf?.usage() else { return nil }
        return TreeUsage(cpuNanos: usage.cpuNanos, peakMemoryBytes: usage.peakMemoryBytes, oomKills: usage.oomKills)
    }

    /// The job has ended and its result is out: remove its cgroup.
    func finished() {
        guard let leaf else { return }
        BlockingExecutor.shared.execute("corral-leaf-rm") { try? leaf.destroy(timeout: .seconds(5)) }
    }
}

/// What a job's tree used, from the kernel's counters.
struct TreeUsage {
    var cpuNanos: UInt64
    var peakMemoryBytes: UInt64
    var oomKills: Int
}
