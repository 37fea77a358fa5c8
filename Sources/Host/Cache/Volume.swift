import CShim
import Foundation
import Glibc
import Sandbox

/// A project's size-capped filesystem: a sparse ext4 image the size of the cap, bound to a
/// loop device and mounted `nosuid,nodev`. The workspace is a directory *inside* it, beside
/// its staging and trash trees, so extraction and eviction still end in a `rename` within
/// one filesystem, and nothing a job writes can take more host disk than the image's size.
///
/// Every call blocks (mkfs, mount, waiting for a loop device to detach): run them on a
/// dedicated thread.
struct Volume: Sendable {
    /// `<data>/volumes/<id>.img`.
    let image: String
    /// `<data>/mounts/<id>`: the root of the mounted filesystem.
    let mountPoint: String
    /// A layer's volume (docs/CACHE.md, "Forks"): mounted read-only, never written again.
    var readOnly = false

    /// The project root, what the sandbox mounts at `/workspace`.
    var workspace: String { mountPoint + "/workspace" }
    func staging() -> String { "\(mountPoint)/staging.\(UUID().uuidString)" }
    func trash() -> String { "\(mountPoint)/trash.\(UUID().uuidString)" }

    /// Below this mkfs leaves too little room to be useful.
    static let minimumBytes: Int64 = 4 << 20
    /// ext4's own limit with 4 KiB blocks is far above this; it guards against typos.
    static let maximumBytes: Int64 = 16 << 40
    /// How long an unmounted volume's loop device may take to detach before it counts as
    /// still in use elsewhere.
    static let detachTimeout: Duration = .seconds(2)

    // MARK: - Create and mount

    /// Creates a fresh, empty filesystem of `bytes` and mounts it. On failure nothing is
    /// left: no image, no mount, no loop device.
    func create(bytes: Int64) throws(CacheError) {
        try SafeTree.makeDirectories(mountPoint, mode: 0o700)
        do throws(CacheError) {
            try Self.format(image: image, bytes: bytes)
            try mount()
        } catch {
            try? remove()
            throw error
        }
    }

    /// Makes `image`: a sparse file of `bytes` holding an empty ext4 filesystem. On failure
    /// nothing is left.
    static func format(image: String, bytes: Int64) throws(CacheError) {
        try SafeTree.makeDirectories(SafeTree.split(image).0, mode: 0o700)
        // O_EXCL: an image already there is not ours to replace; the caller removes leftovers.
        let fd = try sys("open(\(image))") { open(image, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }
        do throws(CacheError) {
            defer { close(fd) }
            // Sparse: the host only pays for blocks the filesystem actually writes.
            try sys("ftruncate(\(image))") { ftruncate(fd, off_t(bytes)) }
            // No journal and no reserved blocks: every byte of the cap is usable, and the
            // metadata overhead of a 64 MiB image stays under 0.5 MiB on the host.
            try HostTool.run(
                "mkfs.ext4", ["-q", "-F", "-m", "0", "-O", "^has_journal", "-E", "root_owner=0:0", image])
        } catch {
            unlink(image)
            throw error
        }
    }

    /// Takes a spare image made by ``format(image:bytes:)`` (of this volume's size, on the
    /// same filesystem) as this volume's and mounts it. On failure nothing is left.
    func adopt(spare: String) throws(CacheError) {
        try SafeTree.makeDirectories(SafeTree.split(image).0, mode: 0o700)
        try SafeTree.makeDirectories(mountPoint, mode: 0o700)
        do throws(CacheError) {
            try sys("rename(\(spare))") { rename(spare, image) }
            try mount()
        } catch {
            unlink(spare)
            try? remove()
            throw error
        }
    }

    /// Binds the image to a loop device and mounts it (`nosuid`, `nodev`; read-only for a
    /// layer, whose tree forks share: docs/CACHE.md, "Forks").
    func mount() throws(CacheError) {
        try SafeTree.makeDirectories(mountPoint, mode: 0o700)
        let file = try sys("open(\(image))") { open(image, O_RDWR | O_NOFOLLOW | O_CLOEXEC) }
        var index: Int32 = -1
        let loop = cor_loop_attach(file, image, &index)
        let attachErrno = errno
        close(file)
        guard loop >= 0 else {
            throw .volume("cannot bind \(image) to a loop device: \(SystemError("LOOP_CONFIGURE", errno: attachErrno))")
        }
        // Until the mount holds the device, this descriptor is its only user: closing it
        // first would let LO_FLAGS_AUTOCLEAR detach it, and a failed mount detaches it so.
        defer { close(loop) }
        let flags = UInt(MS_NOSUID) | UInt(MS_NODEV) | (readOnly ? UInt(MS_RDONLY) : 0)
        try sys("mount(\(mountPoint))") { Glibc.mount("/dev/loop\(index)", mountPoint, "ext4", flags, nil) }
    }

    /// Checks an image that was not unmounted cleanly (a machine crash: no journal) and
    /// repairs what `e2fsck -p` may repair without asking.
    func check() throws(CacheError) {
        // 1: errors corrected; 2: corrected, reboot advised (only matters for a mounted root).
        try HostTool.run("e2fsck", ["-p", image], accept: [0, 1, 2])
    }

    // MARK: - Unmount and remove

    /// Unmounts the filesystem and waits until its loop device has detached.
    ///
    /// Never detaches lazily: if something on the host has a file open in it (EBUSY), or
    /// the filesystem lives on in another mount namespace (a sandbox still running over
    /// it, so the loop device stays bound), this fails with ``CacheError/busy(_:)`` and the
    /// volume is mounted exactly as before.
    func unmount() throws(CacheError) {
        // More than one mount can be stacked on the mount point (a crashed run's, then ours).
        var rounds = 0
        while MountTable.isMountPoint(mountPoint) {
            rounds += 1
            if rounds > 16 { throw .volume("\(mountPoint) is still a mount point after 16 unmounts") }
            let device = MountTable.device(of: mountPoint)
            let loop = MountTable.loopName(mountedAt: mountPoint)
            let backing = loop.flatMap(MountTable.backingFile)
            if umount2(mountPoint, Int32(UMOUNT_NOFOLLOW)) != 0 {
                let e = errno
                if e == EBUSY { throw .busy("the workspace filesystem at \(mountPoint) is in use on the host") }
                throw .volume("\(SystemError("umount(\(mountPoint))", errno: e))")
            }
            guard let loop, let backing, !release(loop, from: backing) else { continue }
            // The superblock is still alive elsewhere: put this mount back, so the caller can
            // restore the workspace and nothing is half-removed.
            let flags = UInt(MS_NOSUID) | UInt(MS_NODEV) | (readOnly ? UInt(MS_RDONLY) : 0)
            if Glibc.mount("/dev/\(loop)", mountPoint, "ext4", flags, nil) != 0 {
                throw .volume(
                    "\(loop) stays bound after unmounting \(mountPoint) and cannot be mounted again: "
                        + "\(SystemError("mount(\(mountPoint))", errno: errno))")
            }
            let holders = device.map { MountTable.holders(major: $0.major, minor: $0.minor) } ?? []
            throw .busy(
                "the workspace filesystem \(image) is still mounted in another mount namespace, held by "
                    + (holders.isEmpty
                        ? "no process (a namespace kept open by a file)" : holders.joined(separator: ", "))
                    + "; stop that first")
        }
    }

    /// Makes sure `loop` lets go of `backing` now that nothing here mounts it; whether it
    /// did within ``detachTimeout``.
    private func release(_ loop: String, from backing: String) -> Bool {
        // Ours detach by themselves (LO_FLAGS_AUTOCLEAR) as the unmount drops the last user.
        if MountTable.backingFile(loop) != backing { return true }
        // A crashed run's device bound without AUTOCLEAR (losetup's default) stays bound:
        // clear it. While anyone else still has it open this only sets AUTOCLEAR, so it can
        // never pull a device from under a live filesystem.
        let fd = open("/dev/\(loop)", O_RDONLY | O_CLOEXEC)
        if fd >= 0 {
            if MountTable.backingFile(loop) == backing { _ = cor_loop_detach(fd) }
            close(fd)
        }
        let deadline = ContinuousClock.now + Self.detachTimeout
        while MountTable.backingFile(loop) == backing {
            // Unbound, or already bound again to another image by another materialization.
            if ContinuousClock.now >= deadline { return false }
            usleep(10_000)
        }
        return true
    }

    /// Unmounts (see ``unmount()``), then deletes the image and the mount point.
    func remove() throws(CacheError) {
        try unmount()
        if unlink(image) != 0 && errno != ENOENT { throw .system(SystemError("unlink(\(image))", errno: errno)) }
        // Not a mount point any more, so anything left below it is on the host's disk.
        try SafeTree.remove(path: mountPoint)
    }
}

/// The host's own filesystem tools, run as subprocesses on files the host created.
enum HostTool {
    static let directories = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]

