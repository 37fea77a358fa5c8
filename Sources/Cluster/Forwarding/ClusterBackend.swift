import Foundation
import Host
import Sandbox

/// The backend of `corral api`, a stateless node of a cluster: jobs go through Redis
/// (``ClusterJobClient``), project calls are forwarded over HTTP to the worker host that
/// owns the project (leasing it to the least-loaded live worker first when nobody does),
/// and registrations are read from the cluster's registry. The node keeps no state, so
/// any node answers for any project or job.
public struct ClusterBackend: HostBackend {
    public let jobs: ClusterJobClient
    let registry: RedisProjectRegistry
    let workers: WorkerClient
    private let registryClient: RedisClient
    /// The workers' `--default-policy`. The node checks each agent's `policies` before it
    /// forwards a registration (the worker sees only the worker token), so it must know
    /// which policy a registration naming none gets.
    public let defaultPolicy: String

    /// `workerToken` is an admin token of the workers' API, sent with every forwarded call.
    public init(
        configuration: ClusterConfiguration, workerToken: String?, node: String? = nil,
        defaultPolicy: String = "default"
    ) {
        self.defaultPolicy = defaultPolicy
        jobs = ClusterJobClient(configuration: configuration, node: node)
        registryClient = RedisClient(configuration.redis, name: "corral-api-registry")
        registry = RedisProjectRegistry(redis: registryClient, configuration: configuration)
        workers = WorkerClient(token: workerToken)
    }

    // MARK: - Forwarding

    /// The base URL of the project's owner, assigning one if nobody owns it.
    func owner(of id: String) async throws -> String {
        try await address(of: try await jobs.route(id))
    }

    /// The base URL of the project's owner; nil when nobody owns it (nothing is leased).
    func currentOwner(of id: String) async throws -> String? {
        guard let host = try await jobs.owner(of: id) else { return nil }
        return try await address(of: host)
    }

    private func address(of host: String) async throws -> String {
        guard let address = try await jobs.address(of: host) else {
            throw ClusterError.workerUnreachable("worker \(host) advertises no address")
        }
        return address
    }

    /// Sends a call to the project's owner; a refusal comes back as the owner's error.
    /// `timeout` replaces the worker client's for a call that waits on the owner longer.
    func forward(
        _ id: String, _ method: String, _ path: String, query: [(String, String)] = [],
        headers: [(String, String)] = [], body: [UInt8]? = nil, timeout: Duration? = nil,
        onChunk: (@Sendable ([UInt8]) -> Void)? = nil
    ) async throws -> WorkerResponse {
        try await send(
            to: try await owner(of: id), method, path, query: query, headers: headers, body: body, timeout: timeout,
            onChunk: onChunk)
    }

    /// Sends a call to the worker at `base`, with the caller's headers; a refusal comes back
    /// as the worker's error.
    func send(
        to base: String, _ method: String, _ path: String, query: [(String, String)] = [],
        headers: [(String, String)] = [], body: [UInt8]? = nil, timeout: Duration? = nil,
        onChunk: (@Sendable ([UInt8]) -> Void)? = nil
    ) async throws -> WorkerResponse {
        var url = base + path
        if !query.isEmpty { url += "?" + query.map { "\($0.0)=\(Forwarding.escape($0.1))" }.joined(separator: "&") }
        // The worker charges the agent's own rate, not the worker token's (one bucket for all).
        let headers = headers + Forwarding.callerHeaders
        let response = try await workers.send(
            method, url, headers: headers, body: body, timeout: timeout, onChunk: onChunk)
        guard (200..<300).contains(response.status) else { throw Self.refusal(response) }
        return response
    }

