import Foundation
import Host

/// Where Redis is and how to talk to it, usually parsed from a URL:
/// `redis://[[user]:password@]host[:port][/db][?connect_timeout=2&timeout=5]`, or
/// `rediss://…[?cacert=FILE&cert=FILE&key=FILE]` for TLS.
public struct RedisConfiguration: Sendable, Equatable {
    public var host: String
    public var port: Int
    /// ACL user name (Redis 6+); nil sends the one-argument `AUTH password`.
    public var username: String?
    public var password: String?
    public var database: Int
    public var connectTimeout: Duration
    /// How long one non-blocking command may take before the connection counts as broken.
    public var commandTimeout: Duration
    /// TLS settings for `rediss://`; nil: plain TCP.
    public var tls: RedisTLS?
    /// The longest wait between reconnect attempts while Redis is down (0.5 s: service
    /// resumes within that of Redis coming back, well inside a submit's 2 s retry window).
    public var maxBackoff: Duration

    public init(
        host: String = "127.0.0.1", port: Int = 6379, username: String? = nil, password: String? = nil,
        database: Int = 0, connectTimeout: Duration = .seconds(2), commandTimeout: Duration = .seconds(5),
        maxBackoff: Duration = .milliseconds(500)
    ) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.maxBackoff = maxBackoff
    }

    /// Parses a `redis://` or `rediss://` URL. With `rediss://` the server's certificate
    /// must verify against `cacert` (default: the system's CAs) and carry the URL's host;
    /// `cert` and `key` name a client certificate. TLS options on `redis://` are refused:
    /// they would be ignored and the password sent in the clear.
    public init(url: String) throws(ClusterError) {
        guard let parts = URLComponents(string: url), let scheme = parts.scheme?.lowercased() else {
            throw .invalidURL("cannot parse \(Self.redacted(url))")
        }
        guard scheme == "redis" || scheme == "rediss" else {
            throw .invalidURL("scheme must be redis:// or rediss://, not \(scheme)://")
        }
        guard let host = parts.host, !host.isEmpty else { throw .invalidURL("no host in \(Self.redacted(url))") }
        self.init(host: host, port: parts.port ?? 6379)
        if scheme == "rediss" { tls = RedisTLS() }
        if let user = parts.user, !user.isEmpty { username = user }
        password = parts.password
        let path = parts.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        if !path.isEmpty {
            guard let db = Int(path), db >= 0 else { throw .invalidURL("database must be a number, not \(path)") }
            database = db
        }
        for item in parts.queryItems ?? [] where ["cacert", "cert", "key"].contains(item.name) {
            guard tls != nil else { throw .invalidURL("\(item.name) needs rediss://") }
            guard let file = item.value, !file.isEmpty else { throw .invalidURL("\(item.name) needs a file") }
            switch item.name {
            case "cacert": tls?.caFile = file
            case "cert": tls?.certFile = file
            default: tls?.keyFile = file
            }
        }
        if tls?.keyFile != nil && tls?.certFile == nil { throw .invalidURL("key needs cert") }
        for item in parts.queryItems ?? [] where !["cacert", "cert", "key"].contains(item.name) {
            guard let value = item.value.flatMap(Double.init), value > 0 else {
                throw .invalidURL("\(item.name) must be a positive number of seconds")
            }
            switch item.name {
            case "connect_timeout": connectTimeout = .milliseconds(Int(value * 1000))
            case "timeout": commandTimeout = .milliseconds(Int(value * 1000))
            case "max_backoff": maxBackoff = .milliseconds(Int(value * 1000))
            default: throw .invalidURL("unknown option \(item.name)")
            }
        }
    }

    /// The URL with its password replaced, for logs and errors.
    static func redacted(_ url: String) -> String {
        guard var parts = URLComponents(string: url), parts.password != nil else { return url }
        parts.password = "***"
        return parts.string ?? "redis://***"
    }
}