    /// Runs `name` (looked up in the system directories only, never `$PATH`) with a clean
    /// environment; an exit status outside `accept` fails with its standard error.
    static func run(_ name: String, _ arguments: [String], accept: Set<Int32> = [0]) throws(CacheError) {
        let candidates = directories.map { "\($0)/\(name)" }
        guard let path = candidates.first(where: { (path: String) in access(path, X_OK) == 0 }) else {
            throw .volume("\(name) is not installed (looked in \(directories.joined(separator: ", ")))")
        }
        // posix_spawn, not Foundation's Process: Process.waitUntilExit spins a run loop on the
        // calling thread, which leaves an epoll, an eventfd and a timerfd on every pool thread
        // that ever ran a tool, for as long as that thread lives.
        var pipeFDs: [Int32] = [-1, -1]
        guard cor_pipe_cloexec(&pipeFDs) == 0 else { throw .system(SystemError("pipe2", errno: errno)) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 2)
        let argv = CStringArray([path] + arguments)
        let envp = CStringArray(["PATH=" + directories.joined(separator: ":"), "LC_ALL=C"])
        var pid: pid_t = 0
        let spawned = withExtendedLifetime((argv, envp)) {
            posix_spawn(&pid, path, &actions, nil, argv.pointer, envp.pointer)
        }
        close(pipeFDs[1])
        guard spawned == 0 else {
            close(pipeFDs[0])
            throw .volume("cannot run \(path): \(String(cString: strerror(spawned)))")
        }
        // Read to EOF before waiting, so a chatty tool can never block on a full pipe.
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(pipeFDs[0], $0.baseAddress, $0.count) }
            if n > 0 {
                if output.count < 2000 { output += buffer[0..<min(n, 2000 - output.count)] }
            } else if n == 0 || errno != EINTR {
                break
            }
        }
        close(pipeFDs[0])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        // WIFEXITED and WEXITSTATUS are macros Swift cannot import.
        let exited = status & 0x7f == 0
        let code = (status >> 8) & 0xff
        guard exited, accept.contains(code) else {
            let text = String(decoding: output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            let how = exited ? "status \(code)" : "signal \(status & 0x7f)"
            throw .volume("\(name) \(arguments.joined(separator: " ")) failed with \(how): \(text)")
        }
    }
}
