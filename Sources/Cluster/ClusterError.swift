/// Why a cluster operation failed. Each case maps to one HTTP status, so the API can answer
/// `503 Retry-After` for an outage instead of a generic 500.
public enum ClusterError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Redis cannot be reached (down, restarting, loading its data). Nothing was changed
    /// that the caller cannot safely retry; retry after the hint.
    case redisUnavailable(retryAfterSeconds: Int)
    /// No worker host is alive to own the project. Retry after the hint.
    case noLiveWorkers(retryAfterSeconds: Int)
    /// Redis answered with an error the cluster code did not expect (a bug or a
    /// misconfigured server, e.g. a wrong password).
    case server(String)
    /// A reply had a shape the code did not expect.
    case protocolViolation(String)
    /// The Redis URL could not be understood.
    case invalidURL(String)
    /// The TLS connection to Redis failed: its certificate did not verify (wrong CA, wrong
    /// name, expired) or the handshake failed. A configuration problem, not retried.
    case tls(String)
    /// A cluster setting cannot work (e.g. a host name with a space).
    case invalidConfiguration(String)
    /// The client or worker was closed.
    case closed
    /// The job was claimed by another host or ended before this host could start it.
    case claimLost(String)
    /// A project's owner could not be reached over HTTP (it is stopping, or just died and
    /// its lease has not lapsed yet). Retry after the hint.
    case workerUnreachable(String)

    /// The HTTP status the API answers with.
    public var httpStatus: Int {
        switch self {
        case .redisUnavailable, .noLiveWorkers, .closed, .workerUnreachable: 503
        case .invalidURL, .tls, .server, .protocolViolation, .invalidConfiguration: 500
        case .claimLost: 409
        }
    }

    /// The `Retry-After` header value, when the failure is transient.
    public var retryAfterSeconds: Int? {
        switch self {
        case .redisUnavailable(let after), .noLiveWorkers(let after): after
        case .closed, .workerUnreachable: 1
        default: nil
        }
    }

    public var description: String {
        switch self {
        case .redisUnavailable(let after): "redis is unavailable; retry after \(after) s"
        case .noLiveWorkers(let after): "no worker host is alive; retry after \(after) s"
        case .server(let message): "redis: \(message)"
        case .protocolViolation(let what): "unexpected redis reply: \(what)"
        case .invalidURL(let why): "invalid redis URL: \(why)"
        case .tls(let why): "redis TLS: \(why)"
        case .invalidConfiguration(let why): "invalid cluster configuration: \(why)"
        case .closed: "the redis connection was closed"
        case .claimLost(let id): "job \(id) was claimed elsewhere or ended before it started here"
        case .workerUnreachable(let what): "the project's worker host cannot be reached: \(what)"
        }
    }
}
