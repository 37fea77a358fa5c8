import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import ServiceLifecycle
import Synchronization

/// The server's connections: HTTP/1.1 as Hummingbird serves it, plus WebSocket upgrades.
///
/// An upgrade request goes through the router like any other request (auth, rate limits,
/// project globs, metrics). If its route answers 101 having left an upstream connection in
/// the request's ``UpgradeSlot`` (only the ports route does), the 101 goes out and the two
/// connections' bytes are relayed both ways. Any other answer (a refusal, the upstream's
/// own non-101 answer, a route that knows nothing of upgrades) is sent as it is, and the
/// connection is closed. As in NIO, only a connection's first request may upgrade.
struct UpgradingHTTP1Channel: ServerChildChannel, HTTPChannelHandler {
    enum Outcome: Sendable {
        /// Plain HTTP; `refusal` is the answer to an upgrade request that did not upgrade.
        case http(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, refusal: Response?)
        /// Switched: the client's connection and the upstream's, both raw bytes.
        case relay(NIOAsyncChannel<ByteBuffer, ByteBuffer>, upstream: ChannelLease<ByteBuffer, ByteBuffer>)
    }

    struct Value: ServerChildChannelValue {
        let outcome: EventLoopFuture<Outcome>
        let channel: any Channel
    }

    /// The router, for upgrade requests.
    typealias Route = @Sendable (Request, APIContext) async throws -> Response

    let responder: HTTPChannelHandler.Responder
    let route: Route

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let slot = UpgradeSlot()
            let upgrades = NIOTypedHTTPServerUpgradeConfiguration<Outcome>(
                upgraders: [Upgrader(slot: slot, route: route, logger: logger)],
                notUpgradingCompletionHandler: { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                        try channel.pipeline.syncOperations.addHandler(HTTPConnectionStateHandler(logger: logger))
                        let http = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                            wrappingChannelSynchronously: channel,
                            configuration: .init(isOutboundHalfClosureEnabled: true))
                        return .http(http, refusal: slot.takeRefusal())
                    }
                })
            var configuration = NIOUpgradableHTTPServerPipelineConfiguration(upgradeConfiguration: upgrades)
            // As Hummingbird's own HTTP/1.1 channel: it pipelines, handles errors and checks
            // headers itself.
            configuration.enablePipelining = false
            configuration.enableErrorHandling = false
            configuration.enableResponseHeaderValidation = false
            let outcome = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(
                configuration: configuration)
            return Value(outcome: outcome, channel: channel)
        }
    }

    func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.outcome.get() {
            case .http(let http, nil):
                await handleHTTP(asyncChannel: http, logger: logger)
            case .http(let http, let refusal?):
                try await http.executeThenClose { _, outbound in
                    var head = refusal.head
                    head.headerFields[.connection] = "close"
                    try await ResponseWriter(outbound: outbound).write(response: head, body: refusal.body)
                }
            case .relay(let client, let upstream):
                // An open WebSocket must not hold the server's shutdown up.
                await withGracefulShutdownHandler {
                    await PortRelay.pipe(client, upstream)
                } onGracefulShutdown: {
                    client.channel.close(promise: nil)
                }
            }
        } catch {
            logger.debug("connection ended", metadata: ["error": .string(String(describing: error))])
        }
    }

    /// Runs an upgrade request through the router and switches only on a 101 that left an
    /// upstream behind.
    struct Upgrader: NIOTypedHTTPServerProtocolUpgrader {
        typealias UpgradeResult = Outcome
        let supportedProtocol = "websocket"
        /// The upstream checks the handshake (`Sec-WebSocket-Key` and the rest), not the relay.
        let requiredUpgradeHeaders: [String] = []
        let slot: UpgradeSlot
        let route: Route
        let logger: Logger

        struct NotSwitched: Error {}

        func buildUpgradeResponse(
            channel: any Channel, upgradeRequest: HTTPRequestHead, initialResponseHeaders: HTTPHeaders
        ) -> EventLoopFuture<HTTPHeaders> {
            let promise = channel.eventLoop.makePromise(of: HTTPHeaders.self)
            promise.completeWithTask { [slot, route, logger] in
                let request = Request(
                    head: try HTTPRequest(upgradeRequest, secure: false, splitCookie: false),
                    body: .init(buffer: ByteBuffer()))
                var context = APIContext(source: .init(channel: channel, logger: logger))
                context.upgrade = slot
                let response: Response
                do {
                    response = try await route(request, context)
                } catch {
                    response = APIError.from(error).response()
                }
                guard response.status == .switchingProtocols, slot.holdsUpstream else {
                    slot.refuse(response)
                    throw NotSwitched()
                }
                var headers = initialResponseHeaders
                for field in response.headers where !["connection", "upgrade"].contains(field.name.canonicalName) {
                    headers.add(name: field.name.rawName, value: field.value)
                }
                return headers
            }
            return promise.futureResult
        }

        func upgrade(channel: any Channel, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<Outcome> {
            channel.eventLoop.makeCompletedFuture {
                guard let upstream = slot.takeUpstream() else { throw NotSwitched() }
                let client = try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                    wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
                return .relay(client, upstream: upstream)
            }
        }
    }
}

/// Where a route that accepts an upgrade leaves the upstream connection for the server
/// channel (``UpgradingHTTP1Channel``), and where the channel keeps the answer to an upgrade
/// that did not happen. One per connection; an upstream never picked up is closed with it
/// (``ChannelLease``).
final class UpgradeSlot: Sendable {
    private struct State {
        var upstream: ChannelLease<ByteBuffer, ByteBuffer>?
        var refusal: Response?
    }
    private let state = Mutex(State())

    func hold(_ upstream: ChannelLease<ByteBuffer, ByteBuffer>) { state.withLock { $0.upstream = upstream } }

    var holdsUpstream: Bool { state.withLock { $0.upstream != nil } }

    func takeUpstream() -> ChannelLease<ByteBuffer, ByteBuffer>? {
        state.withLock { state in
            defer { state.upstream = nil }
            return state.upstream
        }
    }

    func refuse(_ response: Response) { state.withLock { $0.refusal = response } }

    func takeRefusal() -> Response? {
        state.withLock { state in
            defer { state.refusal = nil }
            return state.refusal
        }
    }
}
