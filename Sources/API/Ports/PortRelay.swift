import HTTPTypes
import Host
import Hummingbird
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import Synchronization

/// HTTP/1.1 to a project's port, over the socket the host made in the sandbox's network
/// namespace (or, on a cluster's API node, over TCP to the project's owner): the request
/// head, then its body as it arrives; the answer's head, then its body streamed back as
/// the upstream sends it, so an event stream arrives event by event.
///
/// Every buffer is bounded: the request body is written one part at a time, each write
/// awaited, and the answer is read through a `NIOAsyncChannel`, which stops reading the
/// socket while the client is slow. A connection that moves no byte either way for
/// `idle` is closed. The upstream is closed when the answer ends, fails, or is dropped.
enum PortRelay {
    /// Why a relay failed before or while the upstream answered.
    enum Failure: Error {
        /// Nothing moved either way for the idle timeout.
        case timeout
        /// The upstream closed (or broke) the connection before answering whole.
        case closed
    }

    /// The event loops relays run on: the server's own.
    static var group: MultiThreadedEventLoopGroup { .singleton }

    // MARK: - Plain requests

    /// Sends `request` upstream and answers with what comes back.
    static func forward(_ request: Request, to endpoint: PortEndpoint, hop: PortHop, idle: Duration) async throws
        -> Response
    {
        let upstream = try await open(endpoint) { channel in
            try addTimeout(channel, idle: idle)
            try channel.pipeline.syncOperations.addHTTPClientHandlers()
            return try Upstream(channel)
        }
        let head = HTTPRequestHead(
            version: .http1_1, method: HTTPMethod(rawValue: request.method.rawValue), uri: hop.target,
            headers: hop.requestHeaders(request.headers))
        let channel = upstream.lease.channel.channel
        let answer = try await withThrowingTaskGroup(of: HTTPResponseHead?.self) { group in
            group.addTask {
                // A server may answer before it has read the whole body (or at all): then
                // the write fails and the answer decides.
                do {
                    try await channel.writeAndFlush(HTTPClientRequestPart.head(head)).get()
                    for try await buffer in request.body {
                        try await channel.writeAndFlush(HTTPClientRequestPart.body(.byteBuffer(buffer))).get()
                    }
                    try await channel.writeAndFlush(HTTPClientRequestPart.end(nil)).get()
                } catch {}
                return nil
            }
            group.addTask { try await upstream.head.get() }
            var answer: HTTPResponseHead?
            for try await value in group where value != nil { answer = value }
            return answer
        }
        guard let answer else { throw Failure.closed }
        return respond(answer, upstream: upstream, hop: hop)
    }

    /// The upstream's answer as the route's response, its body streamed from the socket.
    static func respond(_ answer: HTTPResponseHead, upstream: Upstream, hop: PortHop) -> Response {
        let status = HTTPResponse.Status(code: Int(answer.status.code), reasonPhrase: answer.status.reasonPhrase)
        return Response(
            status: status, headers: hop.responseHeaders(answer.headers),
            body: ResponseBody { writer in
                // A stream that never ends (events) must not hold the server's shutdown up.
                try await withGracefulShutdownHandler {
                    try await upstream.lease.executeThenClose { inbound, _ in
                        for try await part in inbound {
                            switch part {
                            case .head: continue
                            case .body(let buffer): try await writer.write(buffer)
                            case .end(let trailers):
                                try await writer.finish(trailers.flatMap { PortHop.fields($0, dropping: []) })
                                return
                            }
                        }
                        throw Failure.closed
                    }
                } onGracefulShutdown: {
                    upstream.lease.channel.channel.close(promise: nil)
                }
            })
    }

    // MARK: - Connections

