import Foundation
import Glibc
import Sandbox
import Synchronization
import Testing

/// The pool blocking work runs on: bounded, reused, named, and back to its warm threads
/// after a burst.
@Suite struct BlockingExecutorTests {
    @Test func aBurstRunsAtMostMaxThreadsAtOnceAndShrinksBackToTheWarmOnes() async throws {
        let pool = BlockingExecutor(maxThreads: 4, warmThreads: 1)
        let running = Concurrency()
        let results = try await withThrowingTaskGroup(of: Int.self) { group in
            for i in 0..<20 {
                group.addTask {
                    try await pool.run("test-burst") { () throws -> Int in
                        running.enter()
                        usleep(20_000)
                        running.leave()
                        return i * i
                    }
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.sorted() == (0..<20).map { $0 * $0 })
        #expect(running.most == 4)
        // The threads beyond the warm one leave once the queue is empty.
        for _ in 0..<100 where pool.threadCount > 1 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(pool.threadCount == 1)
    }

    @Test func workRunsOnAThreadNamedForItAndErrorsComeBackTyped() async throws {
        struct Refused: Error, Equatable {}
        let pool = BlockingExecutor(maxThreads: 2, warmThreads: 0)
        let name = try await pool.run("corral-probe") { () throws -> String in
            try String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)
        }
        #expect(name == "corral-probe\n")
        await #expect(throws: Refused()) {
            try await pool.run("corral-probe") { () throws(Refused) -> Int in throw Refused() }
        }
        // A long name is cut to the 15 bytes Linux keeps, not refused.
        let long = try await pool.run("corral-a-very-long-thread-name") { () throws -> String in
            try String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)
        }
        #expect(long == "corral-a-very-l\n")
        for _ in 0..<100 where pool.threadCount > 0 { try await Task.sleep(for: .milliseconds(10)) }
        #expect(pool.threadCount == 0)
    }

    /// Work that waits for later work still finishes while threads are free: each piece
    /// starts at once on an idle or new thread, never behind another.
    @Test func workThatWaitsForLaterWorkDoesNotDeadlock() async throws {
        let pool = BlockingExecutor(maxThreads: 3, warmThreads: 3)
        let gate = DispatchSemaphore(value: 0)
        async let first: Bool = pool.run("waiter") { () -> Bool in gate.wait(timeout: .now() + 10) == .success }
        try await Task.sleep(for: .milliseconds(50))
        await pool.run("opener") { () -> Void in gate.signal() }
        #expect(await first)
    }
}

/// How many pieces of work run at once, and the most seen.
private final class Concurrency: Sendable {
    private let state = Mutex((now: 0, most: 0))
    var most: Int { state.withLock { $0.most } }

    func enter() {
        state.withLock {
            $0.now += 1
            $0.most = max($0.most, $0.now)
        }
    }

    func leave() { state.withLock { $0.now -= 1 } }
}
