import Foundation
import Glibc
import Host

/// Describes a tree without following symlinks: relative path → "file:<content>",
/// "dir", "link:<target>" or "other". Used to assert exact extraction results.
public func describeTree(_ root: String) -> [String: String] {
    var out: [String: String] = [:]
    func walk(_ dir: String, _ prefix: String) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return }
        for name in names {
            let path = dir + "/" + name
            let rel = prefix + name
            var st = stat()
            guard lstat(path, &st) == 0 else { continue }
            switch st.st_mode & S_IFMT {
            case S_IFDIR:
                out[rel] = "dir"
                walk(path, rel + "/")
            case S_IFLNK:
                out[rel] = "link:" + ((try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? "?")
            case S_IFREG:
                out[rel] =
                    "file:" + String(decoding: FileManager.default.contents(atPath: path) ?? Data(), as: UTF8.self)
            default:
                out[rel] = "other"
            }
        }
    }
    walk(root, "")
    return out
}

/// Every path under `root` (recursive, symlinks not followed), sorted.
public func allPaths(_ root: String) -> [String] {
    describeTree(root).keys.sorted()
}

/// `st_mode` of `path` without following a final symlink.
public func lstatMode(_ path: String) -> mode_t {
    var st = stat()
    return lstat(path, &st) == 0 ? st.st_mode : 0
}

/// `st_ino` of `path`.
public func lstatInode(_ path: String) -> UInt {
    var st = stat()
    return lstat(path, &st) == 0 ? UInt(st.st_ino) : 0
}

/// The raw names in a directory (bytes, not necessarily UTF-8).
public func rawNames(_ dir: String) -> Set<[UInt8]> {
    guard let d = opendir(dir) else { return [] }
    defer { closedir(d) }
    var out: Set<[UInt8]> = []
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
        if name != [0x2e] && name != [0x2e, 0x2e] { out.insert(name) }
    }
    return out
}

/// Every entry under `root`, sorted, one line each: path, type, permission bits, size and
/// SHA-256 of a file, or a symlink's target. Two trees with equal listings are the same
/// tree byte for byte and mode for mode.
public func treeListing(_ root: String) -> [String] {
    var lines: [String] = []
    func walk(_ dir: String, _ prefix: String) {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
        for name in names {
            let path = dir + "/" + name
            let rel = prefix + name
            var st = stat()
            guard lstat(path, &st) == 0 else { continue }
            let mode = String(st.st_mode & 0o7777, radix: 8)
            switch st.st_mode & S_IFMT {
            case S_IFDIR:
                lines.append("\(rel) dir \(mode)")
                walk(path, rel + "/")
            case S_IFLNK:
                let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? "?"
                lines.append("\(rel) link -> \(target)")
            default:
                let bytes = Array(FileManager.default.contents(atPath: path) ?? Data())
                lines.append("\(rel) file \(mode) \(st.st_size) \(SHA256.hash(bytes).hexString)")
            }
        }
    }
    walk(root, "")
    return lines
}
