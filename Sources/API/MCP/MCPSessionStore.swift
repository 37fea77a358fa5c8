import Synchronization

/// Why an MCP session ended.
public enum MCPSessionEnd: String, Sendable, CaseIterable {
    /// The client sent `DELETE` with its `Mcp-Session-Id`.
    case deleted
    /// No request named it for ``APILimits/mcpSessionIdleTimeout`` (and none was in flight).
    case expired
    /// Its token opened a session while holding ``APILimits/maxMCPSessionsPerPrincipal``:
    /// the token's least recently used session made room.
    case evicted
    /// The server is stopping.
    case shutdown
}

/// One live MCP session: the project and the token (principal name) it belongs to.
public struct MCPSession: Sendable, Hashable {
    /// `Mcp-Session-Id`: this store's tag, `-`, and 128 random bits, all lowercase hex.
    public let id: String
    public let project: String
    /// The token's name; only requests with the same token may use the session.
    public let principal: String

    /// The key the file tools keep this session's read-state under (`stale_file`): the token
    /// and the session, so two sessions on one token never share what they have read.
    public var caller: String { principal + "/mcp:" + id }
}

/// Runs when a session ends, however it ends (``MCPSessionEnd``), after it left the store:
/// no request can find it any more, though one that found it earlier may still be running.
public typealias MCPSessionEndHook = @Sendable (MCPSession, MCPSessionEnd) async -> Void

/// The MCP sessions of this API server, in its memory (docs/API.md, "Tool gateway and MCP";
/// docs/CLUSTER.md for why sessions are node-local).
///
/// Bounded two ways. A token holds at most `maxPerPrincipal` sessions: one more ends one of
/// its own (``MCPSessionEnd/evicted``): a session no request has named yet, else its least
/// recently used. So a client that vanished without a `DELETE` never locks its token out, a
/// stateless client that initializes and ignores the header never pushes out a session in
/// use, and a token only ever pushes out its own sessions.
/// The server holds at most `maxSessions`: one more is refused (``MCPSessionsFull``, 503
/// with `Retry-After`) rather than ending another tenant's session. A session no request
/// names for `idleTimeout` expires, unless a request of it is still running.
///
/// Resources a session owns hang off ``onEnd(_:)``: each hook runs once for every session
/// that ends, whether deleted, expired, evicted or at shutdown, so keying a resource by
/// ``MCPSession/id`` and freeing it in a hook is enough to never leak it.
public final class MCPSessionStore: Sendable {
    private struct Entry {
        let session: MCPSession
        var lastUsed: ContinuousClock.Instant
        /// Requests of this session running now; a session never expires under one.
        var inFlight = 0
        /// Whether a request has named it since its `initialize`.
        var named = false

        /// Which of a token's sessions makes room first: one never named (a client that
        /// initializes and goes on without the header), then the least recently used.
        static func before(_ a: Entry, _ b: Entry) -> Bool {
            a.named != b.named ? !a.named : a.lastUsed < b.lastUsed
        }
    }

    private struct State {
        var live: [String: Entry] = [:]
        /// Recently ended sessions, so a 404 can say why (bounded, oldest forgotten first).
        var ended: [String: (session: MCPSession, reason: MCPSessionEnd)] = [:]
        var endedOrder: [String] = []
        var hooks: [MCPSessionEndHook] = []
    }

    private let state = Mutex(State())
    public let maxSessions: Int
    public let maxPerPrincipal: Int
    public let idleTimeout: Duration
    /// Eight hex digits, random per store, that begin each of its ids: a request naming an
    /// id with another tag was sent to the wrong server (or to this one before a restart).
    public let tag: String
    private let now: @Sendable () -> ContinuousClock.Instant
    static let rememberedEnds = 1024

