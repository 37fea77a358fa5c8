import Foundation
import Glibc
import Host
import Sandbox
import TestSupport

/// A cache fixture for disk-capped workspaces: real images, loop devices and mounts, all
/// released when the fixture goes, even after a failed expectation.
final class QuotaFixture: Sendable {
    let f: CacheFixture
    static let mib: Int64 = 1 << 20
    static let quota: Int64 = 64 << 20

    init() throws { f = try CacheFixture() }

    var data: String { f.data }
    func image(_ id: String) -> String { f.data + "/volumes/\(id).img" }
    func mountPoint(_ id: String) -> String { f.data + "/mounts/\(id)" }

    func open(quota: Int64? = QuotaFixture.quota, primary: (any BlobStore)? = nil, spares: Int = 0) async throws
        -> ProjectCache
    {
        var config = f.configuration(primary: primary)
        config.workspaceQuotaBytes = quota
        config.spareVolumes = spares
        return try await ProjectCache.open(config)
    }

    /// A project with a pseudo-random binary file, text, an executable and a symlink, as a
    /// bsdtar archive (so the bytes did not come from Corral's own writer).
    func binaryProject(_ name: String) throws -> (url: String, files: [String: Data]) {
        let dir = f.tmp.path + "/tree-\(name)"
        var files: [String: Data] = [:]
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        files["bin/blob.dat"] = Data(
            (0..<(3 << 20)).map { _ in
                x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return UInt8(truncatingIfNeeded: x >> 33)
            })
        files["src/app.py"] = Data("print('v1')\n".utf8)
        files["build.sh"] = Data("#!/bin/sh\nmake\n".utf8)
        for (path, data) in files {
            try FileManager.default.createDirectory(
                atPath: (dir + "/" + path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try data.write(to: URL(fileURLWithPath: dir + "/" + path))
        }
        chmod(dir + "/build.sh", 0o755)
        symlink("src/app.py", dir + "/app")
        let archive = f.sources + "/\(name).tar.gz"
        let (status, output) = try run(["/usr/bin/bsdtar", "-czf", archive, "-C", dir, "."])
        guard status == 0 else { throw TestSupportError("bsdtar: \(output)") }
        return ("file://" + archive, files)
    }

    /// A tree's shape without file contents (binary files make ``describeTree(_:)`` slow):
    /// relative path → "dir", "link:<target>", "file:<size>" or "other".
    func shape(_ root: String) -> [String: String] {
        var out: [String: String] = [:]
        for rel in (FileManager.default.subpaths(atPath: root) ?? []) {
            var st = stat()
            guard lstat(root + "/" + rel, &st) == 0 else { continue }
            switch st.st_mode & S_IFMT {
            case S_IFDIR: out[rel] = "dir"
            case S_IFLNK:
                out[rel] =
                    "link:" + ((try? FileManager.default.destinationOfSymbolicLink(atPath: root + "/" + rel)) ?? "?")
            case S_IFREG: out[rel] = "file:\(st.st_size)"
            default: out[rel] = "other"
            }
        }
        return out
    }

    /// Whether every file in `files` (relative path → bytes) reads back exactly so.
    func holds(_ root: String, _ files: [String: Data]) -> Bool {
        files.allSatisfy { FileManager.default.contents(atPath: root + "/" + $0.key) == $0.value }
    }

    /// The mounts and bound loop devices of this fixture (under its directory, so tests
    /// running beside it cannot disturb the count): what must come back to exactly its
    /// starting value once every capped workspace is gone.
    struct HostState: Equatable, CustomStringConvertible {
        var mounts: Int
        var loops: [String]
        var description: String { "\(mounts) mounts, loops \(loops)" }
    }

    func hostState() throws -> HostState {
        let mountinfo = try KernelFile.read("/proc/self/mountinfo")
        let (status, output) = try run(["/usr/sbin/losetup", "-a"])
        guard status == 0 else { throw TestSupportError("losetup -a: \(output)") }
        let root = f.tmp.path
        return HostState(
            mounts: mountinfo.split(separator: "\n").filter { $0.contains(root) }.count,
            loops: output.split(separator: "\n").filter { $0.contains(root) }.map(String.init).sorted())
    }

    /// The size of the filesystem `path` is on (`f_blocks * f_frsize`).
    func filesystemSize(_ path: String) -> Int64 {
        let attributes = try? FileManager.default.attributesOfFileSystem(forPath: path)
        return (attributes?[.systemSize] as? NSNumber)?.int64Value ?? -1
    }

    /// The filesystem type and mount options of the mount at exactly `path`.
    func mountOptions(_ path: String) -> (type: String, options: Set<String>)? {
        let mounts = (try? KernelFile.read("/proc/self/mountinfo")) ?? ""
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ").map(String.init)
            guard fields.count > 8, fields[4] == path, let dash = fields.firstIndex(of: "-") else { continue }
            return (fields[dash + 1], Set(fields[5].split(separator: ",").map(String.init)))
        }
        return nil
    }

    func device(_ path: String) -> UInt64 {
        var st = stat()
        return lstat(path, &st) == 0 ? UInt64(st.st_dev) : 0
    }

    /// Host bytes allocated to a file (what a sparse image really costs the host's disk).
    func allocated(_ path: String) -> Int64 {
        var st = stat()
        return stat(path, &st) == 0 ? Int64(st.st_blocks) * 512 : -1
    }

    /// Runs a tool; its exit status and combined output.
    @discardableResult
    func run(_ argv: [String]) throws -> (Int32, String) { try runTool(argv) }

    deinit {
        // A failed test must not leak mounts or loop devices into the next one.
        let mounts = (try? KernelFile.read("/proc/self/mountinfo")) ?? ""
        let root = f.tmp.path
        for line in mounts.split(separator: "\n").reversed() {
            let point = line.split(separator: " ")[4]
            if point.hasPrefix(root) { umount2(String(point), Int32(MNT_DETACH)) }
        }
        if let output = try? run(["/usr/sbin/losetup", "-a"]).1 {
            for line in output.split(separator: "\n") where line.contains(root) {
                _ = try? run(["/usr/sbin/losetup", "-d", String(line.split(separator: ":")[0])])
            }
        }
    }
}

/// Runs a tool (`argv[0]` is its path); its exit status and combined output.
@discardableResult
func runTool(_ argv: [String]) throws -> (Int32, String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: argv[0])
    process.arguments = Array(argv.dropFirst())
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}