    /// The owner's error response as a ``WorkerRefusal``, which the API answers unchanged,
    /// so clients of the API node see exactly what the owner said.
    static func refusal(_ response: WorkerResponse) -> WorkerRefusal {
        let reply = try? Wire.decode(ErrorReply.self, from: response.body)
        let code = reply?.error.code ?? "http_\(response.status)"
        let message = reply?.error.message ?? "the worker answered \(response.status)"
        return WorkerRefusal(
            status: response.status, code: code, message: message,
            retryAfter: response.headers["retry-after"].flatMap(Int.init))
    }

    /// Throws `project_not_found` for a project the cluster does not know, without leasing it.
    /// Rides out a Redis outage as a submit does, so a job is not refused for a blip.
    func requireRegistered(_ id: String) async throws {
        let registry = self.registry
        let found = try await throughOutage(jobs.outageRetry) { try await registry.load(id) != nil }
        if !found { throw HostError.projectNotFound(id) }
    }

    // MARK: - Projects

    public func register(
        _ id: String, source: String, sha256: String?, policy: String?, limits: RequestedLimits, setup: [String]?
    ) async throws -> ProjectInfo {
        let body = RegisterRequest(source: source, sha256: sha256, policy: policy, limits: limits, setup: setup)
        let response = try await forward(
            id, "PUT", "/v1/projects/\(id)", headers: [("Content-Type", "application/json")],
            body: try Wire.encode(body))
        return try Wire.decode(ProjectInfo.self, from: response.body)
    }

    public func upload(_ id: String, archive: [UInt8], policy: String?, limits: RequestedLimits, setup: [String]?)
        async throws -> ProjectInfo
    {
        // The query carries what a registration's `limits` would, under the same names.
        var query: [(String, String)] = []
        if case .object(let fields) = try JSONValue.parse(json: Wire.encode(limits)) {
            query = fields.compactMap { key, value in
                guard case .number(let number) = value else { return nil }
                return (key, String(decoding: JSONValue.number(number).serialized(), as: UTF8.self))
            }
            .sorted { $0.0 < $1.0 }
        }
        if let policy { query.append(("policy", policy)) }
        if let setup { query.append(("setup", String(decoding: try Wire.encode(setup), as: UTF8.self))) }
        let response = try await forward(
            id, "PUT", "/v1/projects/\(id)/archive", query: query,
            headers: [("Content-Type", "application/octet-stream")], body: archive)
        return try Wire.decode(ProjectInfo.self, from: response.body)
    }

    public func project(_ id: String) async throws -> ProjectInfo {
        try await requireRegistered(id)
        return try Wire.decode(ProjectInfo.self, from: try await forward(id, "GET", "/v1/projects/\(id)").body)
    }

    public func projects() async -> [ProjectInfo] {
        guard let ids = try? await registry.list() else { return [] }
        return await withTaskGroup(of: ProjectInfo?.self) { group in
            for id in ids { group.addTask { try? await project(id) } }
            var found: [ProjectInfo] = []
            for await info in group { if let info { found.append(info) } }
            return found.sorted { $0.id < $1.id }
        }
    }

    public func warm(_ id: String, progress: (@Sendable (CacheProgress) -> Void)?) async throws -> ProjectInfo {
        try await requireRegistered(id)
        return try await streamed(id, "/v1/projects/\(id)/warm", progress: progress)
    }

    public func setSetup(_ id: String, commands: [String]) async throws -> ProjectInfo {
        try await requireRegistered(id)
        let response = try await forward(
            id, "PUT", "/v1/projects/\(id)/setup", headers: [("Content-Type", "application/json")],
            body: try Wire.encode(SetupRequest(commands: commands)))
        return try Wire.decode(ProjectInfo.self, from: response.body)
    }

    public func runSetup(_ id: String, progress: (@Sendable (CacheProgress) -> Void)?) async throws -> ProjectInfo {
        try await requireRegistered(id)
        return try await streamed(id, "/v1/projects/\(id)/setup/run", progress: progress)
    }

    /// How long a warm-up or a setup run may take on the owner: the longest setup a policy
    /// may allow, and then some.
    static let preparationTimeout: Duration = .seconds(604_800 + 600)

