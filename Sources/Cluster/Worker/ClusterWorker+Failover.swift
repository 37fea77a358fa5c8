extension ClusterWorker {
    /// Settles what a dead host (or this host, leaving) left in Redis: hands its lapsed
    /// leases to live hosts, moves its queued jobs to their projects' owners, marks its
    /// running jobs interrupted, and forgets the host once nothing of it is left. Entries
    /// whose project lease has not lapsed yet stay for a later pass. Returns whether the
    /// host was forgotten.
    @discardableResult
    func rescue(_ dead: String) async throws -> Bool {
        let prefix = configuration.keyPrefix
        let lease = configuration.leaseMilliseconds
        let left = try await redis.eval(ClusterScripts.takeover, keys: [], arguments: [prefix, dead, lease]).integer
        guard left != -1 else { return false }
        let stream = keys.jobs(dead)
        do {
            try await redis.command(["XGROUP", "CREATE", stream, ClusterKeys.group, "0", "MKSTREAM"])
        } catch ClusterError.server(let message) where message.hasPrefix("BUSYGROUP") {}
        let consumer = "rescue-\(host)"
        var entries: [StreamEntry] = []
        var cursor = "0-0"
        // Entries the dead host had read but not settled...
        repeat {
            let reply = try await redis.command([
                "XAUTOCLAIM", stream, ClusterKeys.group, consumer, "0", cursor, "COUNT", "200",
            ])
            let parts = reply.array ?? []
            cursor = parts.first?.string ?? "0-0"
            if parts.count > 1 { entries += parts[1].streamEntries }
        } while cursor != "0-0"
        // ...and those it never read.
        let fresh = try await redis.command([
            "XREADGROUP", "GROUP", ClusterKeys.group, consumer, "COUNT", "10000", "STREAMS", stream, ">",
        ])
        entries += fresh.streams[stream] ?? []
        var counts: [String: Int] = [:]
        for entry in entries {
            let outcome =
                try await redis.eval(
                    ClusterScripts.rescue, keys: [],
                    arguments: [
                        prefix, dead, entry.id, entry.fields["type"] ?? "", entry.fields["id"] ?? "",
                        ClusterRecords.timestamp(), lease, configuration.retentionMilliseconds,
                    ]
                ).string ?? "?"
            if outcome == "alive" { return false }
            counts[outcome, default: 0] += 1
        }
        if !entries.isEmpty { logger.info("worker \(host): settled \(dead)'s jobs: \(counts)") }
        return try await redis.eval(ClusterScripts.cleanup, keys: [], arguments: [prefix, dead]).integer == 1
    }
}
