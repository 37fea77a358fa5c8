import Glibc

/// The signal a cancel sends a job's whole tree first. Whatever it is, anything still running
/// after the job's kill grace gets SIGKILL; `kill` skips the grace.
public enum JobSignal: String, Sendable, CaseIterable, Codable {
    case term = "TERM"
    case int = "INT"
    case hup = "HUP"
    case quit = "QUIT"
    case kill = "KILL"

    /// The signal's number.
    public var number: Int32 {
        switch self {
        case .term: SIGTERM
        case .int: SIGINT
        case .hup: SIGHUP
        case .quit: SIGQUIT
        case .kill: SIGKILL
        }
    }

    /// A name as a person or a model writes it: `INT`, `int`, `SIGINT`; nil for any other.
    public init?(name: String) {
        var name = name.uppercased()
        if name.hasPrefix("SIG") { name.removeFirst(3) }
        self.init(rawValue: name)
    }

    /// The accepted names, for error messages: `TERM, INT, HUP, QUIT, KILL`.
    public static var names: String { allCases.map(\.rawValue).joined(separator: ", ") }
}
