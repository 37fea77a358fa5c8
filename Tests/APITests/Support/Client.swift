import API
import Foundation
import HTTPTypes
import Host
import Hummingbird
import HummingbirdTesting
import NIOCore

/// A response as tests look at it.
struct Reply: Sendable {
    var status: HTTPResponse.Status
    var headers: HTTPFields
    var body: [UInt8]
    var text: String { String(decoding: body, as: UTF8.self) }
    var json: JSON { (try? JSON.parse(body)) ?? .null }
    /// `error.code` of the JSON error shape.
    var code: String? { json["error"]?["code"]?.stringValue }
    func header(_ name: String) -> String? { headers[HTTPField.Name(name)!] }
}

extension TestClientProtocol {
    /// Sends a request; `body` is JSON unless `raw` is given.
    func call(
        _ method: HTTPRequest.Method, _ uri: String, json: JSON? = nil, raw: [UInt8]? = nil, token: String? = nil,
        headers extra: [String: String] = [:]
    ) async throws -> Reply {
        var headers = HTTPFields()
        if let token { headers[.authorization] = "Bearer \(token)" }
        for (name, value) in extra { headers[HTTPField.Name(name)!] = value }
        let bytes = raw ?? json.map { $0.serialized() }
        if json != nil { headers[.contentType] = "application/json" }
        return try await execute(
            uri: uri, method: method, headers: headers, body: bytes.map { ByteBuffer(bytes: $0) }
        ) { response in
            Reply(
                status: response.status, headers: response.headers,
                body: Array(response.body.readableBytesView))
        }
    }
}

/// Tokens the auth tests use: one per project family, one admin.
enum TestTokens {
    static let alpha = "alpha-secret-0123456789"
    static let beta = "beta-secret-0123456789"
    static let admin = "admin-secret-0123456789"
    static let slow = "slow-secret-0123456789"

    static var store: TokenStore {
        TokenStore([
            (Principal(name: "alpha", projects: ["alpha*"], admin: false), alpha),
            (Principal(name: "beta", projects: ["beta"], admin: false), beta),
            (Principal(name: "ops", projects: ["*"], admin: true), admin),
            (Principal(name: "slow", projects: ["*"], admin: false, rate: RateLimit(perSecond: 1, burst: 3)), slow),
        ])
    }
}

/// Builds the real application over `backend` (and its jobs) and runs `body` against it
/// in-process.
func withAPI(
    _ configuration: APIConfiguration = APIConfiguration(port: 0), backend: FakeBackend,
    files: (any FileToolBackend)? = nil, mcpSessions: MCPSessionStore? = nil, mode: TestingSetup = .router,
    _ body: @Sendable (any TestClientProtocol) async throws -> Void
) async throws {
    let app = try buildApplication(
        configuration, host: backend, jobs: backend.jobService, files: files, mcpSessions: mcpSessions)
    try await app.test(mode) { client in try await body(client) }
}

extension JSON {
    /// The number of items of an array, nil for anything else.
    var arrayCount: Int? {
        if case .array(let items) = self { return items.count }
        return nil
    }
}
