import Foundation
import Synchronization

/// A job's live output and a way to wait for it to change, shared between the event loop
/// thread (which appends output) and callers that long-poll.
///
/// Output is kept in memory up to `capacity` bytes; older bytes are dropped and counted,
/// and the whole output is in the job's log file (``JobLog``).
final class JobChannel: Sendable {
    let capacity: Int
    fileprivate let state = Mutex(Buffer())

    struct Buffer {
        var bytes: [UInt8] = []
        /// Absolute offset of `bytes[0]` in the job's whole output.
        var base = 0
        /// Whether the last byte dropped ended a line: then `bytes` starts with a whole one.
        var droppedLineEnd = true
        var version = 0
        var closed = false
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextWaiter = 0
    }

    init(capacity: Int = OutputWindow.bytes) { self.capacity = capacity }

    func append(_ chunk: [UInt8]) {
        let waiters = state.withLock { s in
            s.bytes += chunk
            if s.bytes.count > capacity {
                let drop = s.bytes.count - capacity
                s.droppedLineEnd = s.bytes[drop - 1] == 0x0A
                s.bytes.removeFirst(drop)
                s.base += drop
            }
            return s.wake()
        }
        waiters.forEach { $0.resume() }
    }

    /// Something other than output changed (state, result): wake the waiters.
    func touch(closing: Bool = false) {
        let waiters = state.withLock { s in
            if closing { s.closed = true }
            return s.wake()
        }
        waiters.forEach { $0.resume() }
    }

    var version: Int { state.withLock { $0.version } }

    /// Output from `cursor` on: (text, new cursor, bytes from `cursor` on that are gone).
    /// When some are gone, the text starts at the first whole line kept (within 4 KiB), so
    /// a model never reads the end of a cut line as a line of its own; the bytes of the cut
    /// line count as gone.
    ///
    /// A cursor outside ``JobSnapshot/cursors`` is clamped into it first: callers check the
    /// range, and this keeps a missed check from becoming an overflow trap that would end
    /// the whole host.
    func read(since requested: Int) -> (String, Int, Int) {
        let cursor = min(max(requested, JobSnapshot.cursors.lowerBound), JobSnapshot.cursors.upperBound)
        return state.withLock { s in
            let end = s.base + s.bytes.count
            var from = min(max(cursor, s.base), end)
            if cursor < s.base, !s.droppedLineEnd,
                let newline = s.bytes.prefix(4096).firstIndex(of: 0x0A), newline + 1 < s.bytes.count
            {
                from = s.base + newline + 1
            }
            let skipped = max(0, from - cursor)
            return (String(decoding: s.bytes[(from - s.base)...], as: UTF8.self), end, skipped)
        }
    }

    /// Waits until the version passes `seen` or `timeout` passes, whichever is first.
    func wait(after seen: Int, timeout: Duration) async {
        let token: Int? = state.withLock { s in
            guard s.version == seen, !s.closed else { return nil }
            defer { s.nextWaiter += 1 }
            return s.nextWaiter
        }
        guard let token else { return }
        let timer = Task {
            try? await Task.sleep(for: timeout)
            resume(token)
        }
        await withCheckedContinuation { continuation in
            let early = state.withLock { s -> Bool in
                if s.version != seen || s.closed { return true }
                s.waiters[token] = continuation
                return false
            }
            if early { continuation.resume() }
        }
        timer.cancel()
    }

    private func resume(_ token: Int) {
        state.withLock { $0.waiters.removeValue(forKey: token) }?.resume()
    }
}

extension JobChannel.Buffer {
    fileprivate mutating func wake() -> [CheckedContinuation<Void, Never>] {
        version += 1
        defer { waiters = [:] }
        return Array(waiters.values)
    }
}

extension JobChannel {
    var isClosed: Bool { state.withLock { $0.closed } }

    /// Waits until the job's record is final or `timeout` passes.
    func waitClosed(timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while !isClosed {
            let remaining = deadline - ContinuousClock.now
            if remaining <= .zero { return }
            await wait(after: version, timeout: remaining)
        }
    }
}
