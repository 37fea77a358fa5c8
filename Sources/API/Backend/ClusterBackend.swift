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

    /// `workerToken` is an admin token of the workers' API, sent with every forwarded call.
    public init(configuration: ClusterConfiguration, workerToken: String?, node: String? = nil) {
        jobs = ClusterJobClient(configuration: configuration, node: node)
        registryClient = RedisClient(configuration.redis, name: "corral-api-registry")
        registry = RedisProjectRegistry(redis: registryClient, configuration: configuration)
        workers = WorkerClient(token: workerToken)
    }

    // MARK: - Forwarding

    /// The base URL of the project's owner, assigning one if nobody owns it.
    func owner(of id: String) async throws -> String {
        let host = try await jobs.route(id)
        guard let address = try await jobs.address(of: host) else {
            throw ClusterError.workerUnreachable("worker \(host) advertises no address")
        }
        return address
    }

    /// Sends a call to the project's owner; a refusal comes back as the owner's error.
    func forward(
        _ id: String, _ method: String, _ path: String, query: [(String, String)] = [],
        headers: [(String, String)] = [], body: [UInt8]? = nil, onChunk: (@Sendable ([UInt8]) -> Void)? = nil
    ) async throws -> WorkerResponse {
        let base = try await owner(of: id)
        var url = base + path
        if !query.isEmpty { url += "?" + query.map { "\($0.0)=\(Self.escape($0.1))" }.joined(separator: "&") }
        // The worker charges the agent's own rate, not the worker token's (one bucket for all).
        let headers = headers + (ForwardedCaller.current?.headers ?? [])
        let response = try await workers.send(method, url, headers: headers, body: body, onChunk: onChunk)
        guard (200..<300).contains(response.status) else { throw Self.refusal(response) }
        return response
    }

    /// The owner's error response as the same ``APIError``, so clients of the API node see
    /// exactly what the owner said.
    static func refusal(_ response: WorkerResponse) -> APIError {
        let json = try? JSON.parse(response.body)
        let code = json?["error"]?["code"]?.stringValue ?? "http_\(response.status)"
        let message = json?["error"]?["message"]?.stringValue ?? "the worker answered \(response.status)"
        return APIError(
            .init(code: response.status), code, message, retryAfter: response.headers["retry-after"].flatMap(Int.init))
    }

    static func escape(_ value: String) -> String {
        value.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(.init(charactersIn: "-._~"))) ?? value
    }

    static func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(type, from: Data(bytes))
    }

    /// Throws `project_not_found` for a project the cluster does not know, without leasing it.
    /// Rides out a Redis outage as a submit does, so a job is not refused for a blip.
    func requireRegistered(_ id: String) async throws {
        let registry = self.registry
        let found = try await throughOutage(jobs.outageRetry) { try await registry.load(id) != nil }
        if !found { throw HostError.projectNotFound(id) }
    }

    // MARK: - Projects

    public func register(_ id: String, source: String, sha256: String?, policy: String?, limits: RequestedLimits)
        async throws -> ProjectInfo
    {
        var fields: [String: JSON] = ["source": .string(source)]
        if let sha256 { fields["sha256"] = .string(sha256) }
        if let policy { fields["policy"] = .string(policy) }
        let limitFields = Self.limitFields(limits)
        if !limitFields.isEmpty { fields["limits"] = .object(limitFields.mapValues(JSON.number)) }
        let response = try await forward(
            id, "PUT", "/v1/projects/\(id)", headers: [("Content-Type", "application/json")],
            body: JSON.object(fields).serialized())
        return try Self.decode(ProjectInfo.self, response.body)
    }

    public func upload(_ id: String, archive: [UInt8], policy: String?, limits: RequestedLimits) async throws
        -> ProjectInfo
    {
        var query = Self.limitFields(limits).map { ($0.key, Self.number($0.value)) }.sorted { $0.0 < $1.0 }
        if let policy { query.append(("policy", policy)) }
        let response = try await forward(
            id, "PUT", "/v1/projects/\(id)/archive", query: query,
            headers: [("Content-Type", "application/octet-stream")], body: archive)
        return try Self.decode(ProjectInfo.self, response.body)
    }

    public func project(_ id: String) async throws -> ProjectInfo {
        try await requireRegistered(id)
        return try Self.decode(ProjectInfo.self, try await forward(id, "GET", "/v1/projects/\(id)").body)
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
        guard let progress else {
            return try Self.decode(ProjectInfo.self, try await forward(id, "POST", "/v1/projects/\(id)/warm").body)
        }
        // The owner's event stream, replayed event by event as it arrives.
        let events = ServerSentEvents()
        let response = try await forward(
            id, "POST", "/v1/projects/\(id)/warm", headers: [("Accept", "text/event-stream")]
        ) { chunk in
            for (name, data) in events.feed(chunk) where name == "progress" {
                if let value = Self.progress(data) { progress(value) }
            }
        }
        for (name, data) in ServerSentEvents().feed(response.body) {
            switch name {
            case "project": return try Self.decode(ProjectInfo.self, Array(data.utf8))
            case "error":
                let json = try? JSON.parse(Array(data.utf8))
                throw APIError(
                    .unprocessableContent, json?["error"]?["code"]?.stringValue ?? "warm_failed",
                    json?["error"]?["message"]?.stringValue ?? data)
            default: continue
            }
        }
        throw ClusterError.workerUnreachable("the owner's warm stream ended without a result")
    }

    public func snapshot(_ id: String) async throws -> SnapshotResult? {
        try await requireRegistered(id)
        let json = try JSON.parse(try await forward(id, "POST", "/v1/projects/\(id)/snapshot").body)
        guard let snap = json["snapshot"], case .object = snap else { return nil }
        return SnapshotResult(
            key: snap["key"]?.stringValue ?? "", version: snap["version"]?.stringValue ?? "",
            bytes: Self.count(snap["bytes"]), files: Int(Self.count(snap["files"])),
            skipped: Int(Self.count(snap["skipped"])))
    }

    public func evict(_ id: String, discard: Bool) async throws {
        try await requireRegistered(id)
        _ = try await forward(id, "DELETE", "/v1/projects/\(id)/workspace", query: [("discard", String(discard))])
    }

    // MARK: - Jobs

    public func submit(_ request: JobRequest) async throws -> JobRecord {
        try await requireRegistered(request.project)
        return try await jobs.submit(request)
    }

    public func waitJob(_ id: String, timeout: Duration, since: Int, untilFinished: Bool) async throws -> JobSnapshot {
        try await jobs.wait(id, timeout: timeout, since: since, untilFinished: untilFinished)
    }

    public func jobSnapshot(_ id: String, since: Int) async throws -> JobSnapshot {
        try await jobs.snapshot(id, since: since)
    }

    public func cancelJob(_ id: String) async throws -> JobSnapshot { try await jobs.cancel(id) }

    public func cancelJob(_ id: String, signal: JobSignal) async throws -> JobSnapshot {
        try await jobs.cancel(id, signal: signal)
    }

    public func jobs(project: String, limit: Int) async throws -> [JobRecord] {
        try await jobs.list(project: project, limit: limit)
    }

    public func queueDepth() async -> (queued: Int, running: Int) {
        (try? await jobs.depth()) ?? (0, 0)
    }

    // MARK: - Operations

    /// The workers' statuses, summed: projects, sandboxes and jobs add up; the cgroup mode,
    /// limits and policies are those every worker reports (differences are listed as errors).
    public func status() async -> HostStatus {
        let depth = await queueDepth()
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
                let status = try? Self.decode(HostStatus.self, response.body)
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

    // MARK: - Helpers

    static func limitFields(_ limits: RequestedLimits) -> [String: Double] {
        var fields: [String: Double] = [:]
        if let v = limits.cpus { fields["cpus"] = v }
        if let v = limits.memoryBytes { fields["memory_bytes"] = Double(v) }
        if let v = limits.pids { fields["pids"] = Double(v) }
        if let v = limits.tmpfsBytes { fields["tmpfs_bytes"] = Double(v) }
        if let v = limits.workspaceBytes { fields["workspace_bytes"] = Double(v) }
        if let v = limits.timeoutSeconds { fields["timeout_s"] = Double(v) }
        if let v = limits.stdoutBytes { fields["stdout_bytes"] = Double(v) }
        if let v = limits.stderrBytes { fields["stderr_bytes"] = Double(v) }
        return fields
    }

    static func number(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
    }

    /// A count from a worker's JSON: 0 unless it is a whole number in 0...2^53. Converting an
    /// arbitrary `Double` with `Int64(_:)` traps on NaN, infinities and large values, and
    /// one bad reply must not end the node.
    static func count(_ value: JSON?) -> Int64 {
        guard let number = value?.numberValue, number.isFinite, number >= 0, number <= 9_007_199_254_740_992 else {
            return 0
        }
        return Int64(number)
    }

    static func progress(_ data: String) -> CacheProgress? {
        guard let json = try? JSON.parse(Array(data.utf8)) else { return nil }
        switch json["stage"]?.stringValue {
        case "downloading":
            return .downloading(
                TransferProgress(
                    bytes: Self.count(json["bytes"]),
                    total: json["total"]?.numberValue == nil ? nil : Self.count(json["total"]),
                    bytesPerSecond: json["bytes_per_second"]?.numberValue ?? 0))
        case "extracting": return .extracting
        case "ready": return .ready
        default: return nil
        }
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
