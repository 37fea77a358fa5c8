import Foundation
import Logging
import NIOCore
import NIOPosix
import Sandbox
import Synchronization

/// The host's egress proxy: the only way out of a sandbox.
///
/// A sandbox's network namespace has loopback only, so a program that ignores proxy
/// settings gets `ENETUNREACH` at once. The host makes a listening socket *inside* each
/// sandbox's namespace (``NetworkNamespace/listen(port:backlog:)``) at `127.0.0.1:3128`
/// and serves it from here: HTTP `CONNECT` (TLS stays end to end), plain HTTP with an
/// absolute URL, and SOCKS5 with host names, all on the one port. Each connection is
/// checked against the project's policy as it is now (``EgressRules``): the name and
/// port first, then every address the host's resolver gives for the name, so a name that
/// rebinds to a private address is refused. Only then does the host connect, to the
/// checked address, never to the name again.
///
/// One event-loop thread serves every sandbox; names are resolved on a small thread pool
/// (`getaddrinfo` blocks).
public final class EgressProxy: Sendable {
    /// Where the proxy listens inside every sandbox.
    public static let port: UInt16 = 3128

    /// What a job gets when its policy allows any network, so pip, npm, git, curl, wget and
    /// apt use the proxy without a flag. Both spellings: curl reads only the lower-case
    /// `http_proxy`, most others either. A policy's own `[env.set]` wins over these.
    public static let environment: [String: String] = {
        let http = "http://127.0.0.1:\(port)"
        var out: [String: String] = [:]
        for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] { out[name] = http }
        for name in ["ALL_PROXY", "all_proxy"] { out[name] = "socks5h://127.0.0.1:\(port)" }
        for name in ["NO_PROXY", "no_proxy"] { out[name] = "localhost,127.0.0.1,::1" }
        // npm reads its own variables before the common ones.
        out["npm_config_proxy"] = http
        out["npm_config_https_proxy"] = http
        return out
    }()

    /// Reads of up to 1 MiB: a download through the proxy is two copies through user space,
    /// and NIO's default (at most 64 KiB a read) spends more on wake-ups than on copying.
    static let receiveBuffers = AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: 64 * 1024, maximum: 1 << 20)

    let group: MultiThreadedEventLoopGroup
    let resolver: NIOThreadPool
    private let subscribers = Mutex<[UUID: AsyncStream<EgressEvent>.Continuation]>([:])
    let logger = Logger(label: "corral.egress")

    public init(threads: Int = 1, resolverThreads: Int = 2) {
        group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        resolver = NIOThreadPool(numberOfThreads: resolverThreads)
        resolver.start()
    }

    /// Every connection's outcome from now on, for the audit log and metrics.
    public func events() -> AsyncStream<EgressEvent> {
        let (stream, continuation) = AsyncStream.makeStream(
            of: EgressEvent.self, bufferingPolicy: .bufferingNewest(4096))
        let id = UUID()
        subscribers.withLock { $0[id] = continuation }
        continuation.onTermination = { [weak self] _ in _ = self?.subscribers.withLock { $0.removeValue(forKey: id) } }
        return stream
    }

    func publish(_ event: EgressEvent) {
        for continuation in subscribers.withLock({ Array($0.values) }) { continuation.yield(event) }
        if event.decision == .refused {
            logger.info(
                "egress refused",
                metadata: [
                    "project": "\(event.project)", "host": "\(event.host)", "port": "\(event.port)",
                    "rule": "\(event.rule ?? "")",
                ])
        }
    }

    /// Starts serving the proxy inside `namespace` for `project`. `rules` is asked for every
    /// connection (nil: the project is gone, and the connection is refused).
    public func open(
        project: String, namespace: NetworkNamespace, rules: @escaping @Sendable () -> EgressRules?
    ) async throws -> EgressEndpoint {
        let fd = try namespace.listen(port: Self.port)
        let tracker = EgressTracker(project: project)
        let proxy = self
        let bootstrap = ServerBootstrap(group: group)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.recvAllocator, value: Self.receiveBuffers)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture(withResultOf: {
                    guard tracker.adopt(channel) else { throw ChannelError.ioOnClosedChannel }
                    try channel.pipeline.syncOperations.addHandler(
                        ProxyConnectionHandler(proxy: proxy, tracker: tracker, rules: rules))
                })
            }
        let server: any Channel
        do {
            server = try await bootstrap.withBoundSocket(fd).get()
        } catch {
            close(fd)
            throw error
        }
        return EgressEndpoint(server: server, tracker: tracker)
    }

    /// Stops the event loop and the resolver threads; endpoints must be closed first.
    public func shutdown() async {
        try? await group.shutdownGracefully()
        try? await resolver.shutdownGracefully()
        for continuation in subscribers.withLock({ Array($0.values) }) { continuation.finish() }
    }
}

