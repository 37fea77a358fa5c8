import Foundation
import Glibc
import Sandbox

/// One line of `/proc/self/mountinfo`.
struct MountEntry: Sendable, Equatable {
    /// The device of the mounted filesystem (`st_dev` of its root).
    let major: UInt32
    let minor: UInt32
    /// Where it is mounted, unescaped, as this mount namespace sees it (symlinks resolved).
    let mountPoint: String
    let fstype: String
}

/// What the host's mount namespace and the loop driver say, read from procfs and sysfs.
///
/// Reading these never opens a block device: opening (then closing) an idle loop device
/// with `LO_FLAGS_AUTOCLEAR` would detach it as a side effect.
enum MountTable {
    /// Every mount of this process's mount namespace.
    static func read() throws(CacheError) -> [MountEntry] {
        guard let text = try? KernelFile.read("/proc/self/mountinfo") else {
            throw .system(SystemError("read(/proc/self/mountinfo)", errno: errno == 0 ? EIO : errno))
        }
        return text.split(separator: "\n").compactMap(parse)
    }

    /// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
    static func parse(_ line: Substring) -> MountEntry? {
        let fields = line.split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count >= 7, let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count else { return nil }
        let device = fields[2].split(separator: ":")
        guard device.count == 2, let major = UInt32(device[0]), let minor = UInt32(device[1]) else { return nil }
        return MountEntry(
            major: major, minor: minor, mountPoint: unescape(fields[4]), fstype: String(fields[dash + 1]))
    }

    /// The kernel writes space, tab, newline and backslash in paths as `\ooo` octal.
    static func unescape(_ field: Substring) -> String {
        var bytes: [UInt8] = []
        var utf8 = Array(field.utf8)[...]
        while let c = utf8.popFirst() {
            if c == 0x5c, utf8.count >= 3, let value = UInt8(String(decoding: utf8.prefix(3), as: UTF8.self), radix: 8)
            {
                bytes.append(value)
                utf8 = utf8.dropFirst(3)
            } else {
                bytes.append(c)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Whether `path` is the root of a mount: its device differs from its parent's.
    /// Every volume is its own filesystem, so a bind mount of the same device never
    /// needs telling apart here.
    static func isMountPoint(_ path: String) -> Bool {
        var st = stat()
        var parent = stat()
        guard lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFDIR, stat(path + "/..", &parent) == 0 else {
            return false
        }
        return st.st_dev != parent.st_dev
    }

    // MARK: - Loop devices (sysfs)

    /// The sysfs name (`loop3`) of a block device, if it is a loop device.
    static func loopName(major: UInt32, minor: UInt32) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
        let n = readlink("/sys/dev/block/\(major):\(minor)", &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        let target = String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let name = String(target.split(separator: "/").last ?? "")
        return name.hasPrefix("loop") ? name : nil
    }

    /// The file a loop device is bound to, as the kernel prints it (a removed file ends in
    /// ` (deleted)`), or nil when the device is not bound.
    static func backingFile(_ loop: String) -> String? {
        guard let text = try? String(contentsOfFile: "/sys/block/\(loop)/loop/backing_file", encoding: .utf8) else {
            return nil
        }
        return text.hasSuffix("\n") ? String(text.dropLast()) : text
    }

    /// Every bound loop device with its backing file.
    static func boundLoops() -> [(name: String, backing: String)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/block")) ?? []
        return names.filter { $0.hasPrefix("loop") }.sorted().compactMap { name in
            backingFile(name).map { (name, $0) }
        }
    }

    /// The loop device the filesystem mounted at `path` is on, if `path` is a mount point.
    static func loopName(mountedAt path: String) -> String? {
        guard isMountPoint(path), let (major, minor) = device(of: path) else { return nil }
        return loopName(major: major, minor: minor)
    }

    /// The processes of other mount namespaces that still mount the device `major:minor`,
    /// one per namespace, as `pid 42 (name)`: what to name when a filesystem will not let
    /// go. Reads every `/proc/<pid>/mountinfo`, so it is for error paths only.
    static func holders(major: UInt32, minor: UInt32, limit: Int = 5) -> [String] {
        let own = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/mnt")
        var seen: Set<String> = own.map { [$0] } ?? []
        var out: [String] = []
        let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap(Int.init).sorted()
        for pid in pids where out.count < limit {
            guard let ns = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/mnt"),
                seen.insert(ns).inserted,
                let table = try? KernelFile.read("/proc/\(pid)/mountinfo"),
                table.split(separator: "\n").compactMap(parse).contains(where: {
                    $0.major == major && $0.minor == minor
                })
            else { continue }
            let name = (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? "?\n"
            out.append("pid \(pid) (\(name.dropLast()))")
        }
        return out
    }

    /// The device numbers of the filesystem `path` is on.
    static func device(of path: String) -> (major: UInt32, minor: UInt32)? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        let dev = UInt64(st.st_dev)
        // glibc's gnu_dev_major/minor are macros Swift does not import; this is their body.
        return (
            UInt32(truncatingIfNeeded: ((dev >> 8) & 0xfff) | ((dev >> 32) & ~0xfff)),
            UInt32(truncatingIfNeeded: (dev & 0xff) | ((dev >> 12) & ~0xff))
        )
    }

    /// A path with symlinks resolved, as mountinfo and sysfs print it.
    static func realPath(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}