    /// `now` is for tests that move time by hand.
    public init(
        maxSessions: Int = 10_000, maxPerPrincipal: Int = 256, idleTimeout: Duration = .seconds(3600),
        now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }
    ) {
        self.maxSessions = max(1, maxSessions)
        self.maxPerPrincipal = max(1, maxPerPrincipal)
        self.idleTimeout = idleTimeout
        self.now = now
        var random = SystemRandomNumberGenerator()
        tag = Self.hex(UInt64(random.next() as UInt32), digits: 8)
    }

    /// A store bounded as `limits` say.
    public convenience init(limits: APILimits) {
        self.init(
            maxSessions: limits.maxMCPSessions, maxPerPrincipal: limits.maxMCPSessionsPerPrincipal,
            idleTimeout: limits.mcpSessionIdleTimeout)
    }

    /// Adds a hook every ending session goes through; hooks run in the order added, one
    /// session at a time, and are awaited (a `DELETE` answers once they are done).
    public func onEnd(_ hook: @escaping MCPSessionEndHook) {
        state.withLock { $0.hooks.append(hook) }
    }

    /// The sessions live now.
    public var sessions: [MCPSession] { state.withLock { $0.live.values.map(\.session) } }

    public var count: Int { state.withLock { $0.live.count } }

    // MARK: - Sessions

    /// Opens a session of `principal` on `project` (an `initialize` without a session id).
    func open(project: String, principal: String) async throws(MCPSessionsFull) -> MCPSession {
        let now = now()
        let outcome = state.withLock { state -> Result<(MCPSession, [Ended]), MCPSessionsFull> in
            var ended = expire(&state, now: now)
            var own = state.live.values.filter { $0.session.principal == principal }
            while own.count >= maxPerPrincipal, let oldest = own.min(by: Entry.before) {
                if let gone = end(&state, oldest.session.id, .evicted) { ended.append(gone) }
                own.removeAll { $0.session.id == oldest.session.id }
            }
            guard state.live.count < maxSessions else {
                return .failure(MCPSessionsFull(limit: maxSessions, retryAfter: retryAfter(state, now: now)))
            }
            var id = newID()
            while state.live[id] != nil { id = newID() }
            let session = MCPSession(id: id, project: project, principal: principal)
            state.live[id] = Entry(session: session, lastUsed: now)
            return .success((session, ended))
        }
        switch outcome {
        case .failure(let full): throw full
        case .success(let (session, ended)):
            await run(ended)
            return session
        }
    }

    /// The live session `id` names for a request of `principal` on `project`, counted as in
    /// flight until ``finish(_:)``; or why there is none. Another project's or token's
    /// session is ``MCPSessionMiss/unknown``, exactly as an id never issued.
    func begin(_ id: String, project: String, principal: String) async -> Result<MCPSession, MCPSessionMiss> {
        let now = now()
        let (result, ended) = state.withLock { state -> (Result<MCPSession, MCPSessionMiss>, [Ended]) in
            if let miss = check(id, project: project, principal: principal, state) { return (.failure(miss), []) }
            guard var entry = state.live[id] else { return (.failure(.unknown), []) }
            if entry.inFlight == 0, now - entry.lastUsed >= idleTimeout {
                return (.failure(.ended(.expired)), end(&state, id, .expired).map { [$0] } ?? [])
            }
            entry.inFlight += 1
            entry.named = true
            entry.lastUsed = now
            state.live[id] = entry
            return (.success(entry.session), [])
        }
        await run(ended)
        return result
    }

    /// A request that ``begin(_:project:principal:)`` let through is done.
    func finish(_ id: String) {
        let now = now()
        state.withLock { state in
            guard var entry = state.live[id] else { return }
            entry.inFlight = max(0, entry.inFlight - 1)
            entry.lastUsed = now
            state.live[id] = entry
        }
    }

    /// Ends session `id` at its client's request (`DELETE`); nil once it has ended and its
    /// hooks have run, else why there was no such session.
    func delete(_ id: String, project: String, principal: String) async -> MCPSessionMiss? {
        let outcome = state.withLock { state -> Result<Ended, MCPSessionMiss> in
            if let miss = check(id, project: project, principal: principal, state) { return .failure(miss) }
            guard let ended = end(&state, id, .deleted) else { return .failure(.unknown) }
            return .success(ended)
        }
        switch outcome {
        case .failure(let miss): return miss
        case .success(let ended):
            await run([ended])
            return nil
        }
    }

    /// Ends every session idle for ``idleTimeout`` with none of its requests running; the
    /// number ended.
    @discardableResult public func sweep() async -> Int {
        let now = now()
        let ended = state.withLock { expire(&$0, now: now) }
        await run(ended)
        return ended.count
    }

    /// Ends every session, for `reason` (``MCPSessionEnd/shutdown`` when the server stops).
    public func endAll(_ reason: MCPSessionEnd) async {
        let ended = state.withLock { state in
            state.live.keys.sorted().compactMap { end(&state, $0, reason) }
        }
        await run(ended)
    }

    // MARK: - Under the lock

    private typealias Ended = (session: MCPSession, reason: MCPSessionEnd)

    /// Why `id` cannot be a live session of `principal` on `project`, when that is clear
    /// without the live table's entry being the caller's.
    private func check(_ id: String, project: String, principal: String, _ state: State) -> MCPSessionMiss? {
        guard Self.isWellFormed(id) else { return .unknown }
        guard id.hasPrefix(tag) else { return .otherServer }
        if let entry = state.live[id] {
            return entry.session.project == project && entry.session.principal == principal ? nil : .unknown
        }
        if let gone = state.ended[id], gone.session.project == project, gone.session.principal == principal {
            return .ended(gone.reason)
        }
        return .unknown
    }

    private func end(_ state: inout State, _ id: String, _ reason: MCPSessionEnd) -> Ended? {
        guard let entry = state.live.removeValue(forKey: id) else { return nil }
        state.ended[id] = (entry.session, reason)
        state.endedOrder.append(id)
        if state.endedOrder.count > Self.rememberedEnds {
            state.ended[state.endedOrder.removeFirst()] = nil
        }
        return (entry.session, reason)
    }

    private func expire(_ state: inout State, now: ContinuousClock.Instant) -> [Ended] {
        let idle = state.live.values.filter { $0.inFlight == 0 && now - $0.lastUsed >= idleTimeout }
        return idle.map(\.session.id).sorted().compactMap { end(&state, $0, .expired) }
    }

    /// Whole seconds until the first session may expire (at least 1).
    private func retryAfter(_ state: State, now: ContinuousClock.Instant) -> Int {
        let waits = state.live.values.filter { $0.inFlight == 0 }.map { $0.lastUsed + idleTimeout - now }
        let wait = waits.min() ?? idleTimeout
        return max(1, Int((Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18).rounded(.up)))
    }

    // MARK: - Ids

    private func newID() -> String {
        var random = SystemRandomNumberGenerator()
        return tag + "-" + Self.hex(random.next(), digits: 16) + Self.hex(random.next(), digits: 16)
    }

    /// Eight lowercase hex digits, `-`, 32 lowercase hex digits.
    static func isWellFormed(_ id: String) -> Bool {
        let bytes = Array(id.utf8)
        guard bytes.count == 41, bytes[8] == UInt8(ascii: "-") else { return false }
        return bytes.enumerated().allSatisfy { index, byte in
            index == 8 || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
        }
    }

    private static func hex(_ value: UInt64, digits: Int) -> String {
        let text = String(value, radix: 16)
        return String(repeating: "0", count: max(0, digits - text.count)) + text
    }

    private func run(_ ended: [Ended]) async {
        guard !ended.isEmpty else { return }
        let hooks = state.withLock { $0.hooks }
        for (session, reason) in ended {
            for hook in hooks { await hook(session, reason) }
        }
    }
}

