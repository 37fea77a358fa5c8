import Foundation
import NIOCore
import NIOPosix

/// Serves one connection from a sandbox: reads its request, checks it, connects to the
/// checked address, answers, and hands both sockets to a pair of ``RelayHandler``s.
final class ProxyConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum State {
        case reading(greeted: Bool)
        case connecting
        case relaying
        case done
    }

    let proxy: EgressProxy
    let tracker: EgressTracker
    let rules: @Sendable () -> EgressRules?
    private var state = State.reading(greeted: false)
    private var buffer: [UInt8] = []
    private var deadline: Scheduled<Void>?
    private let stats = ConnectionStats()

    /// How long a program may take to send its request: a connection that says nothing
    /// must not hold one of the project's connection slots.
    static let requestTimeout: TimeAmount = .seconds(10)
    static let connectTimeout: TimeAmount = .seconds(10)
    /// Bytes a program may send past its request before the upstream is connected.
    static let maxEarlyBytes = 256 * 1024

    init(proxy: EgressProxy, tracker: EgressTracker, rules: @escaping @Sendable () -> EgressRules?) {
        self.proxy = proxy
        self.tracker = tracker
        self.rules = rules
    }

    func channelActive(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: Self.requestTimeout) {
            let context = loopBound.value
            if case .reading = self.state { self.finish(context, refusal: Self.badRequest("no request within 10 s")) }
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        buffer += incoming.readBytes(length: incoming.readableBytes) ?? []
        switch state {
        case .reading(let greeted): parse(context, greeted: greeted)
        case .connecting:
            if buffer.count > Self.maxEarlyBytes {
                finish(
                    context, refusal: Self.badRequest("more than \(Self.maxEarlyBytes) bytes before the tunnel was up"))
            }
        case .relaying, .done: break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        state = .done
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    // MARK: - The request

    private func parse(_ context: ChannelHandlerContext, greeted: Bool) {
        switch ProxyRequest.parse(buffer, greeted: greeted) {
        case .incomplete:
            return
        case .socksGreeting(let consumed):
            buffer.removeFirst(consumed)
            stats.kind = "socks"
            write(context, [0x05, 0x00])
            state = .reading(greeted: true)
            if !buffer.isEmpty { parse(context, greeted: true) }
        case .invalid(let reason):
            if greeted { stats.kind = "socks" }
            finish(context, refusal: Self.badRequest(reason))
        case .complete(let request, let consumed):
            buffer.removeFirst(consumed)
            deadline?.cancel()
            state = .connecting
            start(context, request)
        }
    }

    private func start(_ context: ChannelHandlerContext, _ request: ProxyRequest) {
        let (host, port): (String, Int)
        switch request {
        case .connect(let h, let p): (host, port, stats.kind) = (h, p, "connect")
        case .http(let h, let p, _): (host, port, stats.kind) = (h, p, "http")
        case .socks(let h, let p): (host, port, stats.kind) = (h, p, "socks")
        }
        stats.host = host
        stats.port = port
        guard let rules = rules() else {
            return finish(context, refusal: EgressRefusal(rule: "gone", message: "the project is gone"))
        }
        if let refusal = rules.refusal(host: host, port: port) { return finish(context, refusal: refusal) }
        guard tracker.withinBudget(limit: rules.maxBytesPerHour) else {
            return finish(
                context,
                refusal: EgressRefusal(
                    rule: "byte_cap",
                    message:
                        "the project moved more than \(rules.maxBytesPerHour) bytes through the proxy this hour ([\(rules.section)] max_bytes_per_hour of policy \"\(rules.policy)\")"
                ))
        }
        guard tracker.open(limit: rules.maxConnections) else {
            return finish(
                context,
                refusal: EgressRefusal(
                    rule: "connection_cap",
                    message:
                        "the project has \(rules.maxConnections) connections open through the proxy, its most ([\(rules.section)] max_connections of policy \"\(rules.policy)\"); close some first"
                ))
        }
        stats.counted = true
        let tracker = self.tracker
        context.channel.closeFuture.whenComplete { _ in tracker.release() }
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let addresses: EventLoopFuture<[IPAddress]>
        if let literal = IPAddress(host) {
            addresses = context.eventLoop.makeSucceededFuture([literal])
        } else {
            addresses = proxy.resolver.runIfActive(eventLoop: context.eventLoop) { IPAddress.resolve(host) }
        }
        addresses.assumeIsolated().whenComplete { result in
            let context = loopBound.value
            guard case .connecting = self.state else { return }
            let resolved = (try? result.get()) ?? []
            if resolved.isEmpty {
                return self.finish(
                    context, refusal: EgressRefusal(rule: "unresolved", message: "\(host) does not resolve on the host")
                )
            }
            var permitted: [IPAddress] = []
            var firstRefusal: EgressRefusal?
            for address in resolved {
                if let refusal = rules.refusal(host: host, address: address) {
                    firstRefusal = firstRefusal ?? refusal
                } else if !permitted.contains(address) {
                    permitted.append(address)
                }
            }
            // Every address must pass: a name that answers with one public and one private
            // address is a rebinding attempt as often as not.
            if let firstRefusal { return self.finish(context, refusal: firstRefusal) }
            self.connect(context, request, rules: rules, to: permitted, port: port)
        }
    }

    private func connect(
        _ context: ChannelHandlerContext, _ request: ProxyRequest, rules: EgressRules, to addresses: [IPAddress],
        port: Int
    ) {
        guard let address = addresses.first else {
            return finish(
                context,
                refusal: EgressRefusal(
                    rule: "unreachable", message: "\(stats.host):\(port) refused the connection or did not answer"))
        }
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let target: SocketAddress
        do {
            target = try SocketAddress(ipAddress: address.description, port: port)
        } catch {
            return connect(context, request, rules: rules, to: Array(addresses.dropFirst()), port: port)
        }
        ClientBootstrap(group: context.eventLoop)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.recvAllocator, value: EgressProxy.receiveBuffers)
            .connectTimeout(Self.connectTimeout)
            .connect(to: target)
            .assumeIsolated()
            .whenComplete { result in
                let context = loopBound.value
                switch result {
                case .failure:
                    self.connect(context, request, rules: rules, to: Array(addresses.dropFirst()), port: port)
                case .success(let upstream):
                    guard case .connecting = self.state, context.channel.isActive, self.tracker.adopt(upstream) else {
                        upstream.close(promise: nil)
                        return
                    }
                    self.stats.address = address.description
                    self.relay(context, request, upstream: upstream, limit: rules.maxBytesPerHour)
                }
            }
    }

    private func relay(_ context: ChannelHandlerContext, _ request: ProxyRequest, upstream: any Channel, limit: UInt64)
    {
        state = .relaying
        switch request {
        case .connect: write(context, Array("HTTP/1.1 200 Connection established\r\n\r\n".utf8))
        case .socks: write(context, [0x05, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0])
        case .http: break
        }
        var early: [UInt8] = []
        if case .http(_, _, let head) = request { early = head }
        early += buffer
        buffer = []
        let tracker = self.tracker
        let stats = self.stats
        let inside = RelayHandler { count in
            stats.bytesOut += UInt64(count)
            return tracker.spend(count, limit: limit)
        }
        let outside = RelayHandler { count in
            stats.bytesIn += UInt64(count)
            return tracker.spend(count, limit: limit)
        }
        inside.partner = outside
        outside.partner = inside
        do {
            try upstream.pipeline.syncOperations.addHandler(outside)
            try context.pipeline.syncOperations.addHandler(inside)
        } catch {
            upstream.close(promise: nil)
            context.close(promise: nil)
            return
        }
        if !early.isEmpty {
            stats.bytesOut += UInt64(early.count)
            _ = tracker.spend(early.count, limit: limit)
            upstream.writeAndFlush(ByteBuffer(bytes: early), promise: nil)
        }
        let proxy = self.proxy
        let project = tracker.project
        context.channel.closeFuture.whenComplete { _ in
            upstream.close(promise: nil)
            proxy.publish(stats.event(project: project, decision: .allowed, rule: nil))
        }
        context.flush()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    // MARK: - Answers

    private func write(_ context: ChannelHandlerContext, _ bytes: [UInt8]) {
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: bytes)), promise: nil)
    }

    static func badRequest(_ reason: String) -> EgressRefusal { EgressRefusal(rule: "bad_request", message: reason) }

    /// Refuses the connection the way its protocol understands, then closes it.
    private func finish(_ context: ChannelHandlerContext, refusal: EgressRefusal) {
        guard case .done = state else {
            state = .done
            deadline?.cancel()
            let reply: [UInt8]
            if stats.kind == "socks" {
                let code: UInt8 =
                    switch refusal.rule {
                    case "bad_request": 0x01
                    case "unresolved": 0x04
                    case "unreachable": 0x05
                    default: 0x02
                    }
                reply = [0x05, code, 0x00, 0x01, 0, 0, 0, 0, 0, 0]
            } else {
                let status =
                    switch refusal.rule {
                    case "bad_request": "400 Bad Request"
                    case "connection_cap", "byte_cap": "429 Too Many Requests"
                    case "unresolved", "unreachable": "502 Bad Gateway"
                    default: "403 Forbidden"
                    }
                let target = stats.host.isEmpty ? "" : " \(stats.host):\(stats.port)"
                let body = "corral egress: refused\(target): \(refusal.message)\n"
                reply = Array(
                    ("HTTP/1.1 \(status)\r\nContent-Type: text/plain; charset=utf-8\r\n"
                        + "X-Corral-Egress-Rule: \(refusal.rule)\r\nContent-Length: \(body.utf8.count)\r\n"
                        + "Connection: close\r\n\r\n\(body)").utf8)
            }
            proxy.publish(stats.event(project: tracker.project, decision: .refused, rule: refusal.rule))
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: reply))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
            return
        }
    }
}

