import Glibc
import Sandbox

/// The LLM file tools (read, write, edit, list, glob, grep, info) over one project
/// workspace, run by the host as root on files an adversarial job wrote.
///
/// Every path goes through ``WorkspacePath`` (lexical checks) and then `openat2` from a
/// descriptor of the workspace root with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS |
/// RESOLVE_NO_XDEV`: a symlink the job planted (say `etc -> /etc`) resolves inside the
/// workspace, never to a host file. Only regular files are read or written; FIFOs, sockets
/// and devices are reported, never opened for I/O. Writes are atomic (temporary file,
/// `fsync`, `renameat`) and everything created belongs to the sandbox's job user.
///
/// Symlinks resolve with the workspace as `/`: relative links work as in the sandbox, but an
/// absolute link such as `/workspace/src` points at `<root>/workspace/src`.
///
/// The descriptor of the root is held for the value's life: build a new `FileTools` when a
/// project's workspace is re-materialized.
public final class FileTools: Sendable {
    /// Size and time limits; the defaults suit a model's context window.
    public struct Limits: Sendable {
        /// Largest file read or edited whole; `read_file` pages through larger ones.
        public var maxFileBytes: Int64 = 10 * 1024 * 1024
        /// Characters kept of one line in `read_file`.
        public var maxLineCharacters = 2000
        /// Bytes of text one call returns at most.
        public var maxOutputBytes = 256 * 1024
        /// Files larger than this are not searched by `grep`.
        public var maxGrepFileBytes: Int64 = 4 * 1024 * 1024
        /// Characters of a line `grep` shows.
        public var maxGrepLineCharacters = 400
        /// Seconds one `grep` may run before it returns what it found.
        public var grepTimeBudget = 20.0
        /// Directory entries one walk (`list_dir`, `glob`, `grep`) visits at most.
        public var maxWalkEntries = 200_000

        /// The defaults above.
        public init() {}
    }

    let workspace: WorkspaceRoot
    let owner: FileOwner
    let ledger = ReadLedger()
    /// The limits in force.
    public let limits: Limits

    /// Opens the workspace at `root` (a host path). Files and directories the tools create
    /// are owned by `owner`: the sandbox's job user as the host sees it.
    public init(root: String, owner: (uid: UInt32, gid: UInt32), limits: Limits = Limits()) throws {
        workspace = try WorkspaceRoot(rootPath: root)
        self.owner = FileOwner(uid: owner.uid, gid: owner.gid)
        self.limits = limits
    }

    /// Runs a tool's body, turning system errors into model-facing ones.
    func run<T>(_ path: WorkspacePath, _ body: () throws -> T) throws(ToolError) -> T {
        do {
            return try body()
        } catch {
            throw workspace.toolError(error, path: path)
        }
    }

    // MARK: - read_file

    /// `read_file`: lines `offset ..< offset + limit` (1-based), numbered like `cat -n`.
    ///
    /// Without a range, files above ``Limits/maxFileBytes`` are refused (`file_too_large`);
    /// with one, they are paged through. Binary files (a NUL byte in the first 8 KiB) are
    /// refused. When `caller` is given, the version read is remembered for `stale_file`.
    public func readFile(_ path: String, offset: Int? = nil, limit: Int? = nil, caller: String? = nil)
        throws(ToolError) -> ReadFileResult
    {
        let target = try WorkspacePath(path)
        let start = offset ?? 1
        let count = limit ?? 2000
        guard start >= 1 else {
            throw .invalidRange(path: target.relative, detail: "offset must be 1 or more (lines are numbered from 1).")
        }
        guard count >= 1 else { throw .invalidRange(path: target.relative, detail: "limit must be 1 or more.") }
        return try run(target) {
            let (fd, status) = try workspace.openRegular(target)
            let small = Int64(status.st_size) <= limits.maxFileBytes
            guard small || offset != nil || limit != nil else {
                throw ToolError.fileTooLarge(
                    path: target.relative, size: Int64(status.st_size), limit: limits.maxFileBytes)
            }
            var reader = LineReader(
                start: start, count: count, lineLimit: limits.maxLineCharacters, outputLimit: limits.maxOutputBytes)
            let window = try reader.read(fd.raw, countAll: small)
            if window.binary { throw ToolError.binaryFile(path: target.relative, size: Int64(status.st_size)) }
            if let total = window.totalLines, start > max(total, 1) {
                throw ToolError.invalidRange(
                    path: target.relative,
                    detail: "offset \(start) is past the end of the file, which has \(Format.count(total)) lines.")
            }
            if let caller { ledger.record(caller, target, FileStamp(status)) }
            return Self.readResult(target, window, start: start)
        }
    }

