import Foundation
import Host
import Hummingbird
import NIOCore

/// Liveness, readiness, status, metrics and the OpenAPI document.
struct OperationsRoutes {
    let state: APIState

    func add(to router: Router<APIContext>) {
        router.get("/health") { _, _ in Response.json(["status": "ok", "version": .string(HostModule.version)]) }
        router.get("/ready") { _, context in
            _ = try context.caller()
            let checks = await state.backend.readiness()
            let ready = checks.values.allSatisfy { $0 }
            return Response.json(
                ["ready": .bool(ready), "checks": .object(checks.mapValues { .bool($0) })],
                status: ready ? .ok : .serviceUnavailable)
        }
        router.get("/status") { _, context in
            _ = try context.requireAdmin()
            var status = JSON.from(await state.backend.status())
            if case .object(var fields) = status {
                let configuration = state.configuration
                fields["api"] = [
                    "open": .bool(configuration.tokens.isEmpty), "tokens": .int(configuration.tokens.count),
                    "max_json_bytes": .int(configuration.limits.maxJSONBytes),
                    "max_archive_bytes": .int(configuration.limits.maxArchiveBytes),
                    "default_wait_s": .number(configuration.limits.defaultWaitSeconds),
                    "max_wait_s": .number(configuration.limits.maxWaitSeconds),
                    "mcp_sessions": .int(state.mcpSessions.count),
                    "max_mcp_sessions": .int(state.mcpSessions.maxSessions),
                    "max_mcp_sessions_per_token": .int(state.mcpSessions.maxPerPrincipal),
                    "audit_log": .optional(state.audit.map { .string($0.path) }),
                ]
                status = .object(fields)
            }
            return Response.json(status)
        }
        router.get("/metrics") { _, context in
            // The auth middleware let a tokenless loopback peer through only when allowed.
            if context.principal != nil { _ = try context.requireAdmin() }
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            let text = await state.metrics.render(
                backend: state.backend, jobs: state.jobs, sessions: state.mcpSessions.count)
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: text)))
        }
        router.get("/openapi.json") { _, context in
            _ = try context.caller()
            var headers = HTTPFields()
            headers[.contentType] = "application/json"
            return Response(
                status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: OpenAPIDocument.bytes)))
        }
    }
}

/// docs/openapi.json, shipped in the API module's resources.
public enum OpenAPIDocument {
    public static let bytes: [UInt8] = {
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "json"),
            let data = try? Data(contentsOf: url)
        else { return Array(#"{"openapi":"3.1.0","info":{"title":"missing","version":"0"},"paths":{}}"#.utf8) }
        return Array(data)
    }()
}
