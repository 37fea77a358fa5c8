import Foundation
import HTTPTypes
import Host
import Hummingbird
import NIOHTTP1

/// How a relayed request looks on its way upstream, and its answer on the way back.
///
/// To a sandbox: the path after `/ports/{port}` (query kept), `Host: 127.0.0.1:PORT`, and
/// `X-Forwarded-Prefix` naming what the path lost; a redirect to an absolute path gets the
/// prefix back, so it stays inside the relay. To a cluster's owner: the same path, the
/// worker token instead of the caller's, and the caller named as for every forwarded call.
/// Either way hop-by-hop headers stay on their hop, and the caller's `Authorization` and
/// `X-Corral-*` headers never reach the upstream.
struct PortHop: Sendable {
    /// The request target upstream: path and query.
    var target: String
    /// Headers this hop sets, over any the caller sent.
    var headers: [(String, String)]
    /// Put back in front of a `Location` that is an absolute path.
    var locationPrefix: String?
    /// Answer headers this node sets itself (lower case), dropped from the upstream's.
    var ownHeaders: Set<String> = []

    init(endpoint: PortEndpoint, path: String, project: String, port: UInt16) {
        let prefix = PortInfo.path(project: project, port: port)
        switch endpoint {
        case .socket:
            target = Self.rest(of: path)
            headers = [("Host", "127.0.0.1:\(port)"), ("X-Forwarded-Prefix", prefix)]
            locationPrefix = prefix
        case .worker(let host, let workerPort, let forwarding):
            target = path
            headers = [("Host", host.contains(":") ? "[\(host)]:\(workerPort)" : "\(host):\(workerPort)")] + forwarding
            locationPrefix = nil
            // The owner's rate headers are for the worker token's hop; the node's own go out.
            ownHeaders = ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"]
        }
    }

    /// `/v1/projects/{id}/ports/{port}/a/b?q` → `/a/b?q`; nothing after the port → `/`.
    static func rest(of path: String) -> String {
        let parts = path.split(separator: "/", maxSplits: 6, omittingEmptySubsequences: false)
        guard parts.count == 7 else {
            // `/v1/projects/x/ports/8080?q`: the query is all there is.
            return path.firstIndex(of: "?").map { "/" + path[$0...] } ?? "/"
        }
        return "/" + parts[6]
    }

    /// Headers only the connection they came on may see (RFC 9110, 7.6.1); those the
    /// `Connection` header names are dropped too.
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade",
    ]

    /// The caller's headers as they go upstream.
    func requestHeaders(_ fields: HTTPFields) -> HTTPHeaders {
        let named = Self.connectionTokens(fields[values: .connection])
        var out = HTTPHeaders()
        for field in fields {
            let name = field.name.canonicalName
            if Self.hopByHop.contains(name) || named.contains(name) || name == "host" || name == "authorization"
                || name == "expect" || name.hasPrefix("x-corral-")
            {
                continue
            }
            out.add(name: field.name.rawName, value: field.value)
        }
        for (name, value) in headers { out.replaceOrAdd(name: name, value: value) }
        return out
    }

    /// The upstream's answer headers as they go to the caller.
    func responseHeaders(_ headers: HTTPHeaders) -> HTTPFields {
        var fields = Self.fields(headers, dropping: ownHeaders) ?? [:]
        if let locationPrefix, let location = fields[.location], location.hasPrefix("/"), !location.hasPrefix("//") {
            fields[.location] = locationPrefix + location
        }
        return fields
    }

    /// NIO's headers as HTTP types' fields, less hop-by-hop ones and `dropping`; nil when
    /// none is left.
    static func fields(_ headers: HTTPHeaders, dropping: Set<String>) -> HTTPFields? {
        let named = connectionTokens(headers["connection"])
        var fields = HTTPFields()
        for (name, value) in headers {
            let lower = name.lowercased()
            guard !hopByHop.contains(lower), !named.contains(lower), !dropping.contains(lower),
                let key = HTTPField.Name(name)
            else { continue }
            fields.append(HTTPField(name: key, value: value))
        }
        return fields.isEmpty ? nil : fields
    }

    private static func connectionTokens(_ values: [String]) -> Set<String> {
        Set(
            values.flatMap { $0.split(separator: ",") }.map {
                $0.trimmingCharacters(in: .whitespaces).lowercased()
            })
    }
}