/// The proxy's listener inside one sandbox and the connections it serves.
public final class EgressEndpoint: Sendable {
    let server: any Channel
    let tracker: EgressTracker

    init(server: any Channel, tracker: EgressTracker) {
        self.server = server
        self.tracker = tracker
    }

    /// Connections open through it now.
    public var activeConnections: Int { tracker.active }

    /// Stops listening and closes every connection, both sides.
    public func close() async {
        try? await server.close()
        for channel in tracker.closeAll() { try? await channel.close() }
    }
}

/// One connection's outcome.
public struct EgressEvent: Sendable, Equatable {
    public enum Decision: String, Sendable {
        case allowed, refused
    }

    public let project: String
    /// The host as the program asked for it, and the port.
    public let host: String
    public let port: Int
    /// The address connected to (allowed connections only).
    public let address: String?
    /// `connect`, `http` or `socks`.
    public let kind: String
    public let decision: Decision
    /// The rule that refused (``EgressRefusal/rule``).
    public let rule: String?
    /// Bytes from the sandbox to the host it reached, and back.
    public let bytesOut: UInt64
    public let bytesIn: UInt64
    public let durationMs: Int

    public init(
        project: String, host: String, port: Int, address: String?, kind: String, decision: Decision, rule: String?,
        bytesOut: UInt64, bytesIn: UInt64, durationMs: Int
    ) {
        self.project = project
        self.host = host
        self.port = port
        self.address = address
        self.kind = kind
        self.decision = decision
        self.rule = rule
        self.bytesOut = bytesOut
        self.bytesIn = bytesIn
        self.durationMs = durationMs
    }
}

/// The connections of one endpoint: their count against the policy's cap, the bytes
/// moved in the current hour, and the channels to close with the endpoint.
final class EgressTracker: Sendable {
    let project: String
    private struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        var closed = false
        var active = 0
        var windowStart = ContinuousClock.now
        var bytes: UInt64 = 0
    }
    private let state = Mutex(State())

    init(project: String) { self.project = project }

    var active: Int { state.withLock { $0.active } }

    /// Remembers `channel` until it closes; false once the endpoint is closed.
    func adopt(_ channel: any Channel) -> Bool {
        let key = ObjectIdentifier(channel)
        let ok = state.withLock { s -> Bool in
            guard !s.closed else { return false }
            s.channels[key] = channel
            return true
        }
        if ok {
            channel.closeFuture.whenComplete { _ in self.state.withLock { _ = $0.channels.removeValue(forKey: key) } }
        }
        return ok
    }

    /// Counts a connection in; false if `limit` are open already.
    func open(limit: Int) -> Bool {
        state.withLock { s in
            guard s.active < limit else { return false }
            s.active += 1
            return true
        }
    }

    func release() { state.withLock { $0.active -= 1 } }

    /// Adds `count` bytes to this hour's total; false once it is over `limit`.
    func spend(_ count: Int, limit: UInt64) -> Bool {
        state.withLock { s in
            if ContinuousClock.now - s.windowStart >= .seconds(3600) {
                s.windowStart = .now
                s.bytes = 0
            }
            s.bytes += UInt64(count)
            return s.bytes <= limit
        }
    }

    func withinBudget(limit: UInt64) -> Bool { spend(0, limit: limit) }

    func closeAll() -> [any Channel] {
        state.withLock { s in
            s.closed = true
            return Array(s.channels.values)
        }
    }
}
