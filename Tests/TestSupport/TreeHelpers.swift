import Foundation
import Glibc

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
