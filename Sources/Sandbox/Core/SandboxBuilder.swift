import CShim
import Foundation
import Glibc

/// Creates a sandbox: clones corral-init into new namespaces, gives it its uid range and
/// its plan, and waits for it to report ready.
struct SandboxBuilder {
    let configuration: SandboxConfiguration
    let initBinary: String

    init(_ configuration: SandboxConfiguration, initBinary: String) {
        self.configuration = configuration
        self.initBinary = initBinary
    }

    /// Uid and gid inside that own the workspace: the default job user.
    static let workspaceOwner: UInt32 = IdentityRanges.workspaceOwner

    func build() throws -> ProjectSandbox {
        try validate()
        let (limits, unenforced) = try enforceableLimits()
        let base = try IdentityRanges.shared.allocate(sharing: configuration.sharedIdentity)
        do {
            // Made before the chown below, so the home is the agent's like the rest.
            if configuration.projectHome,
                let home = try ProjectHome.prepare(
                    workspace: configuration.workspace, seed: configuration.rootfs + ProjectHome.target)
            {
                close(home)
            }
            try Ownership.chownTree(
                configuration.workspace, uid: base + Self.workspaceOwner, gid: base + Self.workspaceOwner)
            return try start(base: base, limits: limits, unenforced: unenforced)
        } catch {
            IdentityRanges.shared.release(base)
            throw error
        }
    }

    private func validate() throws {
        let id = configuration.projectID
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
        guard (1...63).contains(id.count), id.allSatisfy(allowed.contains), id.first != ".", id.first != "-" else {
            throw SandboxError.invalidConfiguration("project id must be 1-63 of [A-Za-z0-9._-]: \(id)")
        }
        var isDir: ObjCBool = false
        for (what, path) in [("workspace", configuration.workspace), ("rootfs", configuration.rootfs)] {
            guard path.hasPrefix("/"), FileManager.default.fileExists(atPath: path, isDirectory: &isDir),
                isDir.boolValue
            else { throw SandboxError.invalidConfiguration("\(what) is not a directory: \(path)") }
        }
        for mountPoint in ["workspace", "proc", "dev", "tmp"] {
            let path = configuration.rootfs + "/" + mountPoint
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue else {
                throw SandboxError.invalidConfiguration("rootfs has no /\(mountPoint): \(configuration.rootfs)")
            }
        }
        guard access(initBinary, X_OK) == 0 else {
            throw SandboxError.invalidConfiguration("corral-init is not executable at \(initBinary)")
        }
    }

    /// The limits to apply and those this host cannot enforce (resource → why). When the
    /// configuration requires its limits, a missing one is an error here, before anything
    /// exists; otherwise it is left out and reported, never silently dropped.
    func enforceableLimits() throws -> (CgroupLimits, [CgroupResource: String]) {
        let limits = configuration.limits
        let missing =
            configuration.cgroups?.enforcement().unenforceable(limits)
            ?? Dictionary(
                uniqueKeysWithValues: limits.requested.map { ($0, "no cgroup hierarchy is usable on this host") })
        if configuration.requireLimits, let first = limits.requested.first(where: { missing[$0] != nil }) {
            throw CgroupError.limitNotEnforceable(first, reason: missing[first]!)
        }
        return (limits.removing(missing.keys), missing)
    }