    private static func readResult(_ path: WorkspacePath, _ window: LineWindow, start: Int)
        -> ReadFileResult
    {
        var text = ""
        text.reserveCapacity(window.lines.reduce(0) { $0 + $1.text.utf8.count + 8 })
        for (index, line) in window.lines.enumerated() {
            if index > 0 { text.append("\n") }
            Format.appendNumbered(line.number, line.text, to: &text)
        }
        let last = window.lines.last?.number ?? 0
        if window.lines.isEmpty { text = "(`\(Format.display(path.relative))` is empty)" }
        if let next = window.nextLine {
            let more = window.totalLines.map { Format.plural($0 - next + 1, "more line") } ?? "more lines follow"
            text += "\n... \(more); call read_file with offset=\(next)"
        }
        return ReadFileResult(
            path: path.relative, text: text, startLine: window.lines.isEmpty ? 0 : start, endLine: last,
            totalLines: window.totalLines, nextOffset: window.nextLine,
            truncatedLines: window.lines.filter(\.cut).map(\.number))
    }

    // MARK: - file_info

    /// `file_info`: type, size, permissions, modification time and, for text files up to
    /// the size cap, the line count. A symbolic link is described, not followed.
    public func fileInfo(_ path: String) throws(ToolError) -> FileInfoResult {
        let target = try WorkspacePath(path)
        return try run(target) {
            let fd = try workspace.open(target, openPathFlag | O_NOFOLLOW)
            let status = try WorkspaceRoot.status(fd.raw, target)
            let kind = FileKind(mode: status.st_mode)
            var linkTarget: String?
            var lines: Int?
            var binary: Bool?
            if kind == .symlink { linkTarget = WorkspaceRoot.linkTarget(fd.raw, "") }
            if kind == .file, Int64(status.st_size) <= limits.maxFileBytes {
                let (file, _) = try workspace.openRegular(target)
                var reader = LineReader(start: 1, count: 1, lineLimit: 1, outputLimit: 0)
                let window = try reader.read(file.raw, countAll: true)
                binary = window.binary
                lines = window.binary ? nil : window.totalLines
            }
            let modified = Double(status.st_mtim.tv_sec) + Double(status.st_mtim.tv_nsec) / 1e9
            let mode = "0" + String(status.st_mode & 0o7777, radix: 8)
            var text = "path: \(Format.display(target.relative))\ntype: \(kind.rawValue)\n"
            text += "size: \(Format.count(Int64(status.st_size))) bytes\nmode: \(mode)\n"
            text += "modified: \(Self.isoDate(status.st_mtim.tv_sec))"
            if let linkTarget { text += "\nlink target: \(Format.display(linkTarget))" }
            if let lines { text += "\nlines: \(Format.count(lines))" }
            if let binary { text += "\nbinary: \(binary ? "yes" : "no")" }
            return FileInfoResult(
                path: target.relative, text: text, kind: kind, size: Int64(status.st_size), mode: mode,
                modified: modified, lineCount: lines, isBinary: binary, linkTarget: linkTarget)
        }
    }

    /// `2024-05-01T12:00:00Z`, without pulling in Foundation for one date.
    static func isoDate(_ seconds: Int) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        let count = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%SZ", &parts)
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
