import CShim
import Foundation
import Glibc
import Synchronization

/// A project's long-lived sandbox: an init in its own namespaces that jobs enter.
///
/// Safe to use from many tasks at once: `exec` and `start` only read the init's pidfd,
/// and `destroy` marks the sandbox gone before it kills anything.
public final class ProjectSandbox: Sendable {
    public let configuration: SandboxConfiguration
    /// The init's pid in the host's pid namespace.
    public let initPID: pid_t
    /// The first host uid/gid of this sandbox's range (uid 0 inside).
    public let hostIDBase: UInt32
    /// The project's cgroup, holding the init's leaf and the jobs' group; nil on a host
    /// without cgroups.
    public let cgroup: ProjectCgroup?
    /// The group that carries the project's limits, with a leaf per job.
    public let jobsCgroup: ProjectCgroup?
    /// Limits of the configuration this host could not enforce, and why; empty unless the
    /// configuration allowed that (`requireLimits: false`). Every job's result repeats it.
    public let unenforcedLimits: [CgroupResource: String]
    private let initPidfd: Int32
    private let state = Mutex(Lifecycle())
    private let reaped = Reaped()
    /// Makes the next job's cgroup leaf while the current job runs (see ``takeLeaf()``).
    private let spareQueue = DispatchQueue(label: "corral.sandbox.spare-leaf")

    struct Lifecycle {
        var alive = true
        /// The init died while the sandbox was alive (not by ``destroy()``).
        var died = false
        var nextJob = 1
        var nextLeaf = 1
        var jobs: [Int: RunningJob] = [:]
        /// An empty, never-used job leaf made ahead of time.
        var spare: JobLeaf?
        var preparing = false
    }

    /// A job's cgroup leaf with its `cgroup.procs` files open for the entering process.
    struct JobLeaf {
        let leaf: LeafCgroup
        let procs: [FileDescriptor]
    }

    init(
        configuration: SandboxConfiguration, initPID: pid_t, initPidfd: Int32, hostIDBase: UInt32,
        cgroup: ProjectCgroup?, jobsCgroup: ProjectCgroup?, unenforcedLimits: [CgroupResource: String] = [:]
    ) {
        self.configuration = configuration
        self.initPID = initPID
        self.initPidfd = initPidfd
        self.hostIDBase = hostIDBase
        self.cgroup = cgroup
        self.jobsCgroup = jobsCgroup
        self.unenforcedLimits = unenforcedLimits
    }

    deinit {
        close(initPidfd)
    }

    /// Builds a sandbox for `configuration` and returns once its init is ready.
    public static func create(
        _ configuration: SandboxConfiguration, initBinary: String = ProjectSandbox.defaultInitBinary
    ) async throws -> ProjectSandbox {
        try await blocking { try SandboxBuilder(configuration, initBinary: initBinary).build() }
    }

    /// Where corral-init is: `CORRAL_INIT`, or beside the running executable.
    public static var defaultInitBinary: String {
        if let path = ProcessInfo.processInfo.environment["CORRAL_INIT"] { return path }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("corral-init").path
    }

    /// Whether the init is alive and the sandbox has not been destroyed. An init that is
    /// dying (killed, and waiting for the kernel to kill the rest of its namespace) is not.
    public var isAlive: Bool { state.withLock { $0.alive } && !reaped.isSet && !Self.isExiting(initPID) }

    /// Whether the init died on its own, while the sandbox was in use (killed from outside
    /// the sandbox, since nothing inside can signal it), rather than by ``destroy()``.
    public var died: Bool { state.withLock { $0.died } }

    /// Waits until the init is gone and says whether it died on its own (``died``) rather
    /// than by ``destroy()``.
    public func waitForInitExit() async -> Bool {
        await reaped.wait()
        return died
    }

    /// The sandbox's network namespace, opened now; throws ``SandboxError/sandboxGone(_:)``
    /// if the sandbox is gone.
    public func networkNamespace() throws -> NetworkNamespace {
        guard isAlive else { throw SandboxError.sandboxGone(configuration.projectID) }
        let namespace = try NetworkNamespace(pid: initPID)
        // The init's pid could have been reused between the check and the open: a signal 0
        // through the pidfd still reaching the init afterwards means it was not.
        guard isAlive, cor_pidfd_send_signal(initPidfd, 0) == 0 else {
            throw SandboxError.sandboxGone(configuration.projectID)
        }
        return namespace
    }

