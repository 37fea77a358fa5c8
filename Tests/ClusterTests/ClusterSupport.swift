import Cluster
import Foundation
import Host
import Sandbox
import Synchronization
import TestSupport

/// Every command any worker of a test cluster started, and where, so a test can prove a
/// job ran exactly once and on the right host.
final class ClusterLedger: Sendable {
    private let starts = Mutex<[(command: String, host: String)]>([])

    func record(_ command: String, on host: String) { starts.withLock { $0.append((command, host)) } }

    /// The hosts `command` started on, once per start.
    func hosts(of command: String) -> [String] { starts.withLock { $0.filter { $0.command == command }.map(\.host) } }

    var all: [(command: String, host: String)] { starts.withLock { $0 } }
}

/// A runner whose commands end at once, printing `COMMAND@HOST`, except those starting with
/// `block`, which run until the test finishes or cancels them.
final class ClusterFakeRunner: JobRunner, @unchecked Sendable {
    let host: String
    let ledger: ClusterLedger
    let executions = Mutex<[String: FakeExecution]>([:])

    init(host: String, ledger: ClusterLedger) {
        self.host = host
        self.ledger = ledger
    }

    func start(
        _ request: JobRequest, jobID: String, onOutput: @escaping @Sendable (Sandbox.OutputStream, [UInt8]) -> Void
    ) async throws -> any JobExecution {
        ledger.record(request.command, on: host)
        let execution = FakeExecution(onOutput: onOutput)
        executions.withLock { $0[request.command] = execution }
        if !request.command.hasPrefix("block") {
            onOutput(.stdout, Array("\(request.command)@\(host)\n".utf8))
            execution.end(exitCode: 0, status: .completed)
        }
        return execution
    }

    func execution(_ command: String) -> FakeExecution? { executions.withLock { $0[command] } }

    /// Ends `command`'s execution, waiting (up to 10 s) for the worker to start it: a job
    /// reads `running` in Redis a moment before its execution exists here.
    func finish(_ command: String, exitCode: Int32 = 0, status: JobResult.Status = .completed) {
        for _ in 0..<1000 {
            if let running = execution(command) {
                running.end(exitCode: exitCode, status: status)
                return
            }
            usleep(10_000)
        }
    }
}

/// A redis-server of its own and cluster settings with short leases, so failover happens
/// within a test's patience.
struct ClusterFixture {
    let server: RedisServer
    let configuration: ClusterConfiguration
    let ledger = ClusterLedger()

    init(leaseTTL: Duration = .milliseconds(1500)) throws {
        server = try RedisServer()
        var redis = try RedisConfiguration(url: server.url)
        redis.maxBackoff = .milliseconds(200)
        configuration = ClusterConfiguration(redis: redis, leaseTTL: leaseTTL, blockInterval: .seconds(1))
    }

    func worker(
        _ host: String, perProject: Int = 4, beforeRelease: @escaping @Sendable (String) async -> Void = { _ in }
    ) async throws -> (ClusterWorker, ClusterFakeRunner) {
        let runner = ClusterFakeRunner(host: host, ledger: ledger)
        let worker = try ClusterWorker(
            configuration: configuration, host: host, runner: runner,
            limits: JobLimits(perProject: [.short: perProject, .long: perProject]), beforeRelease: beforeRelease)
        try await worker.start()
        return (worker, runner)
    }

    func client() -> ClusterJobClient { ClusterJobClient(configuration: configuration) }
}

extension ClusterJobClient {
    /// Waits (test-side, briefly polling) until the job is in `state`.
    func waitFor(_ id: String, state: JobState, seconds: Double = 10) async throws -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline {
            if try await snapshot(id).record.state == state { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }
}

/// A value shared between a test and the tasks it starts.
final class Locked<Value: Sendable>: Sendable {
    private let state: Mutex<Value>
    init(_ value: Value) { state = Mutex(value) }
    var value: Value { state.withLock { $0 } }
    func update(_ body: (inout Value) -> Void) { state.withLock { body(&$0) } }
}
