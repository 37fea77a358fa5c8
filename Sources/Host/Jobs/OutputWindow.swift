import Sandbox

/// How much of a command's output one answer carries, and the words that tell a model what
/// an answer left out and how to read it: a model must always know what it is not seeing.
public enum OutputWindow {
    /// Bytes of output one field of an answer holds at most: the interleaved `output` a job
    /// or a session run keeps in memory (``JobChannel``), and each of `stdout` and `stderr`.
    public static let bytes = 1 << 20

    /// Where the output an answer leaves out can be read.
    public enum Source: Sendable, Equatable {
        /// A file in the sandbox that holds all of it (``JobLog``).
        case log(String)
        /// The file a running job is writing all of it to; nil when its name is not known
        /// here (a cluster's API node), only that it is in the job's workspace.
        case writing(String?)
        /// Nowhere: the host did not keep it.
        case nowhere
    }

    /// `text`, one stream as a result keeps it (`omitted` bytes already cut from its
    /// middle, by the policy's output cap, with ``OutputCapture/marker(omitted:logPath:)``
    /// naming `logPath`), cut to at most `limit` bytes: its first and last `limit / 2`, with
    /// a marker line between that counts every byte left out. Returns the text and that
    /// count (`omitted` when nothing more was cut).
    public static func clip(_ text: String, omitted: Int, logPath: String?, limit: Int = bytes)
        -> (text: String, omitted: Int)
    {
        let utf8 = Array(text.utf8)
        let marker = omitted > 0 ? OutputCapture.marker(omitted: omitted, logPath: logPath).utf8.count : 0
        // A text over the limit by more than a marker was kept under a cap above the limit,
        // so the cap's own cut, in the middle, lies inside what this cut drops.
        guard utf8.count > limit + max(marker, 256) else { return (text, omitted) }
        // Cut on character boundaries (a continuation byte is 10xxxxxx).
        var headEnd = limit / 2
        while headEnd > 0 && utf8[headEnd] & 0xC0 == 0x80 { headEnd -= 1 }
        var tailStart = utf8.count - (limit - limit / 2)
        while tailStart < utf8.count && utf8[tailStart] & 0xC0 == 0x80 { tailStart += 1 }
        let left = omitted + (tailStart - headEnd - marker)
        let clipped =
            String(decoding: utf8[..<headEnd], as: UTF8.self) + OutputCapture.marker(omitted: left, logPath: logPath)
            + String(decoding: utf8[tailStart...], as: UTF8.self)
        return (clipped, left)
    }

    /// What a model reads first when an answer's `output` leaves out `skipped` bytes of
    /// what it asked for: how many, on which side, and how to read them. `shown` bytes are
    /// in the answer, `total` were printed in all (so far); `follow` says the left-out bytes
    /// come after the shown ones (a cluster keeps a job's first bytes) rather than before.
    public static func note(shown: Int, skipped: Int, total: Int, follow: Bool, source: Source) -> String {
        let part =
            follow
            ? "\(skipped) bytes of output after this point are left out; this shows \(shown) of \(total) bytes."
            : "\(skipped) bytes of output before this point are left out; this shows the last \(shown) of \(total) bytes."
        switch source {
        case .log(let path):
            let nearby =
                follow
                ? "tail -c +\(total - skipped + 1) \(path) | head -n 50"
                : "head -c \(total - shown) \(path) | tail -n 50"
            return part
                + " All of it is in \(path): read it with read_file (offset and limit count lines) or search it with grep; `\(nearby)` prints the 50 lines \(follow ? "after" : "before") this."
        case .writing(let path):
            return part + " " + writing(path)
                + ": read it there with read_file (offset and limit count lines) or search it with grep."
        case .nowhere:
            return part + " " + notKept
        }
    }

    /// What a model reads when `stdout` and `stderr` leave out bytes (each holds at most
    /// the first and last half of ``bytes`` of its stream); nil when neither does.
    public static func fieldsNote(stdout: Int, stderr: Int, source: Source?) -> String? {
        let cut =
            switch (stdout > 0, stderr > 0) {
            case (true, true):
                "`stdout` and `stderr` leave out \(stdout) and \(stderr) bytes from the middle of their streams"
            case (true, false): "`stdout` leaves out \(stdout) bytes from the middle of the stream"
            case (false, true): "`stderr` leaves out \(stderr) bytes from the middle of the stream"
            case (false, false): nil as String?
            }
        guard let cut else { return nil }
        var note =
            cut
            + " (each field holds at most the first and last \(bytes / 2 / 1024) KiB of its stream, or less under a smaller output cap of the project's policy)."
        switch source {
        case .log(let path): note += " All of the output is in \(path)."
        case .writing(let path): note += " " + writing(path) + "."
        case .nowhere: note += " " + notKept
        case nil: break
        }
        return note
    }

    private static func writing(_ path: String?) -> String {
        path.map { "The job is writing all of it to \($0)" }
            ?? "The job is writing all of it to its log in /workspace/.corral/logs (log_path names it once the job ends)"
    }

    /// The advice when the host did not keep what an answer left out.
    static let notKept =
        "The host did not keep them: to read a long output whole, run the command again with its output sent to a file in the workspace (command > /workspace/out.log 2>&1) and read that with read_file or grep."
}

/// Where a job's whole output goes once it passes ``OutputWindow/bytes``: a file in the
/// workspace (the newest 32 are kept), so a model reads what an answer left out with its
/// file tools.
public enum JobLog {
    /// The log of job `id`, relative to the workspace.
    public static func path(_ id: String) -> String { ".corral/logs/\(id).log" }

    /// The log of job `id` as the sandbox sees it.
    public static func sandboxPath(_ id: String) -> String { "/workspace/" + path(id) }
}