    /// Runs a job to completion.
    public func exec(_ job: JobSpec) async throws -> JobResult {
        try await start(job).wait()
    }

    /// Starts a job and returns at once; the job keeps running until it ends, is cancelled
    /// or the sandbox is destroyed.
    public func start(_ job: JobSpec) async throws -> RunningJob {
        guard job.cwd.hasPrefix("/"), !job.argv.isEmpty, !job.argv[0].isEmpty else {
            throw SandboxError.invalidConfiguration(job.argv.isEmpty ? "empty command" : "cwd must be absolute")
        }
        let id: Int = try state.withLock { state in
            guard state.alive else { throw SandboxError.sandboxGone(configuration.projectID) }
            defer { state.nextJob += 1 }
            return state.nextJob
        }
        // A dying init's namespace takes no new process (its clone would fail with ENOMEM,
        // read as a full memory cgroup): say it is gone.
        guard !Self.isExiting(initPID) else { throw SandboxError.sandboxGone(configuration.projectID) }
        let environment = Environment.build(job)
        let pidfd = initPidfd
        // The job's own cgroup: the child joins it before its first instruction, so the
        // whole tree is accounted, limited and killable from its start.
        let jobLeaf = try job.ownLimits.map { try makeLimitedLeaf($0) } ?? takeLeaf()
        let leaf = jobLeaf?.leaf
        let process: SpawnedProcess
        do {
            let cgroupFDs = jobLeaf?.procs ?? []
            process = try await Self.blocking("corral-spawn") {
                try Spawner.spawn(job, environment: environment, initPidfd: pidfd, cgroupFDs: cgroupFDs.map(\.raw))
            }
        } catch SandboxError.sandboxGone {
            // The entering process found the init gone (setns: ESRCH); name the project.
            try? leaf?.destroy()
            throw SandboxError.sandboxGone(configuration.projectID)
        } catch {
            try? leaf?.destroy()
            throw error
        }
        let openLog = job.logPath.map { path in
            { @Sendable [workspace = configuration.workspace, uid = hostIDBase + job.uid, gid = hostIDBase + job.gid] in
                LogFile.create(workspace: workspace, relativePath: path, uid: uid, gid: gid)
            }
        }
        let running = RunningJob(
            id: id, process: process, job: job, tree: ProcessTree(leader: process.pid, leaf: leaf), openLog: openLog,
            unenforcedLimits: unenforcedLimits, sandboxDying: { [weak self] in self?.initDying ?? false })
        state.withLock { $0.jobs[id] = running }
        try running.watch(process, timeout: job.timeout)
        Task { [self] in
            _ = await running.wait()
            _ = state.withLock { $0.jobs.removeValue(forKey: id) }
        }
        return running
    }

    /// The job cgroup leaf for a job that starts now: the spare made while the previous job
    /// ran if there is one, else a new one; then the next spare is made in the background.
    /// A leaf is used once and removed after its job (fresh counters, nothing to reset),
    /// but its six `mkdir`s on a hybrid host no longer sit between a request and its job.
    private func takeLeaf() throws -> JobLeaf? {
        guard let jobsCgroup else { return nil }
        defer { prepareSpareLeaf() }
        let spare = state.withLock { state in
            defer { state.spare = nil }
            return state.spare
        }
        return try spare ?? makeLeaf(in: jobsCgroup)
    }

    /// A leaf of its own for a job with ``JobSpec/ownLimits``, beside the jobs' group (and
    /// never a spare: its limits are the job's). Limits this host cannot enforce are refused
    /// when the sandbox requires its limits, else left out, as the sandbox's own were.
    private func makeLimitedLeaf(_ limits: CgroupLimits) throws -> JobLeaf? {
        guard let cgroup else { return nil }
        let missing = configuration.cgroups?.enforcement().unenforceable(limits) ?? [:]
        if configuration.requireLimits, let first = limits.requested.first(where: { missing[$0] != nil }) {
            throw CgroupError.limitNotEnforceable(first, reason: missing[first]!)
        }
        let number = state.withLock { state in
            defer { state.nextLeaf += 1 }
            return state.nextLeaf
        }
        let leaf = try cgroup.createLimitedLeaf("own-\(number)", limits: limits.removing(missing.keys))
        do {
            return JobLeaf(leaf: leaf, procs: try leaf.openProcsForChild())
        } catch {
            try? leaf.destroy()
            throw error
        }
    }

