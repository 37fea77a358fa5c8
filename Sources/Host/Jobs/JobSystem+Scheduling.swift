import Foundation
import Sandbox

extension JobSystem {
    /// Starts queued jobs while their lane has free slots. Among projects with work under
    /// their cap, the one served least recently goes first (fairness); each project's jobs
    /// start in order (FIFO).
    func dispatch() {
        for lane in JobLane.allCases {
            let slots = limits.slots[lane] ?? 1
            let cap = limits.perProject[lane] ?? 1
            while running[lane, default: [:]].values.reduce(0, +) < slots {
                let eligible = rotation[lane, default: []].enumerated().filter { _, project in
                    running[lane, default: [:]][project, default: 0] < cap && !(queues[lane]?[project]?.isEmpty ?? true)
                }
                guard
                    let (_, project) = eligible.min(by: {
                        (lastServed[$0.element] ?? -1, $0.offset) < (lastServed[$1.element] ?? -1, $1.offset)
                    })
                else { break }
                var queue = queues[lane]?[project] ?? []
                let id = queue.removeFirst()
                queues[lane]?[project] = queue.isEmpty ? nil : queue
                if queue.isEmpty { rotation[lane]?.removeAll { $0 == project } }
                serveCounter += 1
                lastServed[project] = serveCounter
                running[lane, default: [:]][project, default: 0] += 1
                begin(id)
            }
        }
    }

    private func begin(_ id: String) {
        guard let entry = entries[id] else { return }
        entry.record.state = .running
        entry.record.startedAt = Date()
        try? journal?.save(entry.record)
        entry.channel.touch()
        Task { await execute(id) }
    }

    private func execute(_ id: String) async {
        guard let entry = entries[id] else { return }
        let channel = entry.channel
        let request = entry.record.request
        do {
            let execution = try await runner.start(request, jobID: id) { _, bytes in channel.append(bytes) }
            entry.execution = execution
            if let signal = entry.cancelSignal { await execution.cancel(signal: signal) }
            let result = await execution.wait()
            switch result.status {
            case .completed: finish(entry, state: .completed, result: result, error: nil)
            case .timedOut: finish(entry, state: .timedOut, result: result, error: nil)
            case .cancelled: finish(entry, state: .cancelled, result: result, error: nil)
            case .sandboxDied:
                finish(
                    entry, state: .interrupted, result: result, error: Self.sandboxDied(request.project),
                    code: Self.sandboxDiedCode)
            }
        } catch {
            logger.warning("job \(id) failed to start: \(error)")
            finish(entry, state: .failedToStart, result: nil, error: "\(error)")
        }
        running[entry.record.lane]?[request.project, default: 1] -= 1
        if running[entry.record.lane]?[request.project] == 0 { running[entry.record.lane]?[request.project] = nil }
        entry.execution = nil
        dispatch()
    }

    /// The `error` of a job whose sandbox died under it: what happened (its view's
    /// `message` says what to do).
    static func sandboxDied(_ project: String) -> String {
        "the sandbox of project \(project) died while the job ran: its init process was killed, and every process of the job with it; the job was not re-run"
    }

    /// ``JobRecord/errorCode`` of a job whose sandbox died under it.
    public static let sandboxDiedCode = "sandbox_died"

    func finish(_ entry: Entry, state: JobState, result: JobResult?, error: String?, code: String? = nil) {
        let submitter = entry.record.request.submitter
        if !entry.record.state.isFinal, let count = active[submitter] {
            active[submitter] = count > 1 ? count - 1 : nil
        }
        entry.record.state = state
        entry.record.finishedAt = Date()
        entry.record.result = result
        entry.record.error = error
        entry.record.errorCode = code
        do { try journal?.save(entry.record) } catch { logger.error("journal: \(error)") }
        entry.channel.touch(closing: true)
        pruneFinished()
    }

    /// Finished jobs stay in memory for fast long-polls, up to a bound; the journal keeps
    /// them all.
    private func pruneFinished(keep: Int = 2000) {
        guard entries.count > keep * 2 else { return }
        let finished = entries.values.filter { $0.record.state.isFinal }.sorted {
            ($0.record.finishedAt ?? .distantPast) < ($1.record.finishedAt ?? .distantPast)
        }
        for entry in finished.prefix(finished.count - keep) { entries[entry.record.id] = nil }
    }

    func remove(from record: JobRecord) {
        let lane = record.lane
        let project = record.request.project
        queues[lane]?[project]?.removeAll { $0 == record.id }
        if queues[lane]?[project]?.isEmpty ?? false {
            queues[lane]?[project] = nil
            rotation[lane]?.removeAll { $0 == project }
        }
    }

    func position(of record: JobRecord) -> Int? {
        guard record.state == .queued else { return nil }
        return queues[record.lane]?[record.request.project]?.firstIndex(of: record.id).map { $0 + 1 }
    }

    /// Keys are scoped by submitter and project: the same key used on two projects names
    /// two jobs, and the second command must run.
    func findIdempotent(_ submitter: String, project: String, _ key: String) throws -> JobRecord? {
        if let entry = entries.values.first(where: {
            $0.record.request.submitter == submitter && $0.record.request.project == project
                && $0.record.request.idempotencyKey == key
        }) {
            return entry.record
        }
        return try journal?.find(submitter: submitter, project: project, idempotencyKey: key)
    }
}
