import Foundation
import Sandbox

/// Where a request for a project's port goes (``HostBackend/portEndpoint(_:port:)``).
public enum PortEndpoint: Sendable {
    /// A TCP socket connected to the port inside the project's sandbox, non-blocking; the
    /// caller owns it and closes it.
    case socket(Int32)
    /// A cluster's API node: the worker that owns the project, at `host:port` over plain
    /// HTTP, where the same route reaches the sandbox; `headers` authorize the hop and name
    /// the caller.
    case worker(host: String, port: Int, headers: [(String, String)])
}

/// Why a request for a project's port found nothing to talk to. The messages say what to do,
/// for a model that requested a port it has not started a server on.
public enum PortError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No sandbox runs for the project, so nothing listens anywhere in it.
    case noSandbox(project: String, port: UInt16)
    /// The sandbox runs but nothing listens on the port; `listening` are the ports that
    /// something does listen on.
    case closed(project: String, port: UInt16, listening: [UInt16])
    /// The port is the host's egress proxy inside the sandbox, not a server of the project's.
    case reserved(project: String, port: UInt16)

    /// The API's error code.
    public var code: String {
        switch self {
        case .noSandbox: "no_sandbox"
        case .closed: "port_closed"
        case .reserved: "port_reserved"
        }
    }

    public var description: String {
        switch self {
        case .noSandbox(let project, let port):
            "project \(project) has no running sandbox, so nothing listens on port \(port); "
                + Self.advice(project: project, port: port)
        case .closed(let project, let port, let listening):
            "nothing listens on port \(port) in project \(project)'s sandbox ("
                + (listening.isEmpty
                    ? "no port is listening" : "listening: \(listening.map(String.init).joined(separator: ", "))")
                + "); " + Self.advice(project: project, port: port)
        case .reserved(let project, let port):
            "port \(port) in project \(project)'s sandbox is Corral's egress proxy (docs/NETWORK.md), not a server "
                + "of the project's; serve on another port"
        }
    }

    private static func advice(project: String, port: UInt16) -> String {
        "start your server as a background job (POST /v1/projects/\(project)/jobs, or the bash tool with "
            + "background: true) listening on port \(port) and bound to 127.0.0.1 or 0.0.0.0, then retry"
    }
}

extension CorralHost {
    /// The TCP ports processes in the project's sandbox listen on. Never starts a sandbox:
    /// without one the list is empty.
    public nonisolated func ports(_ id: String) async throws -> PortList {
        guard settings[id] != nil else { throw HostError.projectNotFound(id) }
        guard let namespace = await runningNamespace(id) else {
            return PortList(project: id, sandbox: false, ports: [])
        }
        return PortList(
            project: id, sandbox: true, ports: Self.serverPorts(namespace).map { PortInfo(project: id, listening: $0) })
    }

    /// What listens in the sandbox less the host's own egress proxy at 127.0.0.1:3128.
    nonisolated static func serverPorts(_ namespace: NetworkNamespace) -> [ListeningPort] {
        namespace.listeningPorts().compactMap { listening in
            guard listening.port == EgressProxy.port else { return listening }
            let others = listening.addresses.filter { $0 != "127.0.0.1" }
            return others.isEmpty ? nil : ListeningPort(port: listening.port, addresses: others)
        }
    }

    /// A socket connected to `port` inside the project's running sandbox, made in its
    /// network namespace: no host port is involved.
    public nonisolated func portEndpoint(_ id: String, port: UInt16) async throws -> PortEndpoint {
        guard settings[id] != nil else { throw HostError.projectNotFound(id) }
        guard let namespace = await runningNamespace(id) else { throw PortError.noSandbox(project: id, port: port) }
        // 127.0.0.1:3128 is the proxy; a caller of the API has no business tunnelling
        // through the project's egress (its jobs can, under the project's policy).
        if port == EgressProxy.port { throw PortError.reserved(project: id, port: port) }
        do {
            return .socket(try await namespace.connect(port: port))
        } catch let error as SystemError where error.errno == ECONNREFUSED {
            throw PortError.closed(project: id, port: port, listening: Self.serverPorts(namespace).map(\.port))
        }
    }

    /// The running sandbox's network namespace; nil when none runs (or it just died).
    private nonisolated func runningNamespace(_ id: String) async -> NetworkNamespace? {
        guard let sandbox = await pool.existing(id) else { return nil }
        return try? sandbox.networkNamespace()
    }
}
