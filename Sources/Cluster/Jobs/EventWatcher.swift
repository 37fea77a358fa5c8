import Host
import Sandbox
import Synchronization

/// Waits for new entries on many job event streams at once, over one blocking connection.
///
/// One `XREAD BLOCK` covers every stream someone waits on. When a caller starts waiting on a
/// stream the read in flight does not cover, the watcher pokes its own wake stream (an
/// `XADD` on the command connection); the read returns and is issued again with the new
/// stream. Because the read resumes from the last wake ID it saw, a poke that lands before
/// the read reaches Redis is not lost. No timers, no polling: a waiter resumes the moment
/// its stream gets an entry.
final class EventWatcher: Sendable {
    private struct Waiter {
        var after: StreamID
        /// Event types (`t`) that end the wait; nil for any.
        let kinds: Set<String>?
        let continuation: CheckedContinuation<Bool, any Error>
        let timer: Task<Void, any Error>
    }

    private struct State {
        var waiters: [String: [Int: Waiter]] = [:]
        /// The streams the read in flight covers.
        var watching: Set<String> = []
        var running = false
        var closed = false
        var nextToken = 0
        var wakeID = StreamID.zero
    }

    private let blocking: RedisClient
    private let command: RedisClient
    private let wakeKey: String
    private let interval: Duration
    private let state = Mutex(State())

    init(blocking: RedisClient, command: RedisClient, wakeKey: String, interval: Duration) {
        self.blocking = blocking
        self.command = command
        self.wakeKey = wakeKey
        self.interval = interval
    }

    /// Waits until `key` has an entry after `after` (of one of `kinds`, when given): true
    /// when one arrived, false when `timeout` passed first. Throws when the connection to
    /// Redis broke meanwhile.
    func next(on key: String, after: StreamID, kinds: Set<String>? = nil, timeout: Duration) async throws -> Bool {
        let token = state.withLock { s in
            s.nextToken += 1
            return s.nextToken
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let timer = Task {
                    try await Task.sleep(for: timeout)
                    self.resolve(key, token, .success(false))
                }
                let (accepted, start, poke) = state.withLock { s -> (Bool, Bool, Bool) in
                    guard !s.closed else { return (false, false, false) }
                    s.waiters[key, default: [:]][token] = Waiter(
                        after: after, kinds: kinds, continuation: continuation, timer: timer)
                    let start = !s.running
                    s.running = true
                    return (true, start, !start && !s.watching.contains(key))
                }
                if !accepted {
                    timer.cancel()
                    continuation.resume(throwing: ClusterError.closed)
                } else if start {
                    Task { await self.loop() }
                } else if poke {
                    Task { await self.poke() }
                }
            }
        } onCancel: {
            resolve(key, token, .success(false))
        }
    }

    /// Ends every wait with ``ClusterError/closed`` and stops reading.
    func close() {
        let waiters = state.withLock { s in
            s.closed = true
            defer { s.waiters = [:] }
            return s.waiters.values.flatMap(\.values)
        }
        for waiter in waiters {
            waiter.timer.cancel()
            waiter.continuation.resume(throwing: ClusterError.closed)
        }
    }

    private func resolve(_ key: String, _ token: Int, _ result: Result<Bool, any Error>) {
        let waiter = state.withLock { s in s.waiters[key]?.removeValue(forKey: token) }
        guard let waiter else { return }
        waiter.timer.cancel()
        waiter.continuation.resume(with: result)
    }

    private func poke() async {
        _ = try? await command.pipeline([
            ["XADD", wakeKey, "MAXLEN", "~", "16", "*", "w", "1"], ["PEXPIRE", wakeKey, "600000"],
        ])
    }

    /// Reads while anyone waits; stops when nobody does (a new waiter starts it again).
    private func loop() async {
        while true {
            let plan = state.withLock { s -> (keys: [String], ids: [String], wake: StreamID)? in
                for (key, waiters) in s.waiters where waiters.isEmpty { s.waiters[key] = nil }
                guard !s.closed, !s.waiters.isEmpty else {
                    s.running = false
                    s.watching = []
                    return nil
                }
                let keys = Array(s.waiters.keys)
                s.watching = Set(keys)
                let ids = keys.map { s.waiters[$0]!.values.map(\.after).min()!.description }
                return (keys, ids, s.wakeID)
            }
            guard let plan else { return }
            do {
                let reply = try await blocking.blocking(
                    ["XREAD", "COUNT", "64", "BLOCK", String(interval.milliseconds), "STREAMS", wakeKey] + plan.keys
                        + [plan.wake.description] + plan.ids, for: interval)
                for (key, entries) in reply.streams {
                    guard let last = entries.compactMap({ StreamID($0.id) }).max() else { continue }
                    if key == wakeKey {
                        state.withLock { $0.wakeID = max($0.wakeID, last) }
                    } else {
                        deliver(key, entries, last: last)
                    }
                }
            } catch {
                // Redis is gone: tell every waiter now (they decide whether to retry) rather
                // than leave them hanging until their timeouts.
                let waiters = state.withLock { s in
                    defer { s.waiters = [:] }
                    return s.waiters.values.flatMap(\.values)
                }
                for waiter in waiters {
                    waiter.timer.cancel()
                    waiter.continuation.resume(throwing: error)
                }
            }
        }
    }

    /// Resumes the waiters an entry is for; the others now wait for entries after these.
    private func deliver(_ key: String, _ entries: [StreamEntry], last: StreamID) {
        let ready = state.withLock { s -> [Waiter] in
            guard let waiters = s.waiters[key] else { return [] }
            var ready: [Waiter] = []
            for (token, waiter) in waiters where waiter.after < last {
                let wanted = entries.contains { entry in
                    guard let id = StreamID(entry.id), waiter.after < id else { return false }
                    return waiter.kinds.map { kinds in entry.fields["t"].map(kinds.contains) ?? false } ?? true
                }
                if wanted {
                    ready.append(waiter)
                    s.waiters[key]?[token] = nil
                } else {
                    s.waiters[key]?[token]?.after = last
                }
            }
            return ready
        }
        for waiter in ready {
            waiter.timer.cancel()
            waiter.continuation.resume(returning: true)
        }
    }
}
