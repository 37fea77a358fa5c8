import Foundation
import Logging
import Synchronization

@testable import Host

/// A temporary policies directory, removed when the test ends.
final class PolicyDirectory: Sendable {
    let path: String

    init() throws {
        var template = Array("/tmp/corral-policies-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw CocoaError(.fileWriteUnknown) }
        path = String(cString: made)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func file(_ name: String) -> String { path + "/" + name + ".toml" }

    /// Writes in place (open, truncate, write), like a careless editor.
    func write(_ name: String, _ text: String) throws {
        try text.write(toFile: file(name), atomically: false, encoding: .utf8)
    }

    /// Writes a temporary file and renames it over the target, like a careful editor.
    func replace(_ name: String, _ text: String) throws {
        let temporary = path + "/." + name + ".tmp"
        try text.write(toFile: temporary, atomically: false, encoding: .utf8)
        guard rename(temporary, file(name)) == 0 else { throw CocoaError(.fileWriteUnknown) }
    }

    func remove(_ name: String) throws { try FileManager.default.removeItem(atPath: file(name)) }

    /// Each error of loading `name`, with this directory's path cut from the messages.
    func errors(loading name: String) -> [String] {
        do {
            _ = try PolicyLoader(directory: path).load(named: name)
            return []
        } catch {
            return error.errors.map { $0.description.replacingOccurrences(of: path + "/", with: "") }
        }
    }
}

/// Loads one policy from text, as `name.toml` in a fresh directory (with `others` beside it).
func loadPolicy(_ text: String, name: String = "p", others: [String: String] = [:]) throws -> Policy {
    let directory = try PolicyDirectory()
    try directory.write(name, text)
    for (other, body) in others { try directory.write(other, body) }
    return try PolicyLoader(directory: directory.path).load(named: name)
}

/// The errors of loading `text` as `p.toml`, paths relative to its directory.
func policyErrors(_ text: String, name: String = "p", others: [String: String] = [:]) throws -> [String] {
    let directory = try PolicyDirectory()
    try directory.write(name, text)
    for (other, body) in others { try directory.write(other, body) }
    return directory.errors(loading: name)
}

/// A log handler that keeps every message with its metadata, for asserting what was logged.
struct CapturingLogHandler: LogHandler {
    final class Box: Sendable {
        let entries = Mutex<[(level: Logger.Level, message: String, metadata: [String: String])]>([])

        var all: [(level: Logger.Level, message: String, metadata: [String: String])] { entries.withLock { $0 } }
    }

    let box: Box
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let flat = (event.metadata ?? [:]).mapValues { "\($0)" }
        box.entries.withLock { $0.append((event.level, "\(event.message)", flat)) }
    }

    static func logger() -> (Logger, Box) {
        let box = Box()
        return (Logger(label: "test.policy") { _ in CapturingLogHandler(box: box) }, box)
    }
}
