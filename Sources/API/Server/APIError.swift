import Cluster
import Foundation
import HTTPTypes
import Host
import Hummingbird
import NIOCore
import Sandbox

/// Every refusal the API answers with: an HTTP status, a stable machine-readable code and a
/// sentence a person (or a model) can act on. ``from(_:)`` is the one place typed errors of
/// the host become HTTP statuses.
public struct APIError: Error, Sendable, Equatable, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var code: String
    public var message: String
    /// Seconds a client should wait before retrying (429, 503).
    public var retryAfter: Int?
    /// Extra headers for the response (`X-RateLimit-*` on a 429).
    public var headers: HTTPFields

    public init(
        _ status: HTTPResponse.Status, _ code: String, _ message: String, retryAfter: Int? = nil,
        headers: HTTPFields = [:]
    ) {
        self.status = status
        self.code = code
        self.message = message
        self.retryAfter = retryAfter
        self.headers = headers
    }

    public var description: String { "\(status.code) \(code): \(message)" }

    // MARK: - The API's own refusals

    static func malformedJSON(_ why: String) -> APIError {
        .init(.badRequest, "malformed_json", "malformed JSON: \(why)")
    }
    static func invalidArgument(_ name: String, _ why: String) -> APIError {
        .init(.unprocessableContent, "invalid_argument", "`\(name)` \(why)")
    }
    static func missingArgument(_ name: String) -> APIError {
        .init(.unprocessableContent, "invalid_argument", "`\(name)` is required")
    }
    static func tooLarge(_ what: String, limit: Int) -> APIError {
        .init(.contentTooLarge, "body_too_large", "\(what) is larger than the limit of \(limit) bytes")
    }
    static let unauthorized = APIError(
        .unauthorized, "unauthorized", "missing or unknown bearer token; send Authorization: Bearer <token>")
    static func forbidden(_ why: String) -> APIError { .init(.forbidden, "forbidden", why) }
    static func notFound(_ what: String) -> APIError { .init(.notFound, "not_found", what) }
    static func jobNotFound(_ id: String, project: String) -> APIError {
        .init(.notFound, "job_not_found", "no job \(id) in project \(project)")
    }
    static func unknownTool(_ name: String, known: [String]) -> APIError {
        .init(.notFound, "unknown_tool", "there is no tool `\(name)`; the tools are \(known.joined(separator: ", "))")
    }

    // MARK: - Mapping

    /// The response for any error a handler throws. Unknown errors are 500s whose detail
    /// stays in the log, never in the response.
    public static func from(_ error: any Error) -> APIError {
        if let detail = diskFull(error) { return .diskFull(detail) }
        switch error {
        case let error as APIError: return error
        case let error as CacheError: return from(cache: error)
        case let error as HostError: return from(host: error)
        case let error as JobError: return from(job: error)
        case let error as WorkerRefusal:
            // The owner's answer, passed on as it is.
            return .init(.init(code: error.status), error.code, error.message, retryAfter: error.retryAfter)
        case let error as ClusterError:
            return .init(
                .init(code: error.httpStatus), error.httpStatus == 503 ? "unavailable" : "cluster_error",
                error.description, retryAfter: error.retryAfterSeconds)
        case let error as PortError: return .init(.badGateway, error.code, error.description)
        case let error as SessionError:
            return .init(
                .init(code: error.status), error.code, error.description,
                retryAfter: error == .shuttingDown ? 5 : nil)
        case let error as LimitError: return .init(.unprocessableContent, "limit_exceeded", error.description)
        case is NIOTooManyBytesError: return .init(.contentTooLarge, "body_too_large", "request body is too large")
        case let error as HTTPError:
            return .init(error.status, "http_\(error.status.code)", error.body ?? error.status.reasonPhrase)
        default: return .init(.internalServerError, "internal_error", "internal error; see the host's log")
        }
    }

    /// The host's disk (its data directory, or the filesystem a write went to) has no room:
    /// a condition of the host that freeing space ends, never the caller's fault, and
    /// never a 500 with the detail hidden in the log.
    static func diskFull(_ detail: String) -> APIError {
        .init(
            .init(code: 507), "disk_full",
            "the host is out of disk space (\(detail)); nothing was changed, retry once an operator frees space",
            retryAfter: 30)
    }

    /// What ran out, when `error` is the disk being full (ENOSPC, EDQUOT, SQLITE_FULL).
    static func diskFull(_ error: any Error) -> String? {
        switch error {
        case CacheError.system(let system) where system.errno == ENOSPC || system.errno == EDQUOT:
            return system.description
        case let system as SystemError where system.errno == ENOSPC || system.errno == EDQUOT:
            return system.description
        case let sqlite as SQLiteError where sqlite.code & 0xff == 13:  // SQLITE_FULL
            return "the job journal: \(sqlite.message)"
        default:
            return nil
        }
    }

    static func from(cache error: CacheError) -> APIError {
        let status: HTTPResponse.Status =
            switch error {
            case .invalidProject, .invalidQuota, .invalidSnapshotName: .badRequest
            case .unknownProject, .snapshotNotFound: .notFound
            case .unsupportedSource, .checksumMismatch, .unsafeEntry, .corruptArchive, .forbiddenAddress,
                .forkUnsupported:
                .unprocessableContent
            case .notFound: .unprocessableContent
            case .httpStatus, .transport: .badGateway
            case .timeout: .gatewayTimeout
            case .tooLarge: .contentTooLarge
            case .readOnlyStore, .busy, .projectBusy, .snapshotExists, .projectExists: .conflict
            case .cancelled: .serviceUnavailable
            case .system, .index, .volume, .patchIncomplete: .internalServerError
            }
        return .init(status, error.code, error.description)
    }

    static func from(host error: HostError) -> APIError {
        switch error {
        case .unknownPolicy: .init(.unprocessableContent, "unknown_policy", error.description)
        case .invalidPolicy: .init(.unprocessableContent, "invalid_policy", error.description)
        case .policyLimits: .init(.unprocessableContent, "limit_exceeded", error.description)
        case .projectNotFound: .init(.notFound, "project_not_found", error.description)
        case .rootfsMissing: .init(.serviceUnavailable, "rootfs_missing", error.description, retryAfter: 60)
        case .setupFailed: .init(.conflict, "setup_failed", error.description)
        case .invalidSetup: .init(.unprocessableContent, "invalid_argument", error.description)
        }
    }

    static func from(job error: JobError) -> APIError {
        switch error {
        case .overloaded(let after, _): .init(.serviceUnavailable, "overloaded", error.description, retryAfter: after)
        case .notFound: .init(.notFound, "job_not_found", error.description)
        case .shuttingDown: .init(.serviceUnavailable, "shutting_down", error.description, retryAfter: 5)
        case .invalidRequest: .init(.unprocessableContent, "invalid_request", error.description)
        case .submitterBusy: .init(.tooManyRequests, "too_many_jobs", error.description, retryAfter: 1)
        }
    }

    /// The JSON error response: `{"error": {"code", "message"}}` and `Retry-After` when set.
    func response() -> Response {
        var headers = self.headers
        headers[.contentType] = "application/json"
        if let retryAfter { headers[.retryAfter] = String(retryAfter) }
        let body = JSON.from(ErrorReply(code: code, message: message))
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body.serialized())))
    }
}
