import Foundation
import Host
import Logging

/// A worker host of a Corral cluster: takes the jobs routed to it from its Redis stream,
/// runs them in its own ``JobSystem`` and reports output and results back through Redis.
///
/// It keeps a heartbeat and its project leases alive, picks up after dead peers (their
/// queued jobs move to live owners, their running jobs become `interrupted`, never re-run)
/// and, on a graceful ``shutdown(grace:)``, lets running jobs finish, writes its projects
/// back (``beforeRelease``), releases their leases and hands its queued jobs over.
public actor ClusterWorker {
    /// The name other hosts and the API nodes know this host by.
    public nonisolated let host: String
    public nonisolated let configuration: ClusterConfiguration
    /// The local execution engine; cluster jobs run here like any other job.
    public nonisolated let jobs: JobSystem
    public nonisolated let leases: ProjectLeases
    /// Where API nodes can reach this host for calls that are not jobs (file tools), if
    /// it serves any; advertised in the heartbeat.
    public nonisolated let address: String?
    /// Changes every time a worker starts, so a restarted host can tell its own running
    /// jobs from those of its previous life.
    nonisolated let incarnation: String
    nonisolated let redis: RedisClient
    /// Its own connection: `XREADGROUP BLOCK` holds it for seconds at a time.
    nonisolated let reader: RedisClient
    nonisolated let gate: ClusterGate
    nonisolated let keys: ClusterKeys
    var beforeRelease: @Sendable (String) async -> Void
    var hooks: Hooks
    let logger = Logger(label: "corral.cluster")

    enum Phase { case idle, running, draining, stopped, crashed }
    var phase = Phase.idle
    /// Jobs taken from the stream and not yet settled, by cluster job ID.
    var tracked: [String: Tracked] = [:]
    var capacityWaiters: [CheckedContinuation<Void, Never>] = []
    var drainWaiters: [CheckedContinuation<Void, Never>] = []
    var consumer: Task<Void, Never>?
    var renewer: Task<Void, Never>?
    var janitor: Task<Void, Never>?
    /// When this host last failed to reach Redis. Peers had no chance to renew during an
    /// outage either, so nobody is declared dead until a full lease has passed since.
    var troubleAt: ContinuousClock.Instant?

    /// What the host under the worker does at points of the cluster's life.
    public struct Hooks: Sendable {
        /// Before a job of the project is queued here: bring the project's registration up
        /// to date (``ClusterHost`` adopts it from the registry).
        public var prepare: @Sendable (_ project: String) async -> Void
        /// After each renewal: the projects this host holds, as of when the renewal was sent.
        public var leasesRenewed: @Sendable (_ held: Set<String>, _ asOf: ContinuousClock.Instant) async -> Void

        public init(
            prepare: @escaping @Sendable (String) async -> Void = { _ in },
            leasesRenewed: @escaping @Sendable (Set<String>, ContinuousClock.Instant) async -> Void = { _, _ in }
        ) {
            self.prepare = prepare
            self.leasesRenewed = leasesRenewed
        }
    }

    struct Tracked {
        var entry: String
        var local: String?
        /// A cancel that arrived before the local job existed.
        var cancelled = false
    }

    /// The submitter name on local jobs that came from the cluster (the gate looks for it).
    static let submitter = "corral-cluster"

    /// `runner` starts jobs for real (the host's sandbox runner); the worker puts the
    /// cluster's start gate in front of it. `beforeRelease` runs for each project before
    /// its lease is given up on a graceful shutdown: the host writes the workspace back
    /// there, so the next owner materializes the latest changes.
    public init(
        configuration: ClusterConfiguration, host: String, address: String? = nil, runner: any JobRunner,
        limits: JobLimits = JobLimits(), journalPath: String? = nil, hooks: Hooks = Hooks(),
        beforeRelease: @escaping @Sendable (String) async -> Void = { _ in }
    ) throws {
        self.hooks = hooks
        guard !host.isEmpty, !host.contains(where: { $0 == " " || $0 == ":" }) else {
            throw ClusterError.invalidConfiguration(
                "a worker host name must be non-empty, without spaces or colons: \(host)")
        }
        self.host = host
        self.address = address
        self.configuration = configuration
        incarnation = "\(host)-\(UInt64(Date().timeIntervalSince1970 * 1000))-\(UInt32.random(in: 0...UInt32.max))"
        redis = RedisClient(configuration.redis, name: "corral-worker-\(host)")
        reader = RedisClient(configuration.redis, name: "corral-worker-\(host)-jobs")
        keys = configuration.keys
        leases = ProjectLeases(redis: redis, configuration: configuration)
        gate = ClusterGate(redis: redis, configuration: configuration, host: host, incarnation: incarnation)
        // Admission happens in Redis (at most maxInFlight jobs are taken at once); the local
        // queue must never refuse one it was given.
        var local = limits
        local.maxQueued = max(limits.maxQueued, configuration.maxInFlight)
        local.maxQueuedPerProject = local.maxQueued
        jobs = try JobSystem(runner: GatedRunner(inner: runner, gate: gate), limits: local, journalPath: journalPath)
        self.beforeRelease = beforeRelease
    }

    // MARK: - Lifecycle

    /// Sets what the worker calls on its host, for a host built after the worker (its job
    /// system is the worker's, so it cannot exist first). Call before ``start()``.
    public func attach(hooks: Hooks, beforeRelease: @escaping @Sendable (String) async -> Void) {
        self.hooks = hooks
        self.beforeRelease = beforeRelease
    }

    /// Registers the host and starts taking jobs. Jobs left pending for this host by an
    /// earlier life are settled first (queued ones run, running ones become interrupted).
    public func start() async throws {
        guard phase == .idle else { return }
        // The group exists before the heartbeat does, so nothing is routed to a stream
        // nobody reads.
        try await ensureGroup()
        try await leases.renew(for: host, heartbeat: heartbeat)
        phase = .running
        consumer = Task { await self.consume() }
        renewer = Task { await self.renewLoop() }
        janitor = Task { await self.janitorLoop() }
        await sweepOwnPending()
    }

    /// Leaves the cluster gracefully: stops taking jobs, lets running ones finish for up
    /// to `grace` (then cancels them), runs ``beforeRelease`` for every project it holds,
    /// releases the leases and moves the jobs still queued for it to the new owners.
    public func shutdown(grace: Duration) async {
        guard phase == .running else { return }
        phase = .draining
        janitor?.cancel()
        reader.close()
        capacityWaiters.forEach { $0.resume() }
        capacityWaiters = []
        await consumer?.value
        await jobs.shutdown(grace: grace)
        await drained(within: grace + .seconds(10))
        let projects = (try? await leases.projects(of: host)) ?? []
        for project in projects { await beforeRelease(project) }
        renewer?.cancel()
        await renewer?.value
        // No heartbeat: nothing new is routed here. The host stays in the worker set until
        // its stream is empty, so if the hand-over below is cut short a peer finishes it.
        _ = try? await redis.command(["DEL", keys.heartbeat(host)])
        for project in projects { _ = try? await leases.release(project, from: host) }
        _ = try? await rescue(host)
        phase = .stopped
        gate.stop()
        redis.close()
        logger.info("worker \(host) left the cluster; handed over \(projects.count) projects")
    }

    /// Stops dead, as `kill -9` would, for tests of failover: no more heartbeats, renewals,
    /// reads or writes, nothing handed over.
    public func simulateCrash() async {
        phase = .crashed
        gate.stop()
        for task in [consumer, renewer, janitor] { task?.cancel() }
        reader.close()
        redis.close()
        let jobs = self.jobs
        Task { await jobs.shutdown(grace: .zero) }
    }

    /// What the heartbeat key holds: this life's incarnation and the advertised address.
    nonisolated var heartbeat: String { address.map { "\(incarnation) \($0)" } ?? incarnation }

    /// The projects this host holds leases for.
    public func ownedProjects() async throws -> [String] { try await leases.projects(of: host) }

    // MARK: - Periodic work

    /// Heartbeat and lease renewal, every third of the lease, on a task of its own so
    /// slow failover work never delays it.
    private func renewLoop() async {
        var failing = false
        while phase == .running || phase == .draining {
            do {
                let sent = ContinuousClock.now
                let held = try await leases.renew(for: host, heartbeat: heartbeat)
                await hooks.leasesRenewed(Set(held), sent)
                if failing { logger.info("worker \(host): renewing again") }
                failing = false
            } catch {
                if !failing { logger.warning("worker \(host): cannot renew heartbeat and leases: \(error)") }
                failing = true
                troubleAt = .now
            }
            do { try await Task.sleep(for: configuration.leaseTTL / 3) } catch { return }
        }
    }

    /// Entries stuck in this host's pending list, and dead peers, every third of the lease.
    private func janitorLoop() async {
        while phase == .running {
            do { try await Task.sleep(for: configuration.leaseTTL / 3) } catch { return }
            guard phase == .running else { return }
            await sweepOwnPending()
            if let troubleAt, ContinuousClock.now - troubleAt < configuration.leaseTTL { continue }
            do {
                for dead in try await leases.deadWorkers() where dead != host {
                    _ = try await rescue(dead)
                }
            } catch {
                troubleAt = .now
                logger.debug("worker \(host): failover pass failed: \(error)")
            }
        }
    }

    func ensureGroup() async throws {
        do {
            try await redis.command(["XGROUP", "CREATE", keys.jobs(host), ClusterKeys.group, "0", "MKSTREAM"])
        } catch ClusterError.server(let message) where message.hasPrefix("BUSYGROUP") {
            return
        }
    }

    // MARK: - Capacity

    func waitForCapacity() async {
        guard tracked.count >= configuration.maxInFlight else { return }
        await withCheckedContinuation { capacityWaiters.append($0) }
    }

    func untrack(_ id: String) {
        tracked[id] = nil
        if !capacityWaiters.isEmpty { capacityWaiters.removeFirst().resume() }
        if tracked.isEmpty {
            let waiters = drainWaiters
            drainWaiters = []
            waiters.forEach { $0.resume() }
        }
    }

    /// Returns when every job taken has been settled in Redis, or after `timeout`.
    private func drained(within timeout: Duration) async {
        guard !tracked.isEmpty else { return }
        let timer = Task {
            try await Task.sleep(for: timeout)
            self.releaseDrainWaiters()
        }
        await withCheckedContinuation { drainWaiters.append($0) }
        timer.cancel()
    }

    private func releaseDrainWaiters() {
        let waiters = drainWaiters
        drainWaiters = []
        waiters.forEach { $0.resume() }
    }
}
