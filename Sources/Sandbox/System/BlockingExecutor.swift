import CShim
import Foundation
import Synchronization

/// Runs blocking work (a clone that waits for its child, libcurl, libarchive, `mkdir` in a
/// cgroup tree, a file walk) on threads of its own, never on Swift's cooperative pool, which
/// has as many threads as cores (two on these machines) and would stall every task.
///
/// One pool for the whole process, bounded: threads are reused (no thread creation per
/// spawn or per cache operation), at most ``maxThreads`` run at once (more work waits in
/// order), and all but ``warmThreads`` idle ones exit, so the thread count comes back
/// down after a burst. Each thread takes the name of the work it runs, so `top -H` and
/// `/proc/PID/task/*/comm` say what the host is blocked on.
public final class BlockingExecutor: Sendable {
    /// The process's pool.
    public static let shared = BlockingExecutor(maxThreads: 64, warmThreads: 2)

    /// Threads that may run at once.
    public let maxThreads: Int
    /// Idle threads kept for the next piece of work.
    public let warmThreads: Int

    private struct Work {
        let name: String
        let body: @Sendable () -> Void
    }

    private struct State {
        var queue: [Work] = []
        var head = 0
        var threads = 0
        /// One semaphore per idle thread: new work wakes exactly one of them.
        var idle: [DispatchSemaphore] = []
    }

    private let state = Mutex(State())

    public init(maxThreads: Int, warmThreads: Int) {
        self.maxThreads = max(1, maxThreads)
        self.warmThreads = min(max(0, warmThreads), self.maxThreads)
    }

    /// Threads alive now (running work or idle).
    public var threadCount: Int { state.withLock { $0.threads } }

    /// Runs `body` on a pool thread named `name` (at most 15 bytes show) and returns what it
    /// returned or threw.
    public func run<T: Sendable, E: Error>(_ name: String, _ body: @escaping @Sendable () throws(E) -> T)
        async throws(E) -> T
    {
        let result: Result<T, E> = await withCheckedContinuation { continuation in
            execute(name) {
                do throws(E) {
                    continuation.resume(returning: .success(try body()))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
        }
        return try result.get()
    }

    /// Queues `body` without waiting for it. It starts at once on an idle thread or a new
    /// one; with ``maxThreads`` busy it waits for the first to finish.
    public func execute(_ name: String, _ body: @escaping @Sendable () -> Void) {
        let (waiter, start) = state.withLock { s -> (DispatchSemaphore?, Bool) in
            s.queue.append(Work(name: name, body: body))
            if let waiter = s.idle.popLast() { return (waiter, false) }
            guard s.threads < maxThreads else { return (nil, false) }
            s.threads += 1
            return (nil, true)
        }
        waiter?.signal()
        if start {
            let thread = Thread { [self] in loop() }
            thread.name = "corral-blocking"
            // Enough for libarchive, libcurl and a deep directory walk; the pages are only
            // committed as they are touched.
            thread.stackSize = 4 << 20
            thread.start()
        }
    }

    /// The next work for a pool thread, waiting while there is none; nil: the thread exits.
    private func next() -> Work? {
        while true {
            let (work, waiter) = state.withLock { s -> (Work?, DispatchSemaphore?) in
                if s.head < s.queue.count {
                    let work = s.queue[s.head]
                    s.head += 1
                    if s.head == s.queue.count {
                        s.queue.removeAll(keepingCapacity: true)
                        s.head = 0
                    }
                    return (work, nil)
                }
                // Nothing queued: keep a few warm threads, let the others go.
                guard s.idle.count < warmThreads else {
                    s.threads -= 1
                    return (nil, nil)
                }
                let waiter = DispatchSemaphore(value: 0)
                s.idle.append(waiter)
                return (nil, waiter)
            }
            if let work { return work }
            guard let waiter else { return nil }
            // Woken only by `execute`, after it queued work (another thread may take it
            // first; then this one looks again and waits or exits).
            waiter.wait()
        }
    }

    private func loop() {
        while let work = next() {
            Self.setName(work.name)
            work.body()
        }
    }

    private static func setName(_ name: String) {
        // Linux keeps 15 bytes of a thread's name; prctl copies at most 16 with the NUL.
        var bytes = Array(name.utf8.prefix(15).map { CChar(bitPattern: $0) })
        bytes.append(0)
        _ = cor_set_thread_name(bytes)
    }
}