    private func start(base: UInt32, limits: CgroupLimits, unenforced: [CgroupResource: String]) throws
        -> ProjectSandbox
    {
        let initFD = try syscall("open(\(initBinary))") { cor_open_path(initBinary) }
        defer { close(initFD) }
        var plan: [Int32] = [-1, -1]
        var status: [Int32] = [-1, -1]
        try syscall("pipe2") { cor_pipe_cloexec(&plan) }
        defer { [plan[1], status[0]].filter { $0 >= 0 }.forEach { close($0) } }
        do {
            try syscall("pipe2") { cor_pipe_cloexec(&status) }
        } catch {
            close(plan[0])
            throw error
        }
        let argv = CStringArray(["corral-init"])
        let envp = CStringArray([])
        let trees = try DetachedTrees(configuration)
        defer { trees.close() }
        let cgroup = try makeCgroup(base: base)
        var pidfd: Int32 = -1
        var jobs: ProjectCgroup?
        var failure = cor_status()
        let pid = trees.withMounts { mounts in
            cor_spawn_init(initFD, plan[0], status[1], mounts, argv.pointer, envp.pointer, &pidfd, &failure)
        }
        let spawnErrno = errno
        close(plan[0])
        close(status[1])
        guard pid > 0 else {
            try? cgroup?.destroy()
            if failure.stage != 0 { throw SandboxError.child(failure) }
            throw SandboxError.system(SystemError("clone(init)", errno: spawnErrno))
        }

        do {
            // In the project's cgroup before the init unshares its cgroup namespace, so the
            // project's cgroup is the root of what the sandbox sees.
            try cgroup?.attach(pid: pid)
            try configureFromOutside(pid: pid, base: base)
            try writeAll(plan[1], [UInt8(ascii: "G")] + planBytes())
            close(plan[1])
            plan[1] = -1
            try awaitReady(status[0])
            // Then into a leaf of its own: on cgroup v2 a cgroup with processes cannot hand
            // controllers to its children. The limits go on a "jobs" group beside it, so the
            // OOM killer, which chooses within the cgroup over its limit, never picks the
            // init (lowering its oom_score_adj needs a capability some hosts withhold).
            try cgroup?.createLeaf("init").attach(pid: pid)
            try cgroup?.enableSubtreeControllers()
            jobs = try cgroup?.createGroup("jobs", limits: limits)
            try jobs?.enableSubtreeControllers()
        } catch {
            _ = cor_pidfd_send_signal(pidfd, SIGKILL)
            var s: Int32 = 0
            retryingInterrupted { waitpid(pid, &s, 0) }
            close(pidfd)
            try? cgroup?.destroy()
            throw error
        }
        let sandbox = ProjectSandbox(
            configuration: configuration, initPID: pid, initPidfd: pidfd, hostIDBase: base, cgroup: cgroup,
            jobsCgroup: jobs, unenforcedLimits: unenforced)
        try watchInit(pidfd: pidfd, sandbox: sandbox)
        return sandbox
    }

    /// The project's cgroup, named after the project and this sandbox's uid slot. The slot
    /// is ours alone in this process, so a cgroup already there is a leftover of a host that
    /// died: it is killed and replaced (one Corral host per machine; see docs/SANDBOX.md).
    private func makeCgroup(base: UInt32) throws -> ProjectCgroup? {
        guard let driver = configuration.cgroups else { return nil }
        let name = "\(configuration.projectID).\((base - IdentityRanges.base) / IdentityRanges.size)"
        // The limits go on the jobs' group (see start), not on the project as a whole.
        do {
            return try driver.createProject(name, limits: CgroupLimits())
        } catch CgroupError.alreadyExists {
            try driver.openProject(name).destroy()
            return try driver.createProject(name, limits: CgroupLimits())
        }
    }

    /// What only the parent can do: the uid/gid maps, and shielding the init from the OOM
    /// killer so a memory bomb kills the job, not the sandbox.
    private func configureFromOutside(pid: pid_t, base: UInt32) throws {
        let map = "0 \(base) \(IdentityRanges.size)\n"
        try writeFile("/proc/\(pid)/uid_map", map)
        try writeFile("/proc/\(pid)/gid_map", map)
        // Lowering the score needs CAP_SYS_RESOURCE, which some hosts (containers, these
        // development machines) withhold; the init is tiny and rarely the OOM victim anyway.
        do {
            try writeFile("/proc/\(pid)/oom_score_adj", "-1000\n")
        } catch let error as SystemError where error.errno == EACCES || error.errno == EPERM {}
    }

    private func planBytes() -> [UInt8] {
        let pairs: [(String, String)] = [
            ("hostname", configuration.projectID),
            ("tmp_size", String(configuration.tmpBytes)),
            ("shm_size", String(configuration.shmBytes)),
            ("last_cap", String(Spawner.lastCapability)),
        ]
        var bytes: [UInt8] = []
        for (key, value) in pairs {
            bytes += Array(key.utf8) + [0] + Array(value.utf8) + [0]
        }
        return bytes
    }

    /// The host paths a sandbox shows, as detached mount trees for the builder in
    /// `cor_spawn_init` to attach (see docs/SANDBOX.md, "Mount tree").
    private struct DetachedTrees {
        var fds: [Int32] = []
        let template: Int32
        let rootfs: Int32
        let workspace: Int32
        let proc: Int32
        var binds: [Int32] = []
        let targets: CStringArray

