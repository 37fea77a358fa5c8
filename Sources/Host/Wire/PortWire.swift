import Foundation
import Sandbox

/// A TCP port something in a project's sandbox listens on, as the API lists it:
/// `{"port": 8080, "addresses": ["127.0.0.1"], "url": "/v1/projects/demo/ports/8080/"}`.
public struct PortInfo: Sendable, Codable, Equatable {
    public var port: Int
    /// The local addresses it is bound to (`127.0.0.1`, `0.0.0.0`, `::`).
    public var addresses: [String]
    /// Where the API relays requests to it, relative to the API's base URL.
    public var url: String

    public init(project: String, listening: ListeningPort) {
        port = Int(listening.port)
        addresses = listening.addresses
        url = PortInfo.path(project: project, port: listening.port) + "/"
    }

    /// `/v1/projects/{project}/ports/{port}`: the prefix a relayed request's path loses.
    public static func path(project: String, port: UInt16) -> String { "/v1/projects/\(project)/ports/\(port)" }
}

/// The answer to `GET /v1/projects/{id}/ports`. `sandbox` is false when no sandbox runs
/// (then nothing listens; listing never starts one).
public struct PortList: Sendable, Codable, Equatable {
    public var project: String
    public var sandbox: Bool
    public var ports: [PortInfo]

    public init(project: String, sandbox: Bool, ports: [PortInfo]) {
        self.project = project
        self.sandbox = sandbox
        self.ports = ports
    }
}
