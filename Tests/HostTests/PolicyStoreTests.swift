import Foundation
import Testing

@testable import Host

/// Hot reload as an admin sees it: edit a file, the next lookup has the new value; break a
/// file, the old value stays and the error is reported; a job's captured value never moves.
@Suite(.serialized) struct PolicyStoreTests {
    static let base = "[limits]\nmemory = \"1GiB\"\npids = 256\n"

    /// Waits (on the store's reload stream, not by polling) until `condition` holds.
    func eventually(
        _ store: PolicyStore, _ reloads: AsyncStream<Int>, _ condition: @escaping @Sendable () -> Bool
    ) async -> Bool {
        if condition() { return true }
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                for await _ in reloads where condition() { return true }
                return false
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(10))
                return false
            }
            let result = await group.next() ?? false
            group.cancelAll()
            return result
        }
    }

    @Test func editsTakeEffectForTheNextLookupOnly() async throws {
        let directory = try PolicyDirectory()
        try directory.write("default", Self.base)
        try directory.write("child", "extends = \"default\"\n[limits]\npids = 100\n")
        let (logger, logs) = CapturingLogHandler.logger()
        let store = PolicyStore(directory: directory.path, logger: logger)
        try store.startWatching()
        defer { store.stopWatching() }
        let captured = try #require(store.policy(named: "default"))
        #expect(store.errors == [])
        #expect(store.names == ["child", "default"])

        let reloads = store.reloads()
        try directory.replace("default", "[limits]\nmemory = \"2GiB\"\npids = 256\n")
        #expect(await eventually(store, reloads) { store.policy(named: "default")?.limits.memoryBytes == 2 << 30 })
        #expect(store.policy(named: "child")?.limits.memoryBytes == 2 << 30)
        #expect(store.policy(named: "child")?.limits.pids == 100)
        #expect(captured.limits.memoryBytes == 1 << 30)

        let digest = try #require(store.policy(named: "default")?.digest)
        let logged = logs.all.filter { $0.message == "policy in force" && $0.metadata["policy"] == "default" }
        #expect(logged.last?.metadata["digest"] == digest)
        #expect(logged.last?.metadata["changed"] == "true")
    }

    @Test func aBrokenFileKeepsTheLastGoodVersionAndReportsWhy() async throws {
        let directory = try PolicyDirectory()
        try directory.write("default", Self.base)
        try directory.write("child", "extends = \"default\"\n")
        let store = PolicyStore(directory: directory.path)
        try store.startWatching()
        defer { store.stopWatching() }
        let good = try #require(store.policy(named: "default"))

        let reloads = store.reloads()
        try directory.write("default", "[limits]\nmemory = \"1GB\"\n")
        #expect(await eventually(store, reloads) { !store.errors.isEmpty })
        #expect(store.policy(named: "default") == good)
        #expect(store.policy(named: "child")?.limits.memoryBytes == 1 << 30)
        let messages = store.errors.map { $0.description.replacingOccurrences(of: directory.path + "/", with: "") }
        #expect(
            messages == [
                "child.toml:1: extends: extends \"default\", which has errors (hint: fix default.toml first)",
                "default.toml:2: limits.memory: \"1GB\" is not a size (hint: use a whole number with B, KiB, MiB, GiB or TiB, e.g. \"2GiB\")",
            ])
        #expect(store.status.errors.count == 2)
        #expect(store.status.digests["default"] == good.digest)

        try directory.replace("default", "[limits]\nmemory = \"3GiB\"\n")
        #expect(await eventually(store, reloads) { store.errors.isEmpty })
        #expect(store.policy(named: "child")?.limits.memoryBytes == 3 << 30)
    }

    @Test func filesComeAndGo() async throws {
        let directory = try PolicyDirectory()
        try directory.write("default", Self.base)
        let store = PolicyStore(directory: directory.path)
        try store.startWatching()
        defer { store.stopWatching() }

        let reloads = store.reloads()
        try directory.replace("ci", "extends = \"default\"\n[timeouts]\nmax_s = 3600\n")
        #expect(await eventually(store, reloads) { store.policy(named: "ci")?.timeouts.maxSeconds == 3600 })
        try directory.write("Bad Name", "")
        #expect(await eventually(store, reloads) { store.errors.count == 1 })
        #expect(store.errors.first?.message == "\"Bad Name\" is not a valid policy name; the file is ignored")
        try directory.remove("Bad Name")
        try directory.remove("ci")
        #expect(await eventually(store, reloads) { store.policy(named: "ci") == nil && store.errors.isEmpty })
        #expect(store.names == ["default"])
    }

    @Test func aManualReloadNeedsNoWatcher() throws {
        let directory = try PolicyDirectory()
        try directory.write("default", Self.base)
        let store = PolicyStore(directory: directory.path)
        let first = store.status.generation
        try directory.write("default", "[limits]\npids = 99\n")
        #expect(store.policy(named: "default")?.limits.pids == 256)
        #expect(store.reload() == first + 1)
        #expect(store.policy(named: "default")?.limits.pids == 99)
    }

    @Test func droppingAWatchingStoreEndsItsThreadAndClosesItsDescriptors() throws {
        let directory = try PolicyDirectory()
        try directory.write("default", Self.base)
        // Counts inotify instances rather than all fds, which tests running beside this one open too.
        func inotifyDescriptors() throws -> Int {
            try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").filter {
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + $0))
                    == "anon_inode:inotify"
            }.count
        }
        let before = try inotifyDescriptors()
        do {
            let store = PolicyStore(directory: directory.path)
            try store.startWatching()
            #expect(try inotifyDescriptors() == before + 1)
        }
        #expect(try inotifyDescriptors() == before)
    }

    @Test func stoppingTheWatcherStopsReloads() async throws {
        let directory = try PolicyDirectory()
        try directory.write("default", Self.base)
        let store = PolicyStore(directory: directory.path)
        try store.startWatching()
        store.stopWatching()
        store.stopWatching()
        let generation = store.status.generation
        try directory.write("default", "[limits]\npids = 99\n")
        try await Task.sleep(for: .milliseconds(300))
        #expect(store.status.generation == generation)
        #expect(store.policy(named: "default")?.limits.pids == 256)
    }
}