        init(_ configuration: SandboxConfiguration) throws {
            template = try MountTemplate.descriptor()
            var opened: [Int32] = []
            var targets = configuration.readOnlyBinds.map(\.target)
            func tree(_ path: String, recursive: Bool, _ attributes: UInt64) throws -> Int32 {
                let fd = try syscall("open_tree(\(path))") { cor_detached_tree(path, recursive ? 1 : 0, attributes) }
                opened.append(fd)
                return fd
            }
            do {
                let readOnly = UInt64(COR_MOUNT_RDONLY | COR_MOUNT_NOSUID | COR_MOUNT_NODEV)
                rootfs = try tree(configuration.rootfs, recursive: true, readOnly)
                workspace = try tree(
                    configuration.workspace, recursive: false, UInt64(COR_MOUNT_NOSUID | COR_MOUNT_NODEV))
                proc = try tree("/proc", recursive: false, 0)
                for bind in configuration.readOnlyBinds {
                    binds.append(try tree(bind.source, recursive: true, readOnly))
                }
                if configuration.projectHome, Self.isDirectory(configuration.rootfs + ProjectHome.target),
                    let home = try ProjectHome.prepare(workspace: configuration.workspace)
                {
                    defer { Glibc.close(home) }
                    let fd = try syscall("open_tree(\(ProjectHome.target))") {
                        cor_detached_tree_fd(home, UInt64(COR_MOUNT_NOSUID | COR_MOUNT_NODEV))
                    }
                    opened.append(fd)
                    binds.append(fd)
                    targets.append(ProjectHome.target)
                }
            } catch {
                opened.forEach { Glibc.close($0) }
                throw error
            }
            fds = opened
            // Relative to the image's root, where the builder stands.
            self.targets = CStringArray(targets.map { String($0.drop(while: { $0 == "/" })) })
        }

        /// A directory of the image, not a symlink: only those can be a mount point here.
        static func isDirectory(_ path: String) -> Bool {
            var info = stat()
            return lstat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR
        }

        func withMounts<R>(_ body: (UnsafePointer<cor_init_mounts>) -> R) -> R {
            binds.withUnsafeBufferPointer { bindFDs in
                targets.pointer.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: binds.count + 1) {
                    targetPointers in
                    var mounts = cor_init_mounts(
                        template_fd: template, rootfs_fd: rootfs, workspace_fd: workspace,
                        proc_fd: proc, bind_fds: bindFDs.baseAddress, bind_targets: targetPointers,
                        n_binds: Int32(binds.count))
                    return body(&mounts)
                }
            }
        }

        func close() { fds.forEach { Glibc.close($0) } }
    }

    private func awaitReady(_ fd: Int32) throws {
        var record = cor_status()
        let size = MemoryLayout<cor_status>.size
        let n = retryingInterrupted { withUnsafeMutableBytes(of: &record) { read(fd, $0.baseAddress, size) } }
        guard n == size else { throw SandboxError.childFailed(stage: "init", errno: n < 0 ? errno : EPIPE) }
        guard record.stage == Int32(COR_STAGE_READY.rawValue) else { throw SandboxError.child(record) }
    }

    /// Reaps the init whenever it dies, through a duplicate of its pidfd so the sandbox's
    /// own descriptor stays valid for setns until the sandbox is released.
    private func watchInit(pidfd: Int32, sandbox: ProjectSandbox) throws {
        let watchFD = try syscall("fcntl(dupfd)") { fcntl(pidfd, F_DUPFD_CLOEXEC, 0) }
        try EventLoop.shared.watch(watchFD) { [weak sandbox] _ in
            var code: Int32 = 0
            var status: Int32 = 0
            var usage = rusage()
            guard cor_waitid_pidfd(watchFD, WEXITED | WNOHANG, &code, &status, &usage) == 1 else { return true }
            sandbox?.initReaped()
            return false
        }
    }

    private func writeFile(_ path: String, _ text: String) throws {
        let fd = try syscall("open(\(path))") { open(path, O_WRONLY | O_CLOEXEC) }
        defer { close(fd) }
        try writeAll(fd, Array(text.utf8), what: path)
    }

    private func writeAll(_ fd: Int32, _ bytes: [UInt8], what: String = "plan") throws {
        var offset = 0
        while offset < bytes.count {
            let n = try syscall("write(\(what))") {
                bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            }
            offset += n
        }
    }
}

/// The mount namespace every sandbox's tree is assembled in (`cor_mount_template`): one
/// read-only tmpfs, made once per process and kept for its life. A sandbox's namespace is a
/// copy of it, never of the host's, so it holds no other project's workspace: a sandbox
/// created while another project's volume was mounted would otherwise keep that volume's
/// loop device busy until the sandbox ended.
enum MountTemplate {
    private static let made: Result<Int32, SystemError> = {
        let fd = cor_mount_template()
        return fd >= 0 ? .success(fd) : .failure(SystemError("mount template", errno: errno))
    }()

    static func descriptor() throws -> Int32 { try made.get() }
}
