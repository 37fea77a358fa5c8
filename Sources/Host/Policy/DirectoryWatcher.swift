import Foundation
import Glibc
import Sandbox
import Synchronization

/// Watches one directory with inotify on a thread of its own and calls `onChange` once per
/// burst of changes.
///
/// A dedicated thread because waiting on inotify blocks, and blocking a thread of Swift's
/// cooperative pool would starve the async code that serves requests.
final class DirectoryWatcher: Sendable {
    let path: String
    private let inotify: Int32
    private let wake: (read: Int32, write: Int32)
    private let onChange: @Sendable () -> Void
    private let stopped = Mutex(false)
    private let finished = DispatchSemaphore(value: 0)
    private let threadID = Mutex<pthread_t?>(nil)

    /// Editors save in several steps (write a temp file, rename, chmod); waiting until the
    /// directory has been quiet this long turns one save into one reload.
    static let quietMilliseconds: Int32 = 50
    /// A file is complete when it is closed after writing or renamed into place; creation
    /// alone (IN_CREATE) or a write in progress (IN_MODIFY) would reload a half-written file.
    static let mask = UInt32(IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_ATTRIB)
    static let lost = UInt32(IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)

    init(path: String, onChange: @escaping @Sendable () -> Void) throws {
        self.path = path
        self.onChange = onChange
        let inotify = try syscall("inotify_init1") { inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK)) }
        var fds: [Int32] = [-1, -1]
        do {
            try syscall("pipe(policy-watch)") { pipe(&fds) }
            for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            try syscall("inotify_add_watch(\(path))") { inotify_add_watch(inotify, path, Self.mask) }
        } catch {
            for fd in fds + [inotify] where fd >= 0 { close(fd) }
            throw error
        }
        self.inotify = inotify
        wake = (fds[0], fds[1])
        // Started here, so every watcher that exists has a thread that will close its fds.
        let worker = Thread { [self] in
            threadID.withLock { $0 = pthread_self() }
            run()
            close(wake.read)
            close(wake.write)
            close(self.inotify)
            finished.signal()
        }
        worker.name = "corral.policy-watch"
        worker.start()
    }

    /// Stops the thread and, unless called from it, waits for it to close its descriptors
    /// and end; later calls do nothing.
    func stop() {
        let first = stopped.withLock { stopped in
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        var byte: UInt8 = 1
        _ = write(wake.write, &byte, 1)
        // The last reference to the store can be dropped inside a reload on this thread;
        // waiting for ourselves would never end, and the loop sees the wake byte anyway.
        let onWatcher = threadID.withLock { $0.map { pthread_equal($0, pthread_self()) != 0 } ?? false }
        if !onWatcher { finished.wait() }
    }

    private func run() {
        var watching = true
        while true {
            var fds = [
                pollfd(fd: inotify, events: Int16(POLLIN), revents: 0),
                pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0),
            ]
            // While the directory is gone, look for it again every second.
            let ready = poll(&fds, 2, watching ? -1 : 1000)
            if ready < 0 && errno != EINTR { return }
            if fds[1].revents != 0 { return }
            if !watching {
                guard inotify_add_watch(inotify, path, Self.mask) >= 0 else { continue }
                watching = true
                onChange()
                continue
            }
            guard fds[0].revents != 0 else { continue }
            if drain() { watching = false }
            if settle() { watching = false }
            onChange()
        }
    }

    /// Waits until no event arrives for the quiet period (at most about a second).
    /// Returns whether the watch was lost meanwhile.
    private func settle() -> Bool {
        var lost = false
        for _ in 0..<20 {
            var fd = pollfd(fd: inotify, events: Int16(POLLIN), revents: 0)
            guard poll(&fd, 1, Self.quietMilliseconds) > 0 else { break }
            lost = drain() || lost
        }
        return lost
    }

    /// Reads every pending event; returns whether one says the watch itself is gone.
    private func drain() -> Bool {
        var buffer = [UInt8](repeating: 0, count: 16 * 1024)
        var lost = false
        while true {
            let n = buffer.withUnsafeMutableBytes { read(inotify, $0.baseAddress, $0.count) }
            guard n > 0 else { return lost }
            var offset = 0
            while offset + MemoryLayout<inotify_event>.size <= n {
                let event = buffer.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: inotify_event.self) }
                if event.mask & Self.lost != 0 { lost = true }
                offset += MemoryLayout<inotify_event>.size + Int(event.len)
            }
        }
    }
}