/// Why a request's `Mcp-Session-Id` names no session it may use: each is a 404, after which
/// the client must start a new session with `initialize`.
enum MCPSessionMiss: Error, Equatable, Sendable {
    /// Never issued here, malformed, or another project's or token's.
    case unknown
    /// Issued by another API server, or by this one before a restart.
    case otherServer
    /// It was this caller's, and it ended.
    case ended(MCPSessionEnd)

    /// What the 404 says, with `store`'s limits.
    func message(_ store: MCPSessionStore) -> String {
        let restart = "start a new session with initialize (without Mcp-Session-Id)"
        switch self {
        case .unknown:
            return "no such MCP session for this token and project; \(restart)"
        case .otherServer:
            return "this MCP session was opened on another Corral API server (another node, or this one before a "
                + "restart) and sessions live in the memory of the server that opened them; \(restart). Behind a load "
                + "balancer, route requests by their Mcp-Session-Id header (docs/CLUSTER.md)"
        case .ended(.deleted): return "this MCP session was ended by a DELETE; \(restart)"
        case .ended(.expired):
            return
                "this MCP session expired after \(store.idleTimeout.components.seconds) s without a request; \(restart)"
        case .ended(.evicted):
            return
                "this MCP session was ended because its token opened another while holding \(store.maxPerPrincipal), "
                + "the most it may (the least recently used goes first); \(restart)"
        case .ended(.shutdown): return "this MCP session ended when the server stopped; \(restart)"
        }
    }

    /// For `corral_mcp_session_misses_total{why}`.
    var label: String {
        switch self {
        case .unknown: "unknown"
        case .otherServer: "other_server"
        case .ended(let reason): reason.rawValue
        }
    }
}

/// The server holds ``MCPSessionStore/maxSessions`` sessions: a new one is refused.
struct MCPSessionsFull: Error, Sendable {
    let limit: Int
    /// Seconds until the first idle session may expire.
    let retryAfter: Int

    var message: String {
        "this server holds \(limit) MCP sessions, its limit; retry in \(retryAfter) s, or use the endpoint "
            + "without a session (no Mcp-Session-Id)"
    }
}
