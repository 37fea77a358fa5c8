import Foundation
import Host
import Sandbox

extension ClusterWorker {
    // MARK: - Taking jobs

    /// Reads this host's stream while it runs, taking no more than it has room for.
    func consume() async {
        let stream = keys.jobs(host)
        while phase == .running {
            await waitForCapacity()
            guard phase == .running else { return }
            let room = max(1, min(64, configuration.maxInFlight - tracked.count))
            do {
                let reply = try await reader.blocking(
                    [
                        "XREADGROUP", "GROUP", ClusterKeys.group, host, "COUNT", String(room), "BLOCK",
                        String(configuration.blockInterval.milliseconds), "STREAMS", stream, ">",
                    ], for: configuration.blockInterval)
                await handleAll(reply.streams[stream] ?? [])
            } catch {
                guard phase == .running else { return }
                if case ClusterError.server(let message) = error, message.hasPrefix("NOGROUP") {
                    // Redis lost its data (restarted without persistence): start over.
                    try? await ensureGroup()
                }
                // Redis is down: wait a little before the next attempt reconnects.
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    /// Handles entries concurrently: each needs a round trip, and the client pipelines them.
    func handleAll(_ entries: [StreamEntry]) async {
        await withTaskGroup(of: Void.self) { group in
            for entry in entries { group.addTask { await self.handle(entry) } }
        }
    }

    /// Takes one entry: a cancel request reaches the local job; a job is checked against its
    /// record (it may have ended or moved) and queued locally. Its start is decided later,
    /// by the gate.
    func handle(_ entry: StreamEntry) async {
        guard let id = entry.fields["id"] else {
            _ = try? await settle(entry.id)
            return
        }
        if entry.fields["type"] == "cancel" {
            let signal = entry.fields["signal"].flatMap(JobSignal.init(rawValue:)) ?? .term
            if let local = tracked[id]?.local {
                let jobs = self.jobs
                Task { _ = try? await jobs.cancel(local, signal: signal) }
            } else if tracked[id] != nil {
                tracked[id]?.cancelled = true
            }
            _ = try? await settle(entry.id)
            return
        }
        guard tracked[id] == nil else { return }
        tracked[id] = Tracked(entry: entry.id, local: nil)
        do {
            // Entries carry their request, so taking a job costs no round trip: whether it
            // may still run is the gate's decision, made when it reaches a slot.
            var carried = entry.fields["request"]
            if carried == nil { carried = try await adopt(id, entry: entry.id) }
            guard let json = carried else {
                untrack(id)
                return
            }
            var request = try JSONDecoder().decode(JobRequest.self, from: Data(json.utf8))
            request.submitter = Self.submitter
            request.idempotencyKey = id
            // The submitter's cap was applied cluster-wide when the job was queued in Redis.
            request.submitterCap = nil
            await hooks.prepare(request.project)
            let record = try await jobs.submit(request)
            tracked[id]?.local = record.id
            if tracked[id]?.cancelled == true {
                let jobs = self.jobs
                Task { _ = try? await jobs.cancel(record.id) }
            }
            Task { await self.forward(id, local: record.id, entry: entry.id) }
        } catch {
            // The entry stays pending for this host; the next sweep takes it again.
            logger.warning("worker \(host): cannot take job \(id): \(error)")
            untrack(id)
        }
    }

    /// For an entry without its request: the request if the job should run here, nil if
    /// it ended or moved (the entry is then acknowledged).
    private func adopt(_ id: String, entry: String) async throws -> String? {
        let reply = try await redis.eval(
            ClusterScripts.adopt, keys: [],
            arguments: [
                configuration.keyPrefix, host, incarnation, id, entry, ClusterRecords.timestamp(),
                configuration.retentionMilliseconds,
            ])
        let parts = (reply.array ?? []).compactMap(\.string)
        return parts.first == "run" && parts.count > 1 ? parts[1] : nil
    }

    /// Entries pending for this host that nobody here is handling: replies lost to a
    /// broken connection, or a previous life's work.
    func sweepOwnPending() async {
        guard phase == .running else { return }
        let stream = keys.jobs(host)
        // Entries a rescuer took from this stream while this host looked dead (it came back
        // just then) are pending for the rescuer: take them back once they sit idle.
        _ = try? await redis.command([
            "XAUTOCLAIM", stream, ClusterKeys.group, host, configuration.leaseMilliseconds, "0-0", "COUNT", "100",
        ])
        guard
            let reply = try? await redis.command([
                "XREADGROUP", "GROUP", ClusterKeys.group, host, "COUNT", "500", "STREAMS", stream, "0",
            ])
        else { return }
        let stray = (reply.streams[stream] ?? []).filter { entry in
            entry.fields["id"].map { tracked[$0] == nil } ?? true
        }
        if !stray.isEmpty { await handleAll(stray) }
    }

    // MARK: - Reporting

    /// Follows the local job and writes its output and result to Redis. The result and
    /// the entry's acknowledgement are one step, so a job is acknowledged only once its
    /// result is durable.
    func forward(_ id: String, local: String, entry: String) async {
        defer { untrack(id) }
        var cursor = 0
        var offset = 0
        let prefix = configuration.keyPrefix
        while true {
            guard let snap = try? await jobs.wait(local, timeout: .seconds(600), since: cursor) else { return }
            // The last output goes with the result, in one round trip.
            if !snap.output.isEmpty, !snap.record.state.isFinal, gate.outcome(id) == .won {
                let text = snap.output
                let at = String(offset)
                let saved = await persist {
                    try await self.redis.eval(
                        ClusterScripts.output, keys: [],
                        arguments: [prefix, id, self.incarnation, at, text, String(self.configuration.outputCap)])
                }
                guard saved else { return }
                offset += text.utf8.count
            }
            cursor = snap.cursor
            guard snap.record.state.isFinal else { continue }
            defer { gate.forget(id) }
            switch gate.outcome(id) {
            case .won:
                let record = snap.record
                let result = try? record.result.map(ClusterRecords.json)
                let (at, text) = (String(offset), snap.output)
                _ = await persist {
                    try await self.redis.eval(
                        ClusterScripts.finish, keys: [],
                        arguments: [
                            prefix, id, self.incarnation, record.state.rawValue, ClusterRecords.timestamp(),
                            result ?? "", record.error ?? "", self.configuration.retentionMilliseconds, self.host,
                            entry, at, text, String(self.configuration.outputCap), record.errorCode ?? "",
                        ])
                }
            case .lost:
                // Cancelled before it started, or moved to another host: nothing to report.
                _ = await persist {
                    try await self.settle(entry)
                }
            case nil:
                // Never reached the gate (this host is shutting down): the job is still
                // queued here in Redis and is handed over with the host's projects.
                break
            }
            return
        }
    }

    /// Acknowledges and deletes an entry of this host's stream: it needs nothing more.
    func settle(_ entry: String) async throws {
        let stream = keys.jobs(host)
        for reply in try await redis.pipeline([
            ["XACK", stream, ClusterKeys.group, entry], ["XDEL", stream, entry],
        ]) {
            _ = try RedisClient.check(reply)
        }
    }

    /// Runs `write` until Redis has it, waiting out outages; false if this host stopped
    /// first or Redis refused the write.
    func persist(_ write: @Sendable () async throws -> Void) async -> Bool {
        var delay: Duration = .milliseconds(50)
        while true {
            do {
                try await write()
                return true
            } catch ClusterError.redisUnavailable {
                guard phase != .crashed, phase != .stopped else { return false }
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(1))
            } catch ClusterError.closed {
                return false
            } catch {
                logger.error("worker \(host): redis refused a write: \(error)")
                return false
            }
        }
    }
}
