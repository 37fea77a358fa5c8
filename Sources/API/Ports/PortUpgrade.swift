import Foundation
import HTTPTypes
import Host
import Hummingbird
import NIOCore
import NIOHTTP1

/// WebSocket through the relay: the upgrade request goes upstream as it came (its
/// `Sec-WebSocket-*` headers end to end), and once the upstream answers 101 both
/// connections carry raw bytes, relayed both ways until either end closes. Frames are never
/// parsed: subprotocols, extensions, pings and closes pass as the two ends agree them.
extension PortRelay {
    /// What came back to an upgrade request sent upstream.
    enum Upgrade: Sendable {
        /// 101: the upstream connection, now raw bytes, and the answer's head.
        case switched(ChannelLease<ByteBuffer, ByteBuffer>, HTTPResponseHead)
        /// Any other answer, relayed as a plain response.
        case answered(Upstream)
    }

    /// Sends the upgrade request upstream. On 101 the raw upstream goes into `slot`, and the
    /// route answers 101 with the upstream's headers; the server channel then relays.
    static func upgrade(
        _ request: Request, to endpoint: PortEndpoint, hop: PortHop, idle: Duration, slot: UpgradeSlot
    ) async throws -> Response {
        let proto =
            request.headers[.upgrade].flatMap { $0.split(separator: ",").first }.map {
                $0.trimmingCharacters(in: .whitespaces)
            } ?? "websocket"
        let head = HTTPRequestHead(
            version: .http1_1, method: HTTPMethod(rawValue: request.method.rawValue), uri: hop.target,
            headers: hop.requestHeaders(request.headers))
        let (channel, outcome) = try await open(endpoint) { channel in
            try addTimeout(channel, idle: idle)
            let upgrades = NIOTypedHTTPClientUpgradeConfiguration<Upgrade>(
                upgradeRequestHead: head, upgraders: [ByteUpgrader(supportedProtocol: proto)],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture { .answered(try Upstream(channel)) }
                })
            var configuration = NIOUpgradableHTTPClientPipelineConfiguration(upgradeConfiguration: upgrades)
            // Bytes the upstream sent right after its 101 belong to the relay.
            configuration.leftOverBytesStrategy = .forwardBytes
            return (
                channel,
                try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(configuration: configuration)
            )
        }
        let result: Upgrade
        do {
            result = try await outcome.get()
        } catch {
            channel.close(promise: nil)
            throw error
        }
        switch result {
        case .switched(let raw, let answer):
            slot.hold(raw)
            return Response(status: .switchingProtocols, headers: hop.responseHeaders(answer.headers))
        case .answered(let upstream):
            return respond(try await upstream.head.get(), upstream: upstream, hop: hop)
        }
    }

    /// Moves bytes both ways between an upgraded client connection and its upstream. Either
    /// end closing (or failing) closes the other.
    static func pipe(
        _ client: NIOAsyncChannel<ByteBuffer, ByteBuffer>, _ upstream: ChannelLease<ByteBuffer, ByteBuffer>
    )
        async
    {
        try? await client.executeThenClose { clientIn, clientOut in
            try await upstream.executeThenClose { upstreamIn, upstreamOut in
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { try? await upstreamOut.write(contentsOf: clientIn) }
                    group.addTask { try? await clientOut.write(contentsOf: upstreamIn) }
                    await group.next()
                    client.channel.close(promise: nil)
                    upstream.channel.channel.close(promise: nil)
                }
            }
        }
    }
}

/// Accepts whatever protocol the upstream switches to and hands over its bytes.
struct ByteUpgrader: NIOTypedHTTPClientProtocolUpgrader {
    typealias UpgradeResult = PortRelay.Upgrade
    let supportedProtocol: String
    let requiredUpgradeHeaders: [String] = []

    func addCustom(upgradeRequestHeaders: inout HTTPHeaders) {}

    func shouldAllowUpgrade(upgradeResponse: HTTPResponseHead) -> Bool { true }

    func upgrade(channel: any Channel, upgradeResponse: HTTPResponseHead) -> EventLoopFuture<PortRelay.Upgrade> {
        channel.eventLoop.makeCompletedFuture {
            // An upgraded connection may stay quiet as long as its two ends like.
            channel.pipeline.syncOperations.removeHandler(name: "relay-idle", promise: nil)
            channel.pipeline.syncOperations.removeHandler(name: "relay-idle-closer", promise: nil)
            let raw = try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
            return .switched(ChannelLease(raw), upgradeResponse)
        }
    }
}
