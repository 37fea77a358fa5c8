import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Sandbox
import Synchronization

extension HTTPField.Name {
    static let requestID = HTTPField.Name("X-Request-Id")!
    static let rateLimitLimit = HTTPField.Name("X-RateLimit-Limit")!
    static let rateLimitRemaining = HTTPField.Name("X-RateLimit-Remaining")!
    static let rateLimitReset = HTTPField.Name("X-RateLimit-Reset")!
    static let idempotencyKey = HTTPField.Name("Idempotency-Key")!
    static let lastEventID = HTTPField.Name("Last-Event-ID")!
}

/// Outermost: every response, errors included, carries `X-Request-Id` (the caller's, if it
/// is sane, else a new one), and every error becomes the JSON error shape here.
struct RequestIDMiddleware: RouterMiddleware {
    typealias Context = APIContext

    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response)
        async throws -> Response
    {
        var context = context
        let id = request.headers[.requestID].flatMap(Self.sane) ?? Self.generate()
        context.requestID = id
        context.logger[metadataKey: "request_id"] = .string(id)
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            let mapped = APIError.from(error)
            if mapped.status == .internalServerError {
                context.logger.error("request failed", metadata: ["error": .string(String(describing: error))])
            }
            response = mapped.response()
        }
        response.headers[.requestID] = id
        return response
    }

    /// A caller's id is echoed only if it is short and plain, so it cannot forge log lines.
    static func sane(_ id: String) -> String? {
        guard (1...128).contains(id.utf8.count) else { return nil }
        let ok = id.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != 0x22 && $0 != 0x5C }
        return ok ? id : nil
    }

    static func generate() -> String {
        var rng = SystemRandomNumberGenerator()
        return (0..<2).map { _ in String(rng.next() as UInt64, radix: 16).leftPad(16) }.joined()
    }
}

extension String {
    fileprivate func leftPad(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

/// Request counts and latency by route, method and status, and one access-log line per
/// request (method, route, status and ms, with the request id the context's logger
/// carries).
struct MetricsMiddleware: RouterMiddleware {
    typealias Context = APIContext
    let metrics: APIMetrics

    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response)
        async throws -> Response
    {
        let start = ContinuousClock.now
        let status: HTTPResponse.Status
        defer {
            let elapsed = ContinuousClock.now - start
            let route = context.endpointPath ?? "unmatched"
            metrics.request(route: route, method: request.method.rawValue, status: status.code, duration: elapsed)
            context.logger.info(
                "request",
                metadata: [
                    "method": .string(request.method.rawValue), "route": .string(route),
                    "status": .stringConvertible(status.code),
                    "ms": .stringConvertible(Double(elapsed.nanoseconds / 1000) / 1000),
                ])
        }
        do {
            let response = try await next(request, context)
            status = response.status
            return response
        } catch {
            status = APIError.from(error).status
            throw error
        }
    }
}

/// Sheds load before doing any work once too many requests are in flight.
struct LoadShedMiddleware: RouterMiddleware {
    typealias Context = APIContext
    let limit: Int
    let inFlight = InFlight()

    final class InFlight: Sendable {
        let count = Atomic<Int>(0)
    }

    func handle(_ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response)
        async throws -> Response
    {
        let now = inFlight.count.wrappingAdd(1, ordering: .relaxed).newValue
        defer { inFlight.count.wrappingSubtract(1, ordering: .relaxed) }
        guard now <= limit else {
            throw APIError(
                .serviceUnavailable, "overloaded", "the server has \(limit) requests in flight; retry shortly",
                retryAfter: 1)
        }
        return try await next(request, context)
    }
}
