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

    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response)
        async throws -> Response
    {
        var context = context
        if tokens.isEmpty {
            context.principal = .anonymous
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
struct RateLimitMiddleware: RouterMiddleware {
    typealias Context = APIContext
    let limiter: RateLimiter
    let defaultRate: RateLimit
    let metrics: APIMetrics

    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response)
        async throws -> Response
    {
        guard let principal = context.principal,
            let decision = limiter.take(principal.name, limit: principal.rate ?? defaultRate)
        else { return try await next(request, context) }
        var headers = HTTPFields()
        headers[.rateLimitLimit] = String(decision.limit)
        headers[.rateLimitRemaining] = String(decision.remaining)
        headers[.rateLimitReset] = String(decision.resetSeconds)
        guard decision.allowed else {
            metrics.rateLimited()
            throw APIError(
                .tooManyRequests, "rate_limited",
                "token \"\(principal.name)\" is over its rate of \(decision.limit) requests; retry after \(decision.retryAfter) s",
                retryAfter: decision.retryAfter, headers: headers)
        }
        do {
            var response = try await next(request, context)
            response.headers.append(contentsOf: headers)
            return response
        } catch {
            var mapped = APIError.from(error)
            mapped.headers.append(contentsOf: headers)
            throw mapped
        }
    }
}