    /// POSTs to a route that answers the project, or with `progress` an event stream of
    /// progress then the project (a warm-up, a setup run), and replays the owner's events.
    private func streamed(_ id: String, _ path: String, progress: (@Sendable (CacheProgress) -> Void)?)
        async throws -> ProjectInfo
    {
        guard let progress else {
            return try Wire.decode(
                ProjectInfo.self,
                from: try await forward(id, "POST", path, timeout: Self.preparationTimeout).body)
        }
        // The owner's event stream, replayed event by event as it arrives.
        let events = ServerSentEvents()
        let response = try await forward(
            id, "POST", path, headers: [("Accept", "text/event-stream")], timeout: Self.preparationTimeout
        ) { chunk in
            for (name, data) in events.feed(chunk) where name == "progress" {
                // A stage this node does not know is skipped, not fatal: the result still comes.
                if let value = try? Wire.decode(CacheProgress.self, from: Array(data.utf8)) { progress(value) }
            }
        }
        for (name, data) in ServerSentEvents().feed(response.body) {
            switch name {
            case "project": return try Wire.decode(ProjectInfo.self, from: Array(data.utf8))
            case "error":
                let reply = try? Wire.decode(ErrorReply.self, from: Array(data.utf8))
                let code = reply?.error.code ?? "warm_failed"
                throw WorkerRefusal(
                    status: code == "setup_failed" ? 409 : 422, code: code, message: reply?.error.message ?? data)
            default: continue
            }
        }
        throw ClusterError.workerUnreachable("the owner's event stream ended without a result")
    }

    public func snapshot(_ id: String) async throws -> SnapshotResult? {
        try await requireRegistered(id)
        let response = try await forward(id, "POST", "/v1/projects/\(id)/snapshot")
        return try Wire.decode(SnapshotReply.self, from: response.body).snapshot
    }

    public func evict(_ id: String, discard: Bool) async throws {
        try await requireRegistered(id)
        _ = try await forward(id, "DELETE", "/v1/projects/\(id)/workspace", query: [("discard", String(discard))])
    }

    /// Ends the project's jobs in Redis (queued ones never start, running ones are
    /// cancelled on their worker), then has the owner delete it, which also makes the
    /// registry forget it and its lease. A job that slipped in meanwhile is cancelled after.
    public func delete(_ id: String) async throws {
        try await requireRegistered(id)
        await cancelJobs(of: id)
        _ = try await forward(id, "DELETE", "/v1/projects/\(id)")
        await cancelJobs(of: id)
    }

    private func cancelJobs(of id: String) async {
        guard let records = try? await jobs.list(project: id, limit: 1000) else { return }
        await withTaskGroup(of: Void.self) { group in
            for record in records where !record.state.isFinal {
                group.addTask { _ = try? await jobs.cancel(record.id, signal: .kill) }
            }
        }
    }

    public func patch(_ id: String, archive: [UInt8]) async throws -> PatchSummary {
        try await requireRegistered(id)
        let response = try await forward(
            id, "PATCH", "/v1/projects/\(id)/archive", headers: [("Content-Type", "application/octet-stream")],
            body: archive)
        return try Wire.decode(PatchSummary.self, from: response.body)
    }

    // MARK: - Named snapshots

    /// Named snapshots live in the shared primary store, listed in its catalog, so the
    /// owner (whichever worker it is now) answers for them; the node forwards every call.
    public func createSnapshot(_ id: String, name: String) async throws -> NamedSnapshot {
        try await requireRegistered(id)
        let body = try Wire.encode(["name": name])
        let response = try await forward(
            id, "POST", "/v1/projects/\(id)/snapshots", headers: [("Content-Type", "application/json")], body: body)
        return try Wire.decode(NamedSnapshot.self, from: response.body)
    }

