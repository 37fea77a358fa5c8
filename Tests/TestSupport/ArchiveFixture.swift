import Foundation

/// Builds test archives, hostile ones included, with Python's `tarfile`/`zipfile` (which
/// write exactly what they are told: `../` names, absolute paths, device nodes, setuid
/// bits) and the `zstd` tool.
public enum ArchiveFixture {
    /// One archive entry.
    public struct Entry: Sendable {
        public enum Kind: String, Sendable { case file, dir, symlink, hardlink, chr, blk, fifo }
        public var name: String
        public var kind: Kind
        public var text: String?
        /// A file of this many zero bytes (zip bombs, size caps) instead of `text`.
        public var zeros: Int?
        public var mode: Int?
        public var link: String?

        public static func file(_ name: String, _ text: String, mode: Int = 0o644) -> Entry {
            Entry(name: name, kind: .file, text: text, mode: mode)
        }
        public static func zeros(_ name: String, _ count: Int) -> Entry {
            Entry(name: name, kind: .file, zeros: count, mode: 0o644)
        }
        public static func dir(_ name: String, mode: Int = 0o755) -> Entry { Entry(name: name, kind: .dir, mode: mode) }
        public static func symlink(_ name: String, to target: String) -> Entry {
            Entry(name: name, kind: .symlink, link: target)
        }
        public static func hardlink(_ name: String, to target: String) -> Entry {
            Entry(name: name, kind: .hardlink, link: target)
        }
        public static func device(_ name: String, block: Bool = false) -> Entry {
            Entry(name: name, kind: block ? .blk : .chr, mode: 0o666)
        }
        public static func fifo(_ name: String) -> Entry { Entry(name: name, kind: .fifo, mode: 0o644) }

        public init(
            name: String, kind: Kind, text: String? = nil, zeros: Int? = nil, mode: Int? = nil, link: String? = nil
        ) {
            self.name = name
            self.kind = kind
            self.text = text
            self.zeros = zeros
            self.mode = mode
            self.link = link
        }
    }

    public enum Format: String, Sendable, CaseIterable {
        case tar, tarGz = "tar.gz", tarXz = "tar.xz", tarBz2 = "tar.bz2", tarZst = "tar.zst", zip
    }

    /// A tar.gz of plain `files` (relative path → text), made by bsdtar: what a user would
    /// upload as a project.
    public static func tarGz(_ files: [String: String]) throws -> [UInt8] {
        let dir = try TemporaryDirectory()
        for (path, text) in files {
            let url = dir.url.appendingPathComponent(path)
            try FileManager.default.createDirectory(
                at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: url, atomically: false, encoding: .utf8)
        }
        let out = dir.path + ".tar.gz"
        let tar = Process()
        tar.executableURL = URL(fileURLWithPath: "/usr/bin/bsdtar")
        tar.arguments = ["-czf", out, "-C", dir.path, "."]
        try tar.run()
        tar.waitUntilExit()
        defer { unlink(out) }
        guard tar.terminationStatus == 0 else { throw TestSupportError("bsdtar failed to pack \(dir.path)") }
        return Array(try Data(contentsOf: URL(fileURLWithPath: out)))
    }

    /// Writes `entries` as an archive of `format` at `path`.
    public static func write(_ entries: [Entry], format: Format, to path: String) throws {
        let spec: [[String: Any]] = entries.map { e in
            var d: [String: Any] = ["name": e.name, "kind": e.kind.rawValue]
            if let t = e.text { d["text"] = t }
            if let z = e.zeros { d["zeros"] = z }
            if let m = e.mode { d["mode"] = m }
            if let l = e.link { d["link"] = l }
            return d
        }
        let json = try JSONSerialization.data(withJSONObject: spec)
        try PythonProcess.run(script, [format.rawValue, path], stdin: json)
    }

    static let script = #"""
        import io, json, subprocess, sys, tarfile, zipfile
        fmt, out = sys.argv[1], sys.argv[2]
        entries = json.load(sys.stdin)
        def data(e):
            if "zeros" in e: return b"\0" * e["zeros"]
            return e.get("text", "").encode()
        if fmt == "zip":
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
                for e in entries:
                    info = zipfile.ZipInfo(e["name"], date_time=(2024, 1, 2, 3, 4, 6))
                    info.create_system = 3
                    info.compress_type = zipfile.ZIP_DEFLATED
                    k = e["kind"]
                    if k == "dir":
                        info.external_attr = ((0o040000 | e.get("mode", 0o755)) << 16) | 0x10
                        z.writestr(info, b"")
                    elif k == "symlink":
                        info.external_attr = (0o120777 << 16)
                        z.writestr(info, e["link"].encode())
                    else:
                        info.external_attr = ((0o100000 | e.get("mode", 0o644)) << 16)
                        z.writestr(info, data(e))
            sys.exit(0)
        mode = {"tar": "w", "tar.gz": "w:gz", "tar.xz": "w:xz", "tar.bz2": "w:bz2", "tar.zst": "w"}[fmt]
        target = out + ".plain" if fmt == "tar.zst" else out
        kinds = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                 "hardlink": tarfile.LNKTYPE, "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}
        with tarfile.open(target, mode, format=tarfile.PAX_FORMAT) as t:
            for e in entries:
                info = tarfile.TarInfo(e["name"])
                info.type = kinds[e["kind"]]
                info.mode = e.get("mode", 0o777 if e["kind"] == "symlink" else 0o644)
                info.mtime = 1700000000
                info.linkname = e.get("link", "")
                if e["kind"] in ("chr", "blk"): info.devmajor, info.devminor = 1, 3
                payload = data(e) if e["kind"] == "file" else b""
                info.size = len(payload)
                t.addfile(info, io.BytesIO(payload) if payload else None)
        if fmt == "tar.zst":
            subprocess.run(["zstd", "-q", "-f", "--rm", target, "-o", out], check=True)
        """#
}
