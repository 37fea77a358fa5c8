import Foundation

/// One problem in a policy file, pointing at the line and key to fix.
///
/// Reads `policies/ci.toml:7: limits.memory: "1GB" is not a size (hint: use a whole number
/// with B, KiB, MiB, GiB or TiB, e.g. "2GiB")`.
public struct PolicyError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The file as it was named to the loader.
    public let file: String
    /// 1-based line; 0 when the problem is the file as a whole (unreadable, missing).
    public let line: Int
    /// The dotted key, e.g. `limits.memory` or `seccomp.rule[2].syscalls`; `-` when none.
    public let key: String
    public let message: String
    /// What to do about it.
    public let hint: String

    public init(file: String, line: Int, key: String, message: String, hint: String) {
        self.file = file
        self.line = line
        self.key = key.isEmpty ? "-" : key
        self.message = message
        self.hint = hint
    }

    public var description: String { "\(file):\(line): \(key): \(message) (hint: \(hint))" }

    /// The same problem with `prefix` (a directory, ending in `/`) taken off the file names
    /// in it (a hint may name the file an `extends` points at), so an API caller learns which
    /// file to fix but not where the host keeps it.
    func relative(to prefix: String) -> PolicyError {
        func strip(_ text: String) -> String { text.replacingOccurrences(of: prefix, with: "") }
        let file = self.file.hasPrefix(prefix) ? String(self.file.dropFirst(prefix.count)) : self.file
        return PolicyError(file: file, line: line, key: key, message: strip(message), hint: strip(hint))
    }
}

/// Every problem found while loading one policy; a policy with any never takes effect.
public struct PolicyErrors: Error, Sendable, Hashable, CustomStringConvertible {
    public let errors: [PolicyError]

    public init(_ errors: [PolicyError]) { self.errors = errors }

    public var description: String { errors.map(\.description).joined(separator: "\n") }

    /// The first `limit` problems on one line, and how many more there are: enough for a
    /// refusal to say where to look (`corral policy check` lists them all).
    public func summary(limit: Int = 3) -> String {
        let shown = errors.prefix(limit).map(\.description).joined(separator: "; ")
        let more = errors.count - limit
        return more > 0 ? "\(shown); and \(more) more (corral policy check lists them all)" : shown
    }
}

/// Where a setting was written, so a problem found only after merging files (a default
/// timeout above an inherited maximum) still points at a line.
struct Origin: Sendable, Hashable {
    var file: String
    var line: Int
    var key: String

    func error(_ message: String, hint: String) -> PolicyError {
        PolicyError(file: file, line: line, key: key, message: message, hint: hint)
    }
}

/// A value from a policy file and where it was written.
struct Setting<Value: Sendable & Hashable>: Sendable, Hashable {
    var value: Value
    var origin: Origin
}

/// Collects errors while one file is decoded, so an admin sees them all at once.
final class Diagnostics {
    let file: String
    private(set) var errors: [PolicyError] = []

    init(file: String) { self.file = file }

    func report(line: Int, key: String, _ message: String, hint: String) {
        errors.append(PolicyError(file: file, line: line, key: key, message: message, hint: hint))
    }

    func report(_ error: PolicyError) { errors.append(error) }

    func origin(line: Int, key: String) -> Origin { Origin(file: file, line: line, key: key) }
}

/// The closest candidate within a small edit distance, for "did you mean" hints.
func closest(to word: String, in candidates: [String]) -> String? {
    let limit = max(1, word.count / 3)
    var best: (String, Int)?
    for candidate in candidates {
        let distance = editDistance(word.lowercased(), candidate.lowercased())
        if distance <= limit, distance < (best?.1 ?? Int.max) { best = (candidate, distance) }
    }
    return best?.0
}

func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a)
    let b = Array(b)
    if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
    var previous = Array(0...b.count)
    for i in 1...a.count {
        var current = [i] + Array(repeating: 0, count: b.count)
        for j in 1...b.count {
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        previous = current
    }
    return previous[b.count]
}
