import Foundation
import Host

/// How a call an API node forwards to a worker says whom it is for. The API's rate-limit
/// middleware sets ``callerHeaders`` for the request's task; ``ClusterBackend`` sends them
/// with every forwarded call; a worker believes them only from the worker token.
public enum Forwarding {
    /// The agent's name and rate as headers (`X-Corral-On-Behalf-Of`, `X-Corral-Caller-Rate`),
    /// for the calls made on this task.
    @TaskLocal public static var callerHeaders: [(String, String)] = []

    /// The file-tool session of a forwarded file call, so `stale_file` follows the session
    /// whichever node the call entered.
    public static let callerHeader = "X-Corral-Caller"

    /// Percent-encodes everything but unreserved characters, for a query value or a header
    /// that may hold any character.
    public static func escape(_ value: String) -> String {
        value.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(.init(charactersIn: "-._~"))) ?? value
    }
}

/// A worker's refusal of a forwarded call, passed on unchanged: the API answers the same
/// status, code, message and Retry-After as the owner did.
public struct WorkerRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    public var status: Int
    public var code: String
    public var message: String
    public var retryAfter: Int?

    public init(status: Int, code: String, message: String, retryAfter: Int? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.retryAfter = retryAfter
    }

    public var description: String { "\(status) \(code): \(message)" }
}
