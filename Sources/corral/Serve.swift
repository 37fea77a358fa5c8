import API
import ArgumentParser
import Foundation
import Host
import Sandbox

/// `corral serve`: the all-in-one host (API, workers, embedded queue) on one machine.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the host with embedded defaults until interrupted."
    )

    @Option(help: "Address to listen on.")
    var bind: String = APIModule.defaultBind

    @Option(help: "Directory holding built rootfs images (rootfs/build writes them).")
    var rootfsDir: String = "rootfs/out"

    @Option(help: "Directory of policy files.")
    var policiesDir: String = "policies"

    @Option(help: "Directory for the host's state: cache, journal, logs.")
    var dataDir: String = "var"

    func run() async throws {
        let settings: [(String, String)] = [
            ("version", HostModule.version),
            ("bind", bind),
            ("rootfs_dir", rootfsDir),
            ("policies_dir", policiesDir),
            ("data_dir", dataDir),
        ]
        print("corral serve")
        for (key, value) in settings { print("  \(key) = \(value)") }
        // Sandboxes of a previous run of this host outlive it (their inits do not die with
        // the host); their cgroups find and kill them.
        if let cgroups = CgroupDriver.host {
            print("  cgroups = \(cgroups.mode.rawValue)")
            let swept = (try? cgroups.sweepOrphans(keeping: [])) ?? []
            if !swept.isEmpty { print("  swept \(swept.count) sandboxes left by a previous run") }
        }
        print("ready; press Ctrl-C to stop")
        await waitForTerminationSignal()
        print("corral serve: stopping")
    }
}

/// Suspends until SIGINT or SIGTERM arrives.
///
/// The signals are blocked and taken with a dispatch source, so the default action (die at
/// once) never skips the shutdown path.
func waitForTerminationSignal() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let queue = DispatchQueue(label: "corral.signals")
        let once = OnceFlag()
        var sources: [any DispatchSourceSignal] = []
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler {
                if once.claim() { continuation.resume() }
            }
            source.resume()
            sources.append(source)
        }
        // Kept alive for the life of the process; a cancelled source would drop the signal.
        SignalSources.keep(sources)
    }
}

/// A flag set at most once, for resuming a continuation from several signal sources.
final class OnceFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var claimed = false

    func claim() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if claimed { return false }
        claimed = true
        return true
    }
}

/// Holds signal sources for the life of the process.
enum SignalSources {
    nonisolated(unsafe) private static var held: [any DispatchSourceSignal] = []
    static func keep(_ sources: [any DispatchSourceSignal]) { held += sources }
}
