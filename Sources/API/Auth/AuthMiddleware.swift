import Cluster
import Foundation
import HTTPTypes
import Hummingbird

/// Finds the caller from `Authorization: Bearer …`. Only liveness (`GET /health`, `GET /`)
/// and, from a loopback peer, `GET /metrics` are served without a token; which projects a
/// caller may touch is checked by each handler (compatibility calls name the project in
/// the body).
struct AuthMiddleware: RouterMiddleware {
    typealias Context = APIContext
    let tokens: TokenStore
    let metricsOpenOnLoopback: Bool
    /// The rate of an open server's `anonymous` caller (``APILimits/openRate``).
    let openRate: RateLimit

    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response)
        async throws -> Response
    {
        var context = context
        if tokens.isEmpty {
            var anonymous = Principal.anonymous
            anonymous.rate = openRate
            context.principal = anonymous
        } else if let presented = Self.bearer(request.headers[.authorization]),
            let principal = tokens.authenticate(presented)
        {
            context.principal = principal
        } else if !isPublic(request, context) {
            var error = APIError.unauthorized
            error.headers[.wwwAuthenticate] = "Bearer"
            throw error
        }
        if let principal = context.principal {
            context.logger[metadataKey: "principal"] = .string(principal.name)
        }
        return try await next(request, context)
    }

    func isPublic(_ request: Request, _ context: APIContext) -> Bool {
        let path = request.uri.path
        guard request.method == .get || request.method == .head else { return false }
        if path == "/" || path == "/health" { return true }
        return path == "/metrics" && metricsOpenOnLoopback && context.peerIsLoopback
    }

    static func bearer(_ header: String?) -> String? {
        guard let header else { return nil }
        let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        let token = parts[1].trimmingCharacters(in: .whitespaces)
        return token.isEmpty ? nil : token
    }
}

/// Per-principal token buckets: `X-RateLimit-Limit/Remaining/Reset` on every answer, 429
/// with `Retry-After` once the bucket is empty.
///
/// A call an API node of a cluster forwards to a worker comes with the worker token, and
/// names the agent it is for (``ForwardedCaller``): the worker charges that agent's own
/// bucket, at the agent's own rate, so one tenant's load never spends the budget every
/// other tenant's forwarded calls share.
struct RateLimitMiddleware: RouterMiddleware {
    typealias Context = APIContext
    let limiter: RateLimiter
    let defaultRate: RateLimit
    let metrics: APIMetrics

    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response)
        async throws -> Response
    {
        guard let principal = context.principal else { return try await next(request, context) }
        var context = context
        let subject = RateSubject(principal: principal, request: request, defaultRate: defaultRate)
        context.rateSubject = subject
        // An API node forwards for this principal: a worker charges it, not the worker token.
        let forwarded = ForwardedCaller(name: subject.name, rate: subject.limit).headers
        func proceed() async throws -> Response {
            try await Forwarding.$callerHeaders.withValue(forwarded) { try await next(request, context) }
        }
        guard let decision = limiter.take(subject.key, limit: subject.limit) else { return try await proceed() }
        var headers = HTTPFields()
        headers[.rateLimitLimit] = String(decision.limit)
        headers[.rateLimitRemaining] = String(decision.remaining)
        headers[.rateLimitReset] = String(decision.resetSeconds)
        guard decision.allowed else {
            metrics.rateLimited()
            let refusal = RateRefusal(subject: subject, decision: decision)
            throw APIError(
                .tooManyRequests, "rate_limited", refusal.message, retryAfter: decision.retryAfter, headers: headers)
        }
        do {
            var response = try await proceed()
            response.headers.append(contentsOf: headers)
            return response
        } catch {
            var mapped = APIError.from(error)
            mapped.headers.append(contentsOf: headers)
            throw mapped
        }
    }
}

/// Whose bucket a request is charged to, and at what rate.
struct RateSubject: Sendable {
    /// The limiter's key: the token's name, or `forwarded:NAME` on a worker.
    var key: String
    /// The name errors show.
    var name: String
    var limit: RateLimit

    init(principal: Principal, request: Request, defaultRate: RateLimit) {
        if principal.forwarder, let caller = ForwardedCaller(headers: request.headers) {
            key = "forwarded:" + caller.name
            name = caller.name
            limit = caller.rate
        } else {
            key = principal.name
            name = principal.name
            limit = principal.rate ?? defaultRate
        }
    }
}

/// A charge the limiter refused, as the API and MCP say it.
struct RateRefusal {
    var message: String
    var data: JSON

    init(subject: RateSubject, decision: RateLimiter.Decision) {
        message =
            "token \"\(subject.name)\" is over its rate of \(JobView.format(subject.limit.perSecond)) requests a second (bursts of \(subject.limit.burst)); retry after \(decision.retryAfter) s"
        data = ["code": "rate_limited", "retry_after": .int(decision.retryAfter)]
    }
}

extension APIState {
    /// Charges one more call to this request's subject (a message of an MCP batch, after
    /// the POST itself): nil when allowed, the refusal otherwise.
    func charge(_ context: APIContext) -> RateRefusal? {
        guard let subject = context.rateSubject, let decision = limiter.take(subject.key, limit: subject.limit),
            !decision.allowed
        else { return nil }
        metrics.rateLimited()
        return RateRefusal(subject: subject, decision: decision)
    }
}

/// The agent an API node of a cluster is calling a worker for. The API node's rate-limit
/// middleware puts its headers on the request's task (`Forwarding.callerHeaders`), which
/// the cluster's backend sends with every forwarded call; a worker believes them only from
/// the worker token.
struct ForwardedCaller: Sendable, Equatable {
    var name: String
    var rate: RateLimit

    static let nameHeader = HTTPField.Name("X-Corral-On-Behalf-Of")!
    static let rateHeader = HTTPField.Name("X-Corral-Caller-Rate")!

    init(name: String, rate: RateLimit) {
        self.name = name
        self.rate = rate
    }

    /// The caller a forwarded request names; nil when it names none or names it badly.
    init?(headers: HTTPFields) {
        guard let encoded = headers[Self.nameHeader], let name = encoded.removingPercentEncoding,
            (1...128).contains(name.utf8.count), let rate = headers[Self.rateHeader].flatMap(Self.parseRate)
        else { return nil }
        self.init(name: name, rate: rate)
    }

    /// The headers a forwarded call carries; the name is percent-encoded, as a token's name
    /// may hold any character.
    var headers: [(String, String)] {
        [
            (Self.nameHeader.rawName, Forwarding.escape(name)),
            (Self.rateHeader.rawName, "\(JobView.format(rate.perSecond)) \(rate.burst)"),
        ]
    }

    /// `PER_SECOND BURST`, each in the tokens file's range.
    static func parseRate(_ text: String) -> RateLimit? {
        let parts = text.split(separator: " ")
        guard parts.count == 2, let perSecond = Double(parts[0]), perSecond.isFinite,
            (0...1_000_000).contains(perSecond), let burst = Int(parts[1]), (0...1_000_000).contains(burst)
        else { return nil }
        return RateLimit(perSecond: perSecond, burst: burst)
    }
}
