import Logging
import Synchronization

/// The policies in force: every `*.toml` in a directory, reloaded when the directory
/// changes, with the last good version of each kept while its file is broken.
///
/// Handing out ``Policy`` values is what makes reloads safe: a job holds the value it
/// started with, and only the next ``policy(named:)`` sees an edit.
public final class PolicyStore: Sendable {
    /// The directory of policy files.
    public let directory: String
    private let loader: PolicyLoader
    private let logger: Logger
    private let state = Mutex(State())
    /// Serializes reloads, so a watcher reload and a manual one never interleave.
    private let reloadLock = Mutex(())
    private let watcher = Mutex<DirectoryWatcher?>(nil)

    struct State {
        var policies: [String: Policy] = [:]
        /// Current problems, by policy name; `""` holds directory-level ones.
        var errors: [String: [PolicyError]] = [:]
        var generation = 0
        var subscribers: [Int: AsyncStream<Int>.Continuation] = [:]
        var nextSubscriber = 0
    }

    /// What `GET /status` shows about policies.
    public struct Status: Sendable, Hashable {
        /// Digest of each policy in force, by name.
        public let digests: [String: String]
        /// Every current problem; a policy listed here runs on its last good version, if any.
        public let errors: [PolicyError]
        /// How many reloads have happened.
        public let generation: Int
    }

    /// Loads every policy in `directory` now. Call ``startWatching()`` for hot reload.
    public init(directory: String, logger: Logger = Logger(label: "corral.policy")) {
        self.directory = directory
        self.loader = PolicyLoader(directory: directory)
        self.logger = logger
        reload()
    }

    deinit { stopWatching() }

    // MARK: - Reading

    /// The policy in force under `name`, or nil if there has never been a good version.
    public func policy(named name: String) -> Policy? { state.withLock { $0.policies[name] } }

    /// What is wrong with the file of policy `name` now, as the loader reported it at the last
    /// reload, with file names relative to the directory (`egress.toml:3: …`): empty when it
    /// loaded. While this is not empty, ``policy(named:)`` is the last good version, if any.
    public func problems(named name: String) -> [PolicyError] {
        let prefix = directory.hasSuffix("/") ? directory : directory + "/"
        return state.withLock { $0.errors[name] ?? [] }.map { $0.relative(to: prefix) }
    }

    /// The names of the policies in force, sorted.
    public var names: [String] { state.withLock { $0.policies.keys.sorted() } }

    /// Every current problem, by file and line, each once (a broken base is reported by
    /// every policy that extends it).
    public var errors: [PolicyError] {
        let all = state.withLock { Set($0.errors.values.flatMap { $0 }) }
        return all.sorted { ($0.file, $0.line, $0.message) < ($1.file, $1.line, $1.message) }
    }

    public var status: Status {
        let errors = self.errors
        return state.withLock { state in
            Status(digests: state.policies.mapValues(\.digest), errors: errors, generation: state.generation)
        }
    }

    /// Yields the generation number after each reload, starting with the next one.
    public func reloads() -> AsyncStream<Int> {
        let (stream, continuation) = AsyncStream.makeStream(of: Int.self, bufferingPolicy: .unbounded)
        let id = state.withLock { state in
            state.nextSubscriber += 1
            state.subscribers[state.nextSubscriber] = continuation
            return state.nextSubscriber
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) }
        }
        return stream
    }

    // MARK: - Reloading

    /// Re-reads every file. Policies that load replace their previous version; ones that
    /// fail keep it and report why. Returns the new generation.
    @discardableResult
    public func reload() -> Int {
        reloadLock.withLock { _ in
            var loaded: [String: Policy] = [:]
            var errors: [String: [PolicyError]] = [:]
            do throws(PolicyErrors) {
                let listing = try loader.policyNames()
                if !listing.errors.isEmpty { errors[""] = listing.errors }
                for name in listing.names {
                    do throws(PolicyErrors) {
                        loaded[name] = try loader.load(named: name)
                    } catch {
                        errors[name] = error.errors
                    }
                }
            } catch {
                errors[""] = error.errors
            }
            return apply(loaded: loaded, errors: errors, listed: errors[""] == nil || !loaded.isEmpty)
        }
    }

    private func apply(loaded: [String: Policy], errors: [String: [PolicyError]], listed: Bool) -> Int {
        let (generation, previous, subscribers) = state.withLock { state in
            let previous = state.policies
            var next = previous
            for (name, policy) in loaded { next[name] = policy }
            // A file that is gone takes its policy with it, unless the directory itself could
            // not be read: then nothing is known and everything stays.
            if listed {
                for name in previous.keys where loaded[name] == nil && errors[name] == nil { next[name] = nil }
            }
            state.policies = next
            state.errors = errors
            state.generation += 1
            return (state.generation, previous, Array(state.subscribers.values))
        }
        log(generation: generation, loaded: loaded, errors: errors, previous: previous)
        for subscriber in subscribers { subscriber.yield(generation) }
        return generation
    }

    private func log(
        generation: Int, loaded: [String: Policy], errors: [String: [PolicyError]], previous: [String: Policy]
    ) {
        for (name, policy) in loaded.sorted(by: { $0.key < $1.key }) {
            let changed = previous[name]?.digest != policy.digest
            logger.info(
                "policy in force",
                metadata: [
                    "policy": "\(name)", "digest": "\(policy.digest)", "changed": "\(changed)",
                    "files": "\(policy.files.joined(separator: ","))",
                ])
        }
        for (name, problems) in errors.sorted(by: { $0.key < $1.key }) {
            for problem in problems {
                logger.error("policy error", metadata: ["policy": "\(name)", "error": "\(problem)"])
            }
            if let kept = previous[name] {
                logger.warning(
                    "policy keeps its last good version", metadata: ["policy": "\(name)", "digest": "\(kept.digest)"])
            } else if !name.isEmpty {
                logger.error("policy unavailable: no good version yet", metadata: ["policy": "\(name)"])
            }
        }
        let count = state.withLock { $0.policies.count }
        logger.info(
            "policies reloaded",
            metadata: [
                "generation": "\(generation)", "policies": "\(count)",
                "errors": "\(errors.values.map(\.count).reduce(0, +))",
            ])
    }

    // MARK: - Watching

    /// Starts reloading whenever a file in the directory changes (inotify, on a dedicated
    /// thread). Calling it again does nothing.
    public func startWatching() throws {
        try watcher.withLock { watcher in
            guard watcher == nil else { return }
            watcher = try DirectoryWatcher(path: directory) { [weak self] in self?.reload() }
        }
        logger.info("watching policies", metadata: ["directory": "\(directory)"])
    }

    /// Stops hot reload and waits for the watcher thread to end.
    public func stopWatching() {
        let stopping = watcher.withLock { watcher in
            defer { watcher = nil }
            return watcher
        }
        stopping?.stop()
    }
}
