import Cluster
import Foundation
import Host
import Sandbox
import Synchronization
import TestSupport
import Testing

/// Two worker hosts and an API node's client in one process, over a real redis-server:
/// routing by project ownership, event-driven waits, exactly-once starts, failover after a
/// host dies, hand-over on a graceful shutdown, and a Redis restart under load.
@Suite(.serialized, .enabled(if: RedisServer.isAvailable, "needs /usr/bin/redis-server"))
struct ClusterTests {
    @Test func jobsForTwentyProjectsSpreadOverBothWorkersAndLandOnTheirOwners() async throws {
        let f = try ClusterFixture()
        let (a, _) = try await f.worker("host-a")
        let (b, _) = try await f.worker("host-b")
        let client = f.client()
        let snaps = try await withThrowingTaskGroup(of: JobSnapshot.self) { group in
            for p in 0..<20 {
                for j in 0..<3 {
                    group.addTask {
                        try await client.run(
                            JobRequest(project: "p\(p)", command: "echo \(p)-\(j)"), budget: .seconds(10))
                    }
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(snaps.count == 60)
        var perHost: [String: Int] = [:]
        for p in 0..<20 {
            let owner = try #require(try await client.owner(of: "p\(p)"))
            perHost[owner, default: 0] += 1
            for j in 0..<3 {
                #expect(f.ledger.hosts(of: "echo \(p)-\(j)") == [owner])
                let snap = try #require(snaps.first { $0.record.request.command == "echo \(p)-\(j)" })
                #expect(snap.record.state == .completed)
                #expect(snap.output == "echo \(p)-\(j)@\(owner)\n")
                #expect(snap.record.result?.exitCode == 0)
            }
        }
        #expect(perHost == ["host-a": 10, "host-b": 10])
        #expect(try await a.ownedProjects().count == 10)
        #expect(try await client.list(project: "p7").count == 3)
        // Settled entries are deleted: a host's stream holds only work not yet done.
        let redis = RedisClient(f.configuration.redis)
        defer { redis.close() }
        for host in ["host-a", "host-b"] {
            #expect(try await redis.command(["XLEN", "corral:jobs:\(host)"]) == .integer(0))
        }
        await a.shutdown(grace: .seconds(1))
        await b.shutdown(grace: .seconds(1))
        client.close()
    }

    /// One token's jobs across many projects once filled the queue every tenant shares; its
    /// cap holds cluster-wide, counts only jobs still queued or running, and spares others.
    @Test func aSubmitterAtItsCapIsRefusedClusterWideUntilOneOfItsJobsEnds() async throws {
        let f = try ClusterFixture()
        let (worker, runner) = try await f.worker("host-a")
        let client = f.client()
        func submit(_ project: String, _ command: String, by submitter: String = "alpha", key: String? = nil)
            async throws -> JobRecord
        {
            try await client.submit(
                JobRequest(
                    project: project, command: command, background: true, idempotencyKey: key, submitter: submitter,
                    submitterCap: 2))
        }
        let first = try await submit("p1", "block-1")
        _ = try await submit("p2", "block-2")
        await #expect(throws: JobError.submitterBusy(submitter: "alpha", limit: 2)) {
            try await submit("p3", "block-3")
        }
        // Another submitter is not held back, and a retry of a queued job still attaches.
        _ = try await submit("p3", "block-other", by: "beta")
        #expect(try await client.waitFor(first.id, state: .running))
        runner.finish("block-1")
        #expect(try await client.waitFor(first.id, state: .completed))
        let third = try await submit("p3", "block-3", key: "k")
        #expect(try await submit("p3", "block-3", key: "k").id == third.id)
        // The same key on another project names another job.
        await #expect(throws: JobError.submitterBusy(submitter: "alpha", limit: 2)) {
            try await submit("p4", "block-4", key: "k")
        }
        for command in ["block-2", "block-3", "block-other"] {
            while runner.execution(command) == nil { try await Task.sleep(for: .milliseconds(20)) }
            runner.finish(command)
        }
        #expect(try await client.waitFor(third.id, state: .completed))
        let fourth = try await submit("p4", "echo four", key: "k")
        #expect(fourth.id != third.id)
        await worker.shutdown(grace: .seconds(1))
        client.close()
    }

    @Test func waitingReturnsOnNewOutputWithACursorAndOnTheEnd() async throws {
        let f = try ClusterFixture()
        let (worker, runner) = try await f.worker("host-a")
        let client = f.client()
        let job = try await client.submit(JobRequest(project: "p", command: "block-chatty", background: true))
        #expect(try await client.waitFor(job.id, state: .running))
        let execution = try #require(runner.execution("block-chatty"))
        Task {
            try await Task.sleep(for: .milliseconds(100))
            execution.onOutput(Sandbox.OutputStream.stdout, Array("one\n".utf8))
        }
        let started = ContinuousClock.now
        let first = try await client.wait(job.id, timeout: .seconds(5), since: 0)
        #expect(ContinuousClock.now - started < .seconds(2))
        #expect(first.output == "one\n")
        #expect(first.cursor == 4)
        execution.onOutput(Sandbox.OutputStream.stderr, Array("two\n".utf8))
        let second = try await client.wait(job.id, timeout: .seconds(5), since: first.cursor)
        #expect(second.output == "two\n")
        #expect(second.cursor == 8)
        let idle = try await client.wait(job.id, timeout: .milliseconds(200), since: second.cursor)
        #expect(idle.output == "")
        #expect(idle.record.state == .running)
        runner.finish("block-chatty", exitCode: 3)
        let end = try await client.wait(job.id, timeout: .seconds(5), since: second.cursor, untilFinished: true)
        #expect(end.record.state == .completed)
        #expect(end.record.result?.exitCode == 3)
        #expect(try await client.snapshot(job.id).output == "one\ntwo\n")
        await worker.shutdown(grace: .seconds(1))
        client.close()
    }

    /// The worker's job system ends the job `interrupted` with `sandbox_died`: the API node
    /// reads the same state, code and error from Redis.
    @Test func aJobWhoseSandboxDiedReachesTheClientWithItsErrorCode() async throws {
        let f = try ClusterFixture()
        let (worker, runner) = try await f.worker("host-a")
        let client = f.client()
        let job = try await client.submit(JobRequest(project: "p", command: "block-dies", background: true))
        #expect(try await client.waitFor(job.id, state: .running))
        runner.finish("block-dies", exitCode: 137, status: .sandboxDied)
        let end = try await client.wait(job.id, timeout: .seconds(5), untilFinished: true)
        #expect(end.record.state == .interrupted)
        #expect(end.record.errorCode == "sandbox_died")
        #expect(
            end.record.error
                == "the sandbox of project p died while the job ran: its init process was killed, and every process of the job with it; the job was not re-run"
        )
        #expect(end.record.result?.status == .sandboxDied)
        await worker.shutdown(grace: .seconds(1))
        client.close()
    }

