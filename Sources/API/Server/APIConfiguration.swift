import Foundation

/// How the HTTP server behaves: where it listens, whom it lets in, how much it accepts.
public struct APIConfiguration: Sendable {
    /// The address to listen on; a loopback one unless there are tokens.
    public var host: String
    /// 0 picks a free port (tests).
    public var port: Int
    /// Bearer tokens; empty runs an open server, which is allowed on loopback only.
    public var tokens: TokenStore
    public var limits: APILimits
    /// Where `audit.log` is appended; nil keeps no audit log (router tests).
    public var dataDirectory: String?
    /// `GET /metrics` without a token from a loopback peer (a Prometheus on the same machine).
    /// Note that behind a reverse proxy on the same machine every peer is loopback.
    public var metricsOpenOnLoopback: Bool
    /// How long running jobs may finish when the server stops.
    public var shutdownGrace: Duration

    public init(
        host: String = "127.0.0.1", port: Int = 8080, tokens: TokenStore = TokenStore([]),
        limits: APILimits = APILimits(), dataDirectory: String? = nil, metricsOpenOnLoopback: Bool = true,
        shutdownGrace: Duration = .seconds(30)
    ) {
        self.host = host
        self.port = port
        self.tokens = tokens
        self.limits = limits
        self.dataDirectory = dataDirectory
        self.metricsOpenOnLoopback = metricsOpenOnLoopback
        self.shutdownGrace = shutdownGrace
    }

    /// Parses `HOST:PORT` (`[::1]:8080` for IPv6).
    public static func parseBind(_ bind: String) throws -> (host: String, port: Int) {
        guard let colon = bind.lastIndex(of: ":"), let port = Int(bind[bind.index(after: colon)...]),
            (0...65535).contains(port)
        else { throw ConfigurationError("--bind must be HOST:PORT, got \"\(bind)\"") }
        var host = String(bind[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw ConfigurationError("--bind must name a host, got \"\(bind)\"") }
        return (host, port)
    }

    /// Whether `host` is a loopback address (127.0.0.0/8, ::1, localhost).
    public static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    /// Refuses an open server anywhere but loopback: without tokens, anyone who can reach
    /// the port could run commands.
    public func validate() throws {
        if tokens.isEmpty && !Self.isLoopback(host) {
            throw ConfigurationError(
                "refusing to listen on \(host) without tokens: anyone who reaches it could run commands. Give --tokens FILE, or bind 127.0.0.1"
            )
        }
    }
}

/// Caps on what one request may ask for.
public struct APILimits: Sendable {
    /// JSON bodies (exec, tool calls, registration).
    public var maxJSONBytes: Int
    /// Archive uploads (held in memory while the host checks and stores them).
    public var maxArchiveBytes: Int
    /// Uploads at once, host-wide; more get 503.
    public var maxConcurrentUploads: Int
    /// How long `exec` and `bash` wait for a result before answering `running`.
    public var defaultWaitSeconds: Double
    /// The most any wait (exec's `wait_s`, a long-poll's `?wait=`) may ask for.
    public var maxWaitSeconds: Double
    /// Commands longer than this are refused (a command is not a file transfer).
    public var maxCommandBytes: Int
    /// Requests in flight at once, host-wide; more get 503.
    public var maxInFlight: Int
    /// A principal's budget unless its token says otherwise.
    public var defaultRate: RateLimit
    /// The budget of an open (tokenless, loopback-only) server's one caller: unlimited unless
    /// asked for (`corral serve --open-rate`), since a local harness running tools in
    /// parallel is that server's only user, not a tenant to keep from the others.
    public var openRate: RateLimit = .unlimited
    /// Messages in one MCP JSON-RPC batch; a longer batch is refused whole, unrun. Each
    /// message is charged to the caller's rate like a request of its own.
    public var maxBatchItems: Int
    /// Bytes of replies one MCP batch may build up; the messages after that are answered
    /// with an error and not run, so one request can never make the host hold more.
    public var maxBatchReplyBytes: Int
    /// Jobs one token may have queued or running at once, host-wide (cluster-wide in a
    /// cluster), unless its token says otherwise: one token cannot fill the shared queue.
    public var defaultMaxJobs: Int
    /// A request relayed to a project's port (`/ports/{port}/…`) whose connection moves no
    /// byte either way for this long is closed: 504 before the answer's head, a cut body
    /// after. Upgraded (WebSocket) relays have no idle limit.
    public var portIdleTimeout: Duration = .seconds(300)
    /// MCP sessions (`Mcp-Session-Id`) this server holds at once; an `initialize` beyond
    /// them is refused with 503 and `Retry-After` rather than ending another token's session.
    public var maxMCPSessions = 10_000
    /// MCP sessions one token holds at once; opening one more ends one of the token's own
    /// (one no request has named yet, else its least recently used), so a client that
    /// vanished without `DELETE` never locks its token out.
    public var maxMCPSessionsPerPrincipal = 256
    /// An MCP session no request names for this long, with none of its requests running,
    /// ends (its read-state, and whatever else it owns, with it).
    public var mcpSessionIdleTimeout: Duration = .seconds(3600)

    public init(
        maxJSONBytes: Int = 8 << 20, maxArchiveBytes: Int = 256 << 20, maxConcurrentUploads: Int = 4,
        defaultWaitSeconds: Double = 110,
        maxWaitSeconds: Double = 300, maxCommandBytes: Int = 256 << 10, maxInFlight: Int = 4096,
        defaultRate: RateLimit = RateLimit(perSecond: 50, burst: 100), maxBatchItems: Int = 32,
        maxBatchReplyBytes: Int = 16 << 20, defaultMaxJobs: Int = 100
    ) {
        self.maxBatchItems = maxBatchItems
        self.maxBatchReplyBytes = maxBatchReplyBytes
        self.defaultMaxJobs = defaultMaxJobs
        self.maxJSONBytes = maxJSONBytes
        self.maxArchiveBytes = maxArchiveBytes
        self.maxConcurrentUploads = maxConcurrentUploads
        self.defaultWaitSeconds = defaultWaitSeconds
        self.maxWaitSeconds = maxWaitSeconds
        self.maxCommandBytes = maxCommandBytes
        self.maxInFlight = maxInFlight
        self.defaultRate = defaultRate
    }
}

/// A configuration the server cannot start with.
public struct ConfigurationError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
