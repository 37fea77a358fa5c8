import Cluster
import Foundation
import Host
import Synchronization
import TestSupport
import Testing

/// What happens to a project and its jobs when its host dies, leaves, or loses Redis for a
/// while: every accepted job ends exactly once (run, or reported interrupted), never twice
/// and never silently dropped.
@Suite(.serialized, .enabled(if: RedisServer.isAvailable, "needs /usr/bin/redis-server"))
struct ClusterFailoverTests {
    @Test func aDeadHostsProjectsMoveWithinTheLeaseAndItsQueuedJobsRunOnceElsewhere() async throws {
        let f = try ClusterFixture()
        let ttl = f.configuration.leaseTTL
        let (a, _) = try await f.worker("host-a", perProject: 1)
        let (b, _) = try await f.worker("host-b")
        let client = f.client()
        #expect(try await a.leases.acquire("pa", for: "host-a"))
        let running = try await client.submit(JobRequest(project: "pa", command: "block-running"))
        #expect(try await client.waitFor(running.id, state: .running))
        // Taken by host-a but waiting behind the running job in its local queue.
        var queued: [JobRecord] = []
        for i in 0..<3 { queued.append(try await client.submit(JobRequest(project: "pa", command: "queued-\(i)"))) }
        await a.simulateCrash()
        let crashed = ContinuousClock.now
        // Routed to host-a after it died but before its lease ran out: never read by anyone yet.
        let late = try await client.submit(JobRequest(project: "pa", command: "late"))
        #expect(try await client.owner(of: "pa") == "host-a")

        for (i, job) in queued.enumerated() {
            let snap = try await client.wait(job.id, timeout: .seconds(15), untilFinished: true)
            #expect(snap.record.state == .completed)
            #expect(snap.output == "queued-\(i)@host-b\n")
        }
        let moved = ContinuousClock.now - crashed
        #expect(moved < ttl + .seconds(2), "moved after \(moved)")
        #expect(try await client.owner(of: "pa") == "host-b")
        let lateSnap = try await client.wait(late.id, timeout: .seconds(10), untilFinished: true)
        #expect(lateSnap.output == "late@host-b\n")

        let interrupted = try await client.wait(running.id, timeout: .seconds(5), untilFinished: true)
        #expect(interrupted.record.state == .interrupted)
        #expect(
            interrupted.record.error == "the worker host host-a stopped while this job was running; it was not re-run")
        // Exactly once each: the running job only ever on host-a, the others only on host-b.
        #expect(f.ledger.hosts(of: "block-running") == ["host-a"])
        for i in 0..<3 { #expect(f.ledger.hosts(of: "queued-\(i)") == ["host-b"]) }
        #expect(f.ledger.hosts(of: "late") == ["host-b"])
        // Once nothing of host-a is left, the cluster forgets it.
        let redis = RedisClient(f.configuration.redis)
        defer { redis.close() }
        var forgotten = false
        for _ in 0..<50 where !forgotten {
            forgotten = try await redis.command(["SISMEMBER", "corral:workers", "host-a"]) == .integer(0)
            if !forgotten { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(forgotten)
        #expect(try await redis.command(["EXISTS", "corral:jobs:host-a"]) == .integer(0))
        await b.shutdown(grace: .seconds(1))
        client.close()
    }

    @Test func aGracefulShutdownWritesBackBeforeReleasingAndHandsQueuedJobsOver() async throws {
        let f = try ClusterFixture()
        let observer = RedisClient(f.configuration.redis)
        defer { observer.close() }
        let leases = ProjectLeases(redis: observer, configuration: f.configuration)
        let hooks = Locked<[(project: String, owner: String?)]>([])
        let (a, runnerA) = try await f.worker("host-a", perProject: 1) { project in
            let owner = try? await leases.owner(of: project)
            hooks.update { $0.append((project, owner)) }
        }
        let (b, _) = try await f.worker("host-b")
        let client = f.client()
        #expect(try await a.leases.acquire("pa", for: "host-a"))
        #expect(try await a.leases.acquire("pb", for: "host-a"))
        let running = try await client.submit(JobRequest(project: "pa", command: "block-build"))
        #expect(try await client.waitFor(running.id, state: .running))
        let waiting = [
            try await client.submit(JobRequest(project: "pa", command: "after-1")),
            try await client.submit(JobRequest(project: "pa", command: "after-2")),
        ]
        Task {
            try await Task.sleep(for: .milliseconds(300))
            runnerA.finish("block-build")
        }
        await a.shutdown(grace: .seconds(5))

        let built = try await client.wait(running.id, timeout: .seconds(5), untilFinished: true)
        #expect(built.record.state == .completed)
        let hooked = hooks.value
        #expect(hooked.map(\.project).sorted() == ["pa", "pb"])
        #expect(hooked.allSatisfy { $0.owner == "host-a" }, "write-back ran after the lease was released")
        for (i, job) in waiting.enumerated() {
            let snap = try await client.wait(job.id, timeout: .seconds(5), untilFinished: true)
            #expect(snap.output == "after-\(i + 1)@host-b\n")
            #expect(f.ledger.hosts(of: "after-\(i + 1)") == ["host-b"])
        }
        #expect(try await client.owner(of: "pa") == "host-b")
        #expect(try await client.owner(of: "pb") == nil)
        let next = try await client.run(JobRequest(project: "pb", command: "next"), budget: .seconds(5))
        #expect(next.output == "next@host-b\n")
        #expect(try await client.liveWorkers() == ["host-b"])
        #expect(try await observer.command(["SISMEMBER", "corral:workers", "host-a"]) == .integer(0))
        await b.shutdown(grace: .seconds(1))
        client.close()
    }

    /// A submit that reached Redis but lost its reply when the connection broke, with
    /// Redis still unresponsive when the node's outage retry runs out: the job is recorded,
    /// so answering "unavailable, retry" would make a client without an idempotency key run
    /// it twice. The node waits for Redis to say and answers with the job.
    @Test func aSubmitWhoseReplyIsLostIsSettledNotRefused() async throws {
        // Leases outlast the stall, so the late submit still finds its worker alive.
        let f = try ClusterFixture(leaseTTL: .seconds(6))
        let (a, _) = try await f.worker("host-a")
        var impatient = f.configuration
        impatient.redis.commandTimeout = .milliseconds(300)
        impatient.redis.connectTimeout = .milliseconds(300)
        let client = ClusterJobClient(configuration: impatient, outageRetry: .milliseconds(500))
        // Loads the submit script, so the submit under test sends only EVALSHA.
        let first = try await client.submit(JobRequest(project: "pl", command: "warm"))
        #expect(try await client.wait(first.id, timeout: .seconds(5), untilFinished: true).record.state == .completed)
        // A script that holds Redis for 2 s: commands sent meanwhile wait in their sockets
        // and run after it, including those of a connection the client has given up on.
        let staller = RedisClient(f.configuration.redis, name: "staller")
        let stall = Task {
            try await staller.command([
                "EVAL",
                """
                local t = redis.call('TIME'); local start = t[1] * 1000000 + t[2]
                while true do
                  t = redis.call('TIME')
                  if t[1] * 1000000 + t[2] - start > 2000000 then return 1 end
                end
                """, "0",
            ])
        }
        try await Task.sleep(for: .milliseconds(200))
        let started = ContinuousClock.now
        let record = try await client.submit(JobRequest(project: "pl", command: "once"))
        #expect(ContinuousClock.now - started > .milliseconds(1500), "the submit did not meet the stall")
        #expect(try await stall.value == .integer(1))
        let done = try await client.wait(record.id, timeout: .seconds(10), untilFinished: true)
        #expect(done.record.state == .completed)
        #expect(done.output == "once@host-a\n")
        #expect(f.ledger.hosts(of: "once") == ["host-a"])
        let recorded = try await staller.command(["ZCARD", "corral:project:pl:jobs"])
        #expect(recorded == .integer(2), "exactly the warm-up and the one submit are recorded")
        staller.close()
        await a.shutdown(grace: .seconds(1))
        client.close()
    }

    @Test func redisRestartedUnderLoadLosesNothingAcceptedAndRunsNothingTwice() async throws {
        let f = try ClusterFixture(leaseTTL: .seconds(3))
        let (a, _) = try await f.worker("host-a")
        let (b, _) = try await f.worker("host-b")
        // No retrying inside submit: the load generator sees each 503 and retries itself.
        let client = ClusterJobClient(configuration: f.configuration, outageRetry: .zero)
        let accepted = Locked<[String: String]>([:])
        let refusals = Locked(0)
        // A submit in flight when Redis goes away is not refused but settled: it waits for
        // Redis to say whether the job was recorded.
        let settled = Locked(Duration.zero)
        let total = 80
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                // Each submit retries with its idempotency key until Redis takes it.
                for i in 0..<total {
                    let request = JobRequest(
                        project: "p\(i % 8)", command: "job-\(i)", idempotencyKey: "k\(i)", submitter: "load")
                    while true {
                        do {
                            let started = ContinuousClock.now
                            let record = try await client.submit(request)
                            let took = ContinuousClock.now - started
                            settled.update { $0 = max($0, took) }
                            accepted.update { $0[record.id] = request.command }
                            break
                        } catch ClusterError.redisUnavailable(let after) {
                            #expect(after >= 1)
                            refusals.update { $0 += 1 }
                            try await Task.sleep(for: .milliseconds(100))
                        } catch ClusterError.noLiveWorkers(let after) {
                            // Redis is back but the heartbeats lapsed during the outage: the
                            // same 503 with Retry-After, until the workers renew.
                            #expect(after >= 1)
                            try await Task.sleep(for: .milliseconds(100))
                        }
                    }
                    try await Task.sleep(for: .milliseconds(25))
                }
            }
            group.addTask {
                try await Task.sleep(for: .milliseconds(500))
                try f.server.restart(after: 1.0)
            }
            try await group.waitForAll()
        }
        #expect(
            refusals.value > 0 || settled.value > .milliseconds(500),
            "the outage was never seen: no refusal, slowest submit \(settled.value)")
        let jobs = accepted.value
        #expect(jobs.count == total)
        for (id, command) in jobs {
            let snap = try await client.wait(id, timeout: .seconds(20), untilFinished: true)
            #expect(snap.record.state == .completed, "\(command): \(snap.record.state) \(snap.record.error ?? "")")
            #expect(f.ledger.hosts(of: command).count == 1, "\(command) started \(f.ledger.hosts(of: command))")
        }
        await a.shutdown(grace: .seconds(1))
        await b.shutdown(grace: .seconds(1))
        client.close()
    }
}