/// What one connection did, for its ``EgressEvent``. Touched on its event loop only.
final class ConnectionStats: @unchecked Sendable {
    var kind = "http"
    var host = ""
    var port = 0
    var address: String?
    var counted = false
    var bytesOut: UInt64 = 0
    var bytesIn: UInt64 = 0
    let started = ContinuousClock.now

    func event(project: String, decision: EgressEvent.Decision, rule: String?) -> EgressEvent {
        EgressEvent(
            project: project, host: host, port: port, address: address, kind: kind, decision: decision, rule: rule,
            bytesOut: bytesOut, bytesIn: bytesIn, durationMs: Int((ContinuousClock.now - started).millisecondsRoundedUp)
        )
    }
}

/// One side of a relayed connection: what it reads, its partner writes, with back-pressure
/// (it stops reading while the partner cannot write) and half-closes passed through (a
/// client that shuts down its sending side still gets the whole answer).
final class RelayHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    var partner: RelayHandler?
    private var context: ChannelHandlerContext?
    private var readPending = false
    private var inputClosed = false
    /// Counts bytes read on this side; false stops the relay (the byte cap).
    private let spend: (Int) -> Bool

    init(spend: @escaping (Int) -> Bool) { self.spend = spend }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        guard spend(bytes.readableBytes) else {
            context.close(promise: nil)
            return
        }
        partner?.context?.write(wrapOutboundOut(bytes), promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) { partner?.context?.flush() }

    func channelInactive(context: ChannelHandlerContext) {
        partner?.context?.close(promise: nil)
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let event = event as? ChannelEvent, case .inputClosed = event else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        inputClosed = true
        guard let partner, let other = partner.context else { return context.close(promise: nil) }
        if partner.inputClosed {
            context.close(promise: nil)
            other.close(promise: nil)
        } else {
            other.close(mode: .output, promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.resumeReading() }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if let other = partner?.context, !other.channel.isWritable {
            readPending = true
            return
        }
        context.read()
    }

    private func resumeReading() {
        guard readPending, let context else { return }
        readPending = false
        context.read()
    }
}
