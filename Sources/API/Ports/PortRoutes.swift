import HTTPTypes
import Host
import Hummingbird

/// `/v1/projects/{id}/ports…`: the TCP ports processes in a project's sandbox listen on,
/// and HTTP (WebSocket included) relayed to them, so a dev server a job started is reachable
/// through the API with the caller's token and no host port (docs/API.md, "Ports").
struct PortRoutes {
    let state: APIState

    /// Every method is relayed as it is.
    static let methods: [HTTPRequest.Method] = [.get, .head, .post, .put, .patch, .delete, .options]

    func add(to router: Router<APIContext>) {
        router.get("/v1/projects/:id/ports") { _, context in
            let id = try context.projectID()
            _ = try context.authorize(project: id)
            return Response.json(JSON.from(try await state.backend.ports(id)))
        }
        for method in Self.methods {
            router.on("/v1/projects/:id/ports/:port", method: method) { request, context in
                try await relay(request, context)
            }
            router.on("/v1/projects/:id/ports/:port/**", method: method) { request, context in
                try await relay(request, context)
            }
        }
    }

    func relay(_ request: Request, _ context: APIContext) async throws -> Response {
        let id = try context.projectID()
        _ = try context.authorize(project: id)
        let port = try Self.port(context.parameters.get("port") ?? "")
        let endpoint = try await state.backend.portEndpoint(id, port: port)
        let hop = PortHop(endpoint: endpoint, path: request.head.path ?? "/", project: id, port: port)
        let idle = state.configuration.limits.portIdleTimeout
        do {
            if let slot = context.upgrade {
                return try await PortRelay.upgrade(request, to: endpoint, hop: hop, idle: idle, slot: slot)
            }
            return try await PortRelay.forward(request, to: endpoint, hop: hop, idle: idle)
        } catch let failure as PortRelay.Failure {
            throw Self.error(failure, project: id, port: port, idle: idle)
        } catch let error as APIError {
            throw error
        } catch {
            // A worker that cannot be reached is the cluster's usual 503; anything else broke
            // the upstream connection.
            if case .worker(let host, let workerPort, _) = endpoint {
                throw APIError(
                    .serviceUnavailable, "unavailable",
                    "the project's worker host cannot be reached at \(host):\(workerPort): \(error)", retryAfter: 1)
            }
            throw Self.error(.closed, project: id, port: port, idle: idle)
        }
    }

    /// The `{port}` path parameter: a whole number from 1 to 65535.
    static func port(_ raw: String) throws(APIError) -> UInt16 {
        UInt16(try Request.wholeNumber(raw, name: "port", in: 1...65535))
    }

    static func error(_ failure: PortRelay.Failure, project: String, port: UInt16, idle: Duration) -> APIError {
        switch failure {
        case .timeout:
            APIError(
                .gatewayTimeout, "port_timeout",
                "the server on port \(port) in project \(project)'s sandbox sent nothing for \(idle.components.seconds) s; check that it answers, or its job's output (GET /v1/projects/\(project)/jobs)"
            )
        case .closed:
            APIError(
                .badGateway, "port_error",
                "the server on port \(port) in project \(project)'s sandbox closed the connection without a whole HTTP answer; check that it speaks HTTP/1.1 on that port, and its job's output"
            )
        }
    }
}
