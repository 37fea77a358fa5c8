import Host
import Hummingbird
import Logging
import NIOCore

/// Per-request state: who is calling (set by the auth middleware) and the request id.
public struct APIContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Nil until authenticated, and on public endpoints called without a token.
    public var principal: Principal?
    public var requestID = ""
    /// Whose rate this request is charged to, set by the rate-limit middleware: usually the
    /// principal, and on a worker the agent an API node forwards for.
    var rateSubject: RateSubject?
    /// Whether the peer is on this machine (127.0.0.0/8 or ::1).
    public let peerIsLoopback: Bool
    /// Set on a connection's upgrade request (``UpgradingHTTP1Channel``): a route that
    /// accepts the upgrade leaves its upstream here and answers 101.
    var upgrade: UpgradeSlot?

    /// Notes whether the peer is loopback, for the tokenless `GET /metrics`.
    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        let peer = source.channel.remoteAddress?.ipAddress ?? ""
        peerIsLoopback = APIConfiguration.isLoopback(peer) || peer == "::ffff:127.0.0.1"
    }

    /// Requests decode their own bodies with caps of their own (see ``APILimits``).
    public var maxUploadSize: Int { 8 << 20 }

    /// The caller's name as sessions and the audit know it: the token's, or on a worker the
    /// agent an API node forwarded for.
    var callerName: String { rateSubject?.name ?? principal?.name ?? "" }

    /// The caller, who must be authenticated.
    func caller() throws(APIError) -> Principal {
        guard let principal else { throw .unauthorized }
        return principal
    }

    /// The caller, who must be allowed to touch `project`.
    func authorize(project: String) throws(APIError) -> Principal {
        let principal = try caller()
        guard principal.may(project: project) else {
            throw .forbidden("token \"\(principal.name)\" may not use project \"\(project)\"")
        }
        return principal
    }

    /// Refuses a registration or upload under a policy the caller may not use: `policy`,
    /// or the host's default when the request names none. Checked before anything is read
    /// or written, so a refused call changes nothing.
    func authorize(policy: String?, defaultPolicy: String) throws(APIError) {
        let principal = try caller()
        let name = policy ?? defaultPolicy
        guard !principal.may(policy: name, defaultPolicy: defaultPolicy) else { return }
        let usable = principal.usablePolicies(defaultPolicy: defaultPolicy)
        let asked =
            policy == nil
            ? "the host's default policy \"\(name)\", which a project naming no policy gets" : "policy \"\(name)\""
        let allowed =
            usable.isEmpty
            ? "it may use no policy, so it may not register or upload projects"
            : "the policies it may use: \(usable.joined(separator: ", "))"
        throw .forbidden("token \"\(principal.name)\" may not use \(asked); \(allowed)")
    }

    func requireAdmin() throws(APIError) -> Principal {
        let principal = try caller()
        guard principal.admin else { throw .forbidden("this endpoint needs an admin token") }
        return principal
    }

    /// The `{id}` path parameter, checked against the host's project id rule.
    func projectID() throws(APIError) -> String {
        guard let id = parameters.get("id") else { throw .notFound("no project in the path") }
        guard ProjectID.isValid(id) else {
            throw APIError(
                .badRequest, "invalid_project", "invalid project id \"\(id)\": use 1-128 of A-Z a-z 0-9 . _ -")
        }
        return id
    }
}