    public func snapshots(_ id: String) async throws -> [NamedSnapshot] {
        try await requireRegistered(id)
        let response = try await forward(id, "GET", "/v1/projects/\(id)/snapshots")
        return try Wire.decode(NamedSnapshotList.self, from: response.body).snapshots
    }

    public func namedSnapshot(_ id: String, name: String) async throws -> NamedSnapshot {
        try await requireRegistered(id)
        guard NamedSnapshot.isValid(name) else { throw CacheError.invalidSnapshotName(name) }
        let response = try await forward(id, "GET", "/v1/projects/\(id)/snapshots/\(name)")
        return try Wire.decode(NamedSnapshot.self, from: response.body)
    }

    public func restoreSnapshot(_ id: String, name: String) async throws -> NamedSnapshot {
        try await requireRegistered(id)
        guard NamedSnapshot.isValid(name) else { throw CacheError.invalidSnapshotName(name) }
        let response = try await forward(id, "POST", "/v1/projects/\(id)/snapshots/\(name)/restore")
        return try Wire.decode(SnapshotRestoreReply.self, from: response.body).restored
    }

    /// Forwarded to the source's owner, which makes the fork there (its layers are that
    /// host's) and registers it in the cluster.
    public func fork(_ source: String, into id: String, snapshot: String?, policy: String?, limits: RequestedLimits?)
        async throws -> ProjectInfo
    {
        try await requireRegistered(source)
        let owner = try await jobs.route(source)
        // The fork lives where its layers are: its id is leased to the source's owner before
        // the call, so every later call on it is routed there. An id leased elsewhere is a
        // project (or one being made) already.
        guard try await jobs.leases.acquire(id, for: owner) else { throw CacheError.projectExists(id) }
        let body = ForkRequest(id: id, snapshot: snapshot, policy: policy, limits: limits)
        do {
            let response = try await forward(
                source, "POST", "/v1/projects/\(source)/fork", headers: [("Content-Type", "application/json")],
                body: try Wire.encode(body))
            return try Wire.decode(ProjectInfo.self, from: response.body)
        } catch {
            // A fork that was not made leaves no lease behind (one that was is registered).
            if (try? await registry.load(id)) == nil { _ = try? await jobs.leases.release(id, from: owner) }
            throw error
        }
    }

    public func deleteSnapshot(_ id: String, name: String) async throws {
        try await requireRegistered(id)
        guard NamedSnapshot.isValid(name) else { throw CacheError.invalidSnapshotName(name) }
        _ = try await forward(id, "DELETE", "/v1/projects/\(id)/snapshots/\(name)")
    }

    // MARK: - Ports

    /// The owner's list; nobody owning the project means no sandbox runs (nothing is leased).
    public func ports(_ id: String) async throws -> PortList {
        try await requireRegistered(id)
        guard try await jobs.owner(of: id) != nil else { return PortList(project: id, sandbox: false, ports: []) }
        return try Wire.decode(PortList.self, from: try await forward(id, "GET", "/v1/projects/\(id)/ports").body)
    }

    /// The owner's address: the node relays the request there unchanged, with the worker
    /// token and the caller's name, and the owner's same route reaches the sandbox.
    public func portEndpoint(_ id: String, port: UInt16) async throws -> PortEndpoint {
        try await requireRegistered(id)
        guard let host = try await jobs.owner(of: id) else { throw PortError.noSandbox(project: id, port: port) }
        guard let address = try await jobs.address(of: host) else {
            throw ClusterError.workerUnreachable("worker \(host) advertises no address")
        }
        guard let url = URL(string: address), url.scheme == "http", let name = url.host, !name.isEmpty else {
            throw ClusterError.invalidConfiguration(
                "worker \(host) advertises \(address); relaying to a project's ports needs an http:// address")
        }
        var headers = Forwarding.callerHeaders
        if let token = workers.token { headers.append(("Authorization", "Bearer \(token)")) }
        return .worker(host: name, port: url.port ?? 80, headers: headers)
    }

