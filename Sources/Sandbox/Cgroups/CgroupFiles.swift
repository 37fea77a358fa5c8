import Glibc

/// Plain-syscall access to cgroupfs interface files.
///
/// cgroupfs files are tiny, and the kernel parses each `write` as one command, so every write
/// is a single `write(2)` of the whole value. Errors become ``CgroupError/system(_:)`` with the
/// call and the full path, e.g. `write(/sys/fs/cgroup/pids/corral/p/pids.max): EINVAL`.
enum CgroupFiles {
    /// Runs `body` through the EINTR-retrying ``syscall(_:_:)`` and wraps a failure as a CgroupError.
    @discardableResult
    static func call<T: BinaryInteger>(_ name: @autoclosure () -> String, _ body: () -> T) throws -> T {
        do { return try syscall(name(), body) } catch let error as SystemError { throw CgroupError.system(error) }
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// The file's whole content.
    static func read(_ path: String) throws -> String {
        do { return try KernelFile.read(path) } catch let error as SystemError { throw CgroupError.system(error) }
    }

    /// The file's content, or nil when the file does not exist (a controller not enabled there).
    static func readIfPresent(_ path: String) throws -> String? {
        do { return try read(path) } catch CgroupError.system(let error) where error.errno == ENOENT { return nil }
    }

    /// Writes `text` with one `write(2)`, which is how cgroupfs expects a value.
    static func write(_ path: String, _ text: String) throws {
        let fd = try call("open(\(path))") { open(path, O_WRONLY | O_CLOEXEC) }
        defer { close(fd) }
        var bytes = Array(text.utf8)
        let written = try call("write(\(path))") {
            bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        }
        if written != bytes.count { throw CgroupError.system(SystemError("write(\(path))", errno: EIO)) }
    }

    /// Creates one directory; returns false when it already existed.
    static func makeDirectory(_ path: String) throws -> Bool {
        do {
            try call("mkdir(\(path))") { mkdir(path, 0o755) }
            return true
        } catch CgroupError.system(let error) where error.errno == EEXIST {
            return false
        }
    }

    /// Creates `path` and any missing parents below `base` (which must exist); returns the
    /// directories this call created, top down.
    @discardableResult
    static func makeDirectories(base: String, relative: String) throws -> [String] {
        var path = base
        var created: [String] = []
        for component in relative.split(separator: "/") {
            path += "/" + component
            if try makeDirectory(path) { created.append(path) }
        }
        return created
    }

    /// Removes one cgroup directory; a missing one counts as removed.
    ///
    /// A cgroup whose last task has just exited can answer EBUSY for a moment while the kernel
    /// finishes tearing the task down, so EBUSY is retried with a doubling sleep (1 ms … 512 ms,
    /// about 1 s in all) before giving up; runc and crun learned the same.
    static func removeDirectory(_ path: String) throws {
        var delayMicros: UInt32 = 1_000
        while true {
            if rmdir(path) == 0 { return }
            let error = errno
            switch error {
            case ENOENT: return
            case EINTR: continue
            case EBUSY where delayMicros <= 512_000:
                usleep(delayMicros)
                delayMicros *= 2
            default: throw CgroupError.system(SystemError("rmdir(\(path))", errno: error))
            }
        }
    }

    /// Names of the subdirectories (child cgroups) of `path`; empty when `path` does not exist.
    static func subdirectories(_ path: String) throws -> [String] {
        guard let dir = opendir(path) else {
            let error = errno
            if error == ENOENT { return [] }
            throw CgroupError.system(SystemError("opendir(\(path))", errno: error))
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            guard entry.pointee.d_type == UInt8(DT_DIR) else { continue }
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Every directory under `path`, deepest first, then `path` itself: the order rmdir needs.
    static func treeDeepestFirst(_ path: String) throws -> [String] {
        var result: [String] = []
        for name in try subdirectories(path) {
            result += try treeDeepestFirst(path + "/" + name)
        }
        return result + [path]
    }

    // MARK: - Parsing

    /// `text` without leading and trailing whitespace (interface files end in a newline).
    static func trim(_ text: some StringProtocol) -> String {
        let scalars = text.unicodeScalars.drop(while: { $0.properties.isWhitespace })
        let kept = scalars.reversed().drop(while: { $0.properties.isWhitespace }).reversed()
        return String(String.UnicodeScalarView(kept))
    }

    /// The pids listed in a `cgroup.procs` file; empty when the cgroup does not exist.
    static func pids(_ path: String) throws -> [pid_t] {
        guard let text = try readIfPresent(path) else { return [] }
        return try text.split(whereSeparator: \.isNewline).map { line in
            guard let pid = pid_t(line) else { throw CgroupError.malformed(file: path, content: text) }
            return pid
        }
    }

    /// The value of `key` in a flat-keyed file such as `memory.events` (`oom_kill 3`).
    static func keyedValue(_ key: String, in text: String, file: String) throws -> UInt64? {
        for line in text.split(whereSeparator: \.isNewline) {
            let fields = line.split(separator: " ")
            guard fields.count == 2, fields[0] == key else { continue }
            guard let value = UInt64(fields[1]) else { throw CgroupError.malformed(file: file, content: text) }
            return value
        }
        return nil
    }

    /// A single unsigned number such as `memory.peak` or `cpuacct.usage`.
    static func number(_ path: String) throws -> UInt64 {
        let text = try read(path)
        guard let value = UInt64(trim(text)) else { throw CgroupError.malformed(file: path, content: text) }
        return value
    }
}
