import Foundation

/// What the host remembers of one run of a project's setup: for which key it ran, how it
/// ended and the end of what it printed. Kept with the workspace it prepared (the cache
/// index, and beside the write-back snapshot in the primary store), so a workspace restored
/// anywhere knows whether its setup already ran (docs/ENVIRONMENTS.md, "Setup").
public struct SetupRecord: Sendable, Codable, Equatable {
    public enum Status: String, Sendable, Codable {
        /// Started and not ended: on a workspace restored or adopted after a restart, the
        /// run it describes was cut short, so setup runs again.
        case running
        /// Every command exited 0.
        case succeeded
        /// A command exited non-zero, timed out, was killed or could not start; jobs are
        /// refused until the commands or the files change, or setup is run again.
        case failed
    }

    public var status: Status
    /// ``SetupKey`` of the files, commands and image it ran for.
    public var key: String
    public var startedAt: Date
    public var durationMs: Int?
    /// The exit code of the last command that ran (124 for a timeout, 128 + n for a signal).
    public var exitCode: Int32?
    /// 1-based: which command failed.
    public var failedCommand: Int?
    /// Why it failed beyond its exit code: a timeout, an OOM kill, a command that could not
    /// start.
    public var error: String?
    /// The last ``SetupRecord/tailBytes`` of the commands' stdout and stderr, interleaved as
    /// produced, each command's output after a `$ command` line.
    public var outputTail: String

    /// How much of the output a record keeps.
    public static let tailBytes = 4096

    public init(
        status: Status, key: String, startedAt: Date, durationMs: Int? = nil, exitCode: Int32? = nil,
        failedCommand: Int? = nil, error: String? = nil, outputTail: String = ""
    ) {
        self.status = status
        self.key = key
        self.startedAt = startedAt
        self.durationMs = durationMs
        self.exitCode = exitCode
        self.failedCommand = failedCommand
        self.error = error
        self.outputTail = outputTail
    }

    enum CodingKeys: String, CodingKey {
        case status, key, error
        case startedAt = "started_at"
        case durationMs = "duration_ms"
        case exitCode = "exit_code"
        case failedCommand = "failed_command"
        case outputTail = "output_tail"
    }
}

/// What identifies a file set prepared by a set of commands: the SHA-256 of the source the
/// workspace descends from (the uploaded archive's or the registered source's version,
/// never a write-back snapshot's), the commands and the rootfs image they ran in. Setup
/// runs again when any of the three changes, and never otherwise.
public enum SetupKey {
    public static func of(baseVersion: String, commands: [String], rootfs: String) -> String {
        // NUL separates the parts: none of them can hold one (commands are checked).
        let text = (["corral-setup-1", baseVersion, rootfs] + commands).joined(separator: "\0")
        return "sha256:" + SHA256.hex(text)
    }
}

/// The rules for a project's setup commands, checked wherever they come in (a
/// registration's `setup`, an upload's query, `PUT …/setup`).
public enum SetupCommands {
    /// The most commands a project may carry.
    public static let maxCount = 32
    /// The most bytes of one command.
    public static let maxBytes = 16 << 10

    /// Nil when `commands` may be a project's setup, else what is wrong, in words a caller
    /// can act on.
    public static func problem(_ commands: [String]) -> String? {
        if commands.count > maxCount { return "may hold at most \(maxCount) commands, got \(commands.count)" }
        for (index, command) in commands.enumerated() {
            if command.allSatisfy(\.isWhitespace) { return "[\(index)] is empty; give each command as a string" }
            if command.utf8.count > maxBytes { return "[\(index)] is longer than \(maxBytes) bytes" }
            if command.utf8.contains(0) { return "[\(index)] contains a NUL byte" }
        }
        return nil
    }
}