    // MARK: - Jobs

    /// The cluster's jobs as the API runs them: through Redis, for registered projects only
    /// (a job for an unknown project is refused before anything is leased).
    public var jobService: any JobService {
        CheckedJobService(jobs) { [self] request in try await requireRegistered(request.project) }
    }

    // MARK: - Operations

    /// The workers' statuses, summed: projects, sandboxes and jobs add up; the cgroup mode,
    /// limits and policies are those every worker reports (differences are listed as errors).
    public func status() async -> HostStatus {
        let depth = (try? await jobs.depth()) ?? (queued: 0, running: 0)
        var total = HostStatus(
            version: HostModule.version, projects: (try? await registry.list().count) ?? 0, sandboxes: 0,
            queuedJobs: depth.queued, runningJobs: depth.running, workerSlots: [:], cgroupMode: "none",
            enforcedLimits: [:], policies: [:], policyErrors: [])
        let hosts = (try? await jobs.liveWorkers()) ?? []
        total.workerSlots["workers"] = hosts.count
        var modes: Set<String> = []
        for host in hosts {
            guard let address = try? await jobs.address(of: host),
                let response = try? await workers.send("GET", address + "/status"), response.status == 200,
                let status = try? Wire.decode(HostStatus.self, from: response.body)
            else {
                total.policyErrors.append("worker \(host): status unavailable")
                continue
            }
            total.sandboxes += status.sandboxes
            modes.insert(status.cgroupMode)
            total.enforcedLimits.merge(status.enforcedLimits) { first, _ in first }
            total.policies.merge(status.policies) { first, _ in first }
            total.policyErrors += status.policyErrors.map { "worker \(host): \($0)" }
            for (lane, slots) in status.workerSlots where !lane.hasSuffix("per_project") {
                total.workerSlots[lane, default: 0] += slots
            }
        }
        total.cgroupMode =
            modes.count == 1 ? modes.first! : modes.isEmpty ? "none" : modes.sorted().joined(separator: ",")
        return total
    }

    public func readiness() async -> [String: Bool] {
        let workers = try? await jobs.liveWorkers()
        return ["redis": workers != nil, "workers": !(workers ?? []).isEmpty]
    }

    /// Policies live on the workers; the node has none to reload (the stream ends at once).
    public func policyReloads() async -> AsyncStream<Int> { AsyncStream { $0.finish() } }

    public func policySummary() async -> (digests: [String: String], errors: [String]) { ([:], []) }

    public func shutdown(grace: Duration) async {
        jobs.close()
        registryClient.close()
    }

}

/// Splits a `text/event-stream` into (event, data) pairs, across chunk boundaries.
final class ServerSentEvents: @unchecked Sendable {
    private var buffer: [UInt8] = []
    private let lock = NSLock()

    func feed(_ chunk: [UInt8]) -> [(String, String)] {
        lock.lock()
        defer { lock.unlock() }
        buffer += chunk
        var events: [(String, String)] = []
        while let end = Self.blankLine(in: buffer) {
            let block = String(decoding: buffer[..<end.start], as: UTF8.self)
            buffer.removeFirst(end.next)
            var name = "message"
            var data: [String] = []
            for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
                if line.hasPrefix("event:") { name = line.dropFirst(6).trimmingCharacters(in: .whitespaces) }
                if line.hasPrefix("data:") {
                    let value = line.dropFirst(5)
                    data.append(String(value.hasPrefix(" ") ? value.dropFirst() : value))
                }
            }
            events.append((name, data.joined(separator: "\n")))
        }
        return events
    }

    private static func blankLine(in bytes: [UInt8]) -> (start: Int, next: Int)? {
        var i = 0
        while i + 1 < bytes.count {
            if bytes[i] == 0x0A && bytes[i + 1] == 0x0A { return (i, i + 2) }
            i += 1
        }
        return nil
    }
}