    /// A new leaf under the jobs' group, named by the sandbox's leaf counter.
    private func makeLeaf(in jobs: ProjectCgroup) throws -> JobLeaf {
        let number = state.withLock { state in
            defer { state.nextLeaf += 1 }
            return state.nextLeaf
        }
        let leaf = try jobs.createLeaf("job-\(number)")
        do {
            return JobLeaf(leaf: leaf, procs: try leaf.openProcsForChild())
        } catch {
            try? leaf.destroy()
            throw error
        }
    }

    private func prepareSpareLeaf() {
        guard configuration.spareJobLeaves, let jobsCgroup else { return }
        let start = state.withLock { state in
            guard state.alive, state.spare == nil, !state.preparing else { return false }
            state.preparing = true
            return true
        }
        guard start else { return }
        spareQueue.async { [self] in
            let made = try? makeLeaf(in: jobsCgroup)
            // A sandbox destroyed meanwhile removes the leaf with its whole cgroup: its
            // destroy() waits for this queue first.
            state.withLock { state in
                state.preparing = false
                if state.alive { state.spare = made }
            }
        }
    }

    /// Jobs started and not yet ended.
    public var runningJobs: [RunningJob] { state.withLock { Array($0.jobs.values) } }

    /// Kills every process of the sandbox and waits until its init is gone. Mounts and
    /// namespaces disappear with their last process. Calling it again does nothing.
    public func destroy() async {
        let jobs: [RunningJob]? = state.withLock { state in
            guard state.alive else { return nil }
            state.alive = false
            return Array(state.jobs.values)
        }
        guard let jobs else {
            await reaped.wait()
            return
        }
        // SIGKILL to a pid namespace's init kills every process in it.
        _ = cor_pidfd_send_signal(initPidfd, SIGKILL)
        for job in jobs { _ = await job.wait() }
        await reaped.wait()
        state.withLock { $0.spare = nil }
        if let cgroup {
            _ = try? await Self.blocking { [spareQueue] in
                spareQueue.sync {}  // a spare leaf being made must exist before the tree goes
                try cgroup.destroy()
            }
        }
        IdentityRanges.shared.release(hostIDBase)
    }

    /// Called by the init's watcher once the init has been reaped.
    func initReaped() {
        state.withLock { state in
            if state.alive { state.died = true }
        }
        reaped.set()
    }

    /// Whether the init is dying or dead while the sandbox was not being destroyed: a job
    /// killed by SIGKILL then was killed by the sandbox's death, not by anything it did.
    var initDying: Bool {
        guard state.withLock({ $0.alive }) else { return false }
        return reaped.isSet || Self.isExiting(initPID)
    }

    /// Whether `pid` has begun to exit (PF_EXITING in the flags of `/proc/PID/stat`). A pid
    /// namespace's init that is killed first kills every other process of its namespace and
    /// waits for them all to be reaped, and only then becomes a zombie its pidfd reports:
    /// until then this is the only sign. Called only while the init is unreaped (it is this
    /// process's child), so the pid is still the init's.
    static func isExiting(_ pid: pid_t) -> Bool {
        guard let stat = try? KernelFile.read("/proc/\(pid)/stat"),
            let close = stat.lastIndex(of: ")")
        else { return false }
        // After "pid (comm)": state ppid pgrp session tty_nr tpgid flags ...
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 6, let flags = UInt32(fields[6]) else { return false }
        let exiting: UInt32 = 0x4  // PF_EXITING, include/linux/sched.h
        return flags & exiting != 0
    }

    /// Runs blocking work (a spawn waits for its child's exec) on the process's pool of
    /// blocking threads, never on the async pool.
    static func blocking<T: Sendable>(_ name: String = "corral-sandbox", _ body: @escaping @Sendable () throws -> T)
        async throws -> T
    {
        try await BlockingExecutor.shared.run(name, body)
    }
}

/// A one-way flag that tasks can wait for.
final class Reaped: Sendable {
    private let state = Mutex<(set: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    var isSet: Bool { state.withLock { $0.set } }

    func set() {
        let waiters = state.withLock { state in
            state.set = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    func wait() async {
        await withCheckedContinuation { continuation in
            let done = state.withLock { state in
                if state.set { return true }
                state.waiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }
}