    /// Opens the upstream connection; `initialize` sets its pipeline up on its event loop.
    static func open<Output: Sendable>(
        _ endpoint: PortEndpoint, initialize: @escaping @Sendable (any Channel) throws -> Output
    ) async throws -> Output {
        let bootstrap = ClientBootstrap(group: group).channelOption(.socketOption(.tcp_nodelay), value: 1)
        let setup: @Sendable (any Channel) -> EventLoopFuture<Output> = { channel in
            channel.eventLoop.makeCompletedFuture { try initialize(channel) }
        }
        switch endpoint {
        case .socket(let descriptor):
            return try await bootstrap.withConnectedSocket(descriptor, channelInitializer: setup)
        case .worker(let host, let port, _):
            return try await bootstrap.connectTimeout(.seconds(2)).connect(
                host: host, port: port, channelInitializer: setup)
        }
    }

    /// Closes the connection once nothing moves either way for `idle`.
    static func addTimeout(_ channel: any Channel, idle: Duration) throws {
        let timeout = TimeAmount.nanoseconds(Int64(clamping: idle.components.seconds * 1_000_000_000))
        try channel.pipeline.syncOperations.addHandler(IdleStateHandler(allTimeout: timeout), name: "relay-idle")
        try channel.pipeline.syncOperations.addHandler(IdleCloser(), name: "relay-idle-closer")
    }
}

/// An upstream HTTP connection: the answer's head, taken off the stream as soon as it
/// arrives, and the stream of the rest.
struct Upstream: Sendable {
    let lease: ChannelLease<HTTPClientResponsePart, HTTPClientRequestPart>
    let head: EventLoopFuture<HTTPResponseHead>

    /// Adds the head catcher and the async stream to `channel`'s HTTP pipeline (on its loop).
    init(_ channel: any Channel) throws {
        let promise = channel.eventLoop.makePromise(of: HTTPResponseHead.self)
        try channel.pipeline.syncOperations.addHandler(HeadHandler(promise))
        lease = ChannelLease(try NIOAsyncChannel(wrappingChannelSynchronously: channel))
        head = promise.futureResult
    }
}

/// An async channel used once, through ``executeThenClose(_:)``; when the last reference
/// goes without that (a relay failed first, or the client left before the response's body
/// was written), the channel is closed and its writer finished then.
final class ChannelLease<Inbound: Sendable, Outbound: Sendable>: Sendable {
    let channel: NIOAsyncChannel<Inbound, Outbound>
    private let used = Atomic(false)

    init(_ channel: NIOAsyncChannel<Inbound, Outbound>) { self.channel = channel }

    deinit {
        guard !used.load(ordering: .relaxed) else { return }
        let channel = self.channel
        channel.channel.close(promise: nil)
        // NIO requires the writer finished, which only the scoped call does.
        Task { try? await channel.executeThenClose { _, _ in } }
    }

    func executeThenClose<Result: Sendable>(
        _ body: (NIOAsyncChannelInboundStream<Inbound>, NIOAsyncChannelOutboundWriter<Outbound>) async throws -> Result
    ) async throws -> Result {
        used.store(true, ordering: .relaxed)
        return try await channel.executeThenClose(body)
    }
}

/// Takes the answer's head off the stream for the route, which needs it before it can
/// answer, and passes the body on. The head's promise fails if the connection errs, idles
/// or closes first.
final class HeadHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias InboundOut = HTTPClientResponsePart
    private var promise: EventLoopPromise<HTTPResponseHead>?

    init(_ promise: EventLoopPromise<HTTPResponseHead>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data), let promise {
            self.promise = nil
            promise.succeed(head)
            return
        }
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error)
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(PortRelay.Failure.closed)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) { fail(PortRelay.Failure.closed) }

    private func fail(_ error: any Error) {
        promise?.fail(error)
        promise = nil
    }
}

/// Turns an idle event into a timeout error for whatever waits, and closes the connection.
final class IdleCloser: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is IdleStateHandler.IdleStateEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        context.fireErrorCaught(PortRelay.Failure.timeout)
        context.close(promise: nil)
    }
}