    @Test func aRetriedSubmitWithTheSameKeyAttachesToTheFirstJob() async throws {
        let f = try ClusterFixture()
        let (worker, _) = try await f.worker("host-a")
        let client = f.client()
        let request = JobRequest(project: "p", command: "make", idempotencyKey: "k1", submitter: "alice")
        let first = try await client.submit(request)
        let again = try await client.submit(request)
        let otherKey = try await client.submit(
            JobRequest(project: "p", command: "make", idempotencyKey: "k2", submitter: "alice"))
        let otherSubmitter = try await client.submit(
            JobRequest(project: "p", command: "make", idempotencyKey: "k1", submitter: "bob"))
        #expect(first.id == again.id)
        #expect(Set([first.id, otherKey.id, otherSubmitter.id]).count == 3)
        for id in [first.id, otherKey.id, otherSubmitter.id] {
            #expect(try await client.wait(id, timeout: .seconds(5), untilFinished: true).record.state == .completed)
        }
        #expect(f.ledger.hosts(of: "make").count == 3)
        await #expect(throws: JobError.invalidRequest("command is empty")) {
            try await client.submit(JobRequest(project: "p", command: ""))
        }
        await #expect(throws: JobError.notFound("nope")) { try await client.snapshot("nope") }
        await worker.shutdown(grace: .seconds(1))
        client.close()
    }

    @Test func cancelStopsAQueuedJobBeforeItStartsAndKillsARunningOne() async throws {
        let f = try ClusterFixture()
        let (worker, _) = try await f.worker("host-a", perProject: 1)
        let client = f.client()
        let running = try await client.submit(JobRequest(project: "p", command: "block-long"))
        #expect(try await client.waitFor(running.id, state: .running))
        let queued = try await client.submit(JobRequest(project: "p", command: "never"))
        let cancelledQueued = try await client.cancel(queued.id)
        #expect(cancelledQueued.record.state == .cancelled)
        #expect(cancelledQueued.record.error == "cancelled before it started")
        let cancelledRunning = try await client.cancel(running.id)
        #expect(cancelledRunning.record.state == .cancelled)
        #expect(cancelledRunning.record.result?.exitCode == 143)
        // The slot is free again: a later job runs, the cancelled one never did.
        let later = try await client.run(JobRequest(project: "p", command: "later"), budget: .seconds(5))
        #expect(later.record.state == .completed)
        #expect(f.ledger.hosts(of: "never").isEmpty)
        await #expect(throws: JobError.notFound("missing")) { try await client.cancel("missing") }
        await worker.shutdown(grace: .seconds(1))
        client.close()
    }

    @Test func withNoLiveWorkerASubmitIsRefusedWithRetryAfter() async throws {
        let f = try ClusterFixture()
        let client = f.client()
        await #expect(throws: ClusterError.noLiveWorkers(retryAfterSeconds: 1)) {
            try await client.submit(JobRequest(project: "p", command: "true"))
        }
        #expect(ClusterError.noLiveWorkers(retryAfterSeconds: 1).httpStatus == 503)
        client.close()
    }

    @Test func aProjectsEpochRisesOnlyWhenItsLeaseChangesHands() async throws {
        let f = try ClusterFixture()
        let redis = RedisClient(f.configuration.redis)
        defer { redis.close() }
        let leases = ProjectLeases(redis: redis, configuration: f.configuration)
        let registry = RedisProjectRegistry(redis: redis, configuration: f.configuration)
        let spec = ProjectRegistration(
            source: "blob:uploads/p/ab.archive", sha256: nil, policy: "default", limits: RequestedLimits(pids: 64))
        // Registered before anyone held it: epoch 0.
        #expect(try await registry.save("p", spec) == 0)
        #expect(try await leases.acquire("p", for: "a"))
        #expect(try await registry.load("p") == ProjectClaim(registration: spec, epoch: 1))
        // Renewing, acquiring again, or taking it back after a release with nobody in
        // between: the same holder, whose copy is current.
        _ = try await leases.renew(for: "a")
        #expect(try await leases.acquire("p", for: "a"))
        #expect(try await leases.release("p", from: "a"))
        #expect(try await leases.acquire("p", for: "a"))
        #expect(try await registry.load("p")?.epoch == 1)
        // Another host in between: each hand-over counts.
        #expect(try await leases.release("p", from: "a"))
        #expect(try await leases.acquire("p", for: "b"))
        #expect(try await registry.load("p")?.epoch == 2)
        #expect(try await leases.acquire("p", for: "a") == false)
        #expect(try await leases.release("p", from: "b"))
        #expect(try await leases.acquire("p", for: "a"))
        #expect(try await registry.load("p")?.epoch == 3)
        // Saving again keeps the epoch; an unknown project has no claim.
        #expect(try await registry.save("p", spec) == 3)
        #expect(try await registry.list() == ["p"])
        #expect(try await registry.load("q") == nil)
    }
}
