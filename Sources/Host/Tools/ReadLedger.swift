import Glibc
import Synchronization

/// What identifies one version of a file cheaply: where it lives, its size and its times.
///
/// `ctime` is included because a job can set `mtime` back with `touch -d`, but not `ctime`.
struct FileStamp: Equatable, Sendable {
    let device: UInt64
    let inode: UInt64
    let size: Int64
    let modified: timespec
    let changed: timespec

    init(_ status: stat) {
        device = UInt64(status.st_dev)
        inode = UInt64(status.st_ino)
        size = Int64(status.st_size)
        modified = status.st_mtim
        changed = status.st_ctim
    }

    static func == (a: FileStamp, b: FileStamp) -> Bool {
        a.device == b.device && a.inode == b.inode && a.size == b.size
            && a.modified.tv_sec == b.modified.tv_sec && a.modified.tv_nsec == b.modified.tv_nsec
            && a.changed.tv_sec == b.changed.tv_sec && a.changed.tv_nsec == b.changed.tv_nsec
    }
}

/// Which version of which file each caller last saw, for `stale_file`.
///
/// Bounded: at most `maxCallers` callers and `maxFilesPerCaller` files each; the least
/// recently used are forgotten first, so a forgotten read only costs the model a re-read.
final class ReadLedger: Sendable {
    private struct Entry {
        var stamp: FileStamp
        var used: UInt64
    }

    private struct State {
        var callers: [String: [WorkspacePath: Entry]] = [:]
        var callerUse: [String: UInt64] = [:]
        var clock: UInt64 = 0
    }

    private let state = Mutex(State())
    private let maxCallers: Int
    private let maxFilesPerCaller: Int

    init(maxCallers: Int = 1_000, maxFilesPerCaller: Int = 5_000) {
        self.maxCallers = maxCallers
        self.maxFilesPerCaller = maxFilesPerCaller
    }

    /// Remembers that `caller` saw `stamp` at `path`.
    func record(_ caller: String, _ path: WorkspacePath, _ stamp: FileStamp) {
        state.withLock { state in
            state.clock += 1
            let now = state.clock
            state.callerUse[caller] = now
            state.callers[caller, default: [:]][path] = Entry(stamp: stamp, used: now)
            if state.callers[caller]!.count > maxFilesPerCaller,
                let oldest = state.callers[caller]!.min(by: { $0.value.used < $1.value.used })?.key
            {
                state.callers[caller]![oldest] = nil
            }
            if state.callerUse.count > maxCallers, let oldest = state.callerUse.min(by: { $0.value < $1.value })?.key {
                state.callerUse[oldest] = nil
                state.callers[oldest] = nil
            }
        }
    }

    /// What `caller` last saw at `path`, or nil if it never read it.
    func stamp(_ caller: String, _ path: WorkspacePath) -> FileStamp? {
        state.withLock { $0.callers[caller]?[path]?.stamp }
    }
}
