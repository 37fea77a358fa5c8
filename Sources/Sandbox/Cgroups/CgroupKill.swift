import Glibc

// Killing a whole tree. A job may setsid, double-fork, ignore SIGTERM or fork as fast as it
// can; a process-group kill misses all of that, a cgroup does not. In order of preference:
//
// 1. `cgroup.kill` (cgroup2, Linux 5.14+): one write and the kernel SIGKILLs every task in the
//    subtree, including ones forked while it runs. Hybrid hosts have it in the cgroup2 mirror.
// 2. A freezer (v1 `freezer.state`, or cgroup2 `cgroup.freeze`): freeze so nothing can fork,
//    list and SIGKILL every pid, thaw so the kills are delivered. crun does the same.
// 3. Nothing: SIGKILL every listed pid again and again; pids.max bounds how fast it can refill.
//
// Then wait, bounded, until no hierarchy lists a process.

extension CgroupNode {
    /// Kills every process in this cgroup and its descendants and waits until none is left.
    ///
    /// Blocks the calling thread for up to `timeout`; call it off the async executor's threads.
    func killTree(timeout: Duration) throws {
        let deadline = ContinuousClock.now + timeout
        guard exists else { return }
        try killAtomically(deadline: deadline)
        try waitUntilEmpty(deadline: deadline)
    }

    /// Whether this host has a way to kill a tree that no fork can race.
    private var canKillAtomically: Bool { (layout.unified != nil && layout.killFile) || layout.freezer != nil }

    /// A half-removed cgroup may lack the directory the preferred method needs; then the next
    /// method (or, finally, waitUntilEmpty's per-pid signals) takes over.
    private func killAtomically(deadline: ContinuousClock.Instant) throws {
        if let unified = layout.unified, layout.killFile, CgroupFiles.exists(directory(in: unified)) {
            try CgroupFiles.write(directory(in: unified) + "/cgroup.kill", "1")
        } else if let freezer = layout.freezer, CgroupFiles.exists(directory(in: freezer)) {
            try freezeAndKill(freezer, deadline: deadline)
        }
    }

    /// Freezes the subtree, SIGKILLs every pid listed, and always thaws again.
    ///
    /// A freeze that does not settle before the deadline is not an error by itself: the pids
    /// are killed anyway and waitUntilEmpty keeps sweeping stragglers.
    private func freezeAndKill(_ freezer: CgroupHierarchy, deadline: ContinuousClock.Instant) throws {
        let directory = directory(in: freezer)
        // A freeze gets at most a quarter of the time left, so one that never settles still
        // leaves the per-pid sweep time to finish before the deadline.
        let now = ContinuousClock.now
        let freezeDeadline = now + (deadline - now) / 4
        let thaw: () -> Void
        if freezer.version == .v1 {
            try? freezeV1(directory + "/freezer.state", deadline: freezeDeadline)
            thaw = { try? CgroupFiles.write(directory + "/freezer.state", "THAWED") }
        } else {
            try CgroupFiles.write(directory + "/cgroup.freeze", "1")
            _ = try? CgroupEvents.wait(directory + "/cgroup.events", key: "frozen", value: 1, until: freezeDeadline)
            thaw = { try? CgroupFiles.write(directory + "/cgroup.freeze", "0") }
        }
        defer { thaw() }
        // Frozen tasks cannot exit, so no listed pid can be recycled before it gets its signal.
        for pid in try pids(recursive: true) { _ = Glibc.kill(pid, SIGKILL) }
    }

    /// Writes FROZEN until the kernel reports FROZEN rather than FREEZING.
    ///
    /// cgroup v1 can stay FREEZING while tasks keep forking or arriving; runc found that an
    /// occasional thaw-and-retry gets it unstuck. Retries sleep 1 ms so the loop never spins hot.
    private func freezeV1(_ state: String, deadline: ContinuousClock.Instant) throws {
        var attempt = 0
        while ContinuousClock.now < deadline {
            attempt += 1
            if attempt % 50 == 0 {
                try CgroupFiles.write(state, "THAWED")
                usleep(10_000)
            }
            try CgroupFiles.write(state, "FROZEN")
            if CgroupFiles.trim(try CgroupFiles.read(state)) == "FROZEN" { return }
            usleep(1_000)
        }
    }

    /// Waits until no hierarchy lists a process in the subtree, SIGKILLing stragglers.
    ///
    /// With a cgroup2 tree the wait sleeps in poll(2) on `cgroup.events` until `populated 0`,
    /// so it costs no CPU. cgroup v1 has no emptiness notification (only a release agent), so
    /// without cgroup2 it re-reads `cgroup.procs` every 10 ms: at most 200 cheap reads in 2 s.
    private func waitUntilEmpty(deadline: ContinuousClock.Instant) throws {
        let events = layout.unified.map { directory(in: $0) + "/cgroup.events" }
        while true {
            let remaining = try pids(recursive: true)
            if remaining.isEmpty { return }
            let now = ContinuousClock.now
            guard now < deadline else {
                throw CgroupError.killTimedOut(path: directories.first ?? relative, remaining: remaining)
            }
            if canKillAtomically, let events, try CgroupEvents.value(events, key: "populated") == 1 {
                // Killed tasks are exiting; sleep until the kernel reports the tree empty. If it
                // is still populated after 100 ms, a task arrived after the kill (a spawn that
                // raced it), so kill the tree again rather than wait out the deadline.
                let slice = min(deadline, now + .milliseconds(100))
                if try !CgroupEvents.wait(events, key: "populated", value: 0, until: slice) {
                    try killAtomically(deadline: deadline)
                }
                continue
            }
            // Tasks the atomic kill cannot reach: there is none on this host, or a task sits in
            // v1 hierarchies but not in the cgroup2 mirror. Signal each listed pid.
            for pid in remaining { _ = Glibc.kill(pid, SIGKILL) }
            usleep(10_000)
        }
    }
}

/// Reads flat-keyed cgroup2 event files and sleeps until a key takes a value.
enum CgroupEvents {
    /// The current value of `key` in `file` (e.g. `populated` in `cgroup.events`); nil if absent.
    static func value(_ file: String, key: String) throws -> UInt64? {
        guard let text = try CgroupFiles.readIfPresent(file) else { return nil }
        return try CgroupFiles.keyedValue(key, in: text, file: file)
    }

    /// Blocks until `key` in `file` equals `value` or `deadline` passes; returns whether it did.
    ///
    /// kernfs signals every change of an event file as POLLPRI (and inotify IN_MODIFY). Each
    /// read re-arms the notification, and a change between the read and poll(2) makes poll
    /// return at once, so no change is missed and nothing is polled on a timer.
    static func wait(_ file: String, key: String, value: UInt64, until deadline: ContinuousClock.Instant) throws -> Bool
    {
        let fd = try CgroupFiles.call("open(\(file))") { open(file, O_RDONLY | O_CLOEXEC) }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 512)
        while true {
            let count = try CgroupFiles.call("pread(\(file))") {
                buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
            }
            let text = String(decoding: buffer[0..<count], as: UTF8.self)
            if try CgroupFiles.keyedValue(key, in: text, file: file) == value { return true }
            let left = deadline - ContinuousClock.now
            if left <= .zero { return false }
            let milliseconds = Int32(clamping: left.millisecondsRoundedUp)
            var descriptor = pollfd(fd: fd, events: Int16(POLLPRI), revents: 0)
            try CgroupFiles.call("poll(\(file))") { poll(&descriptor, 1, milliseconds) }
        }
    }
}
