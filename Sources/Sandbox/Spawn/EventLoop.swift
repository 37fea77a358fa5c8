import CShim
import Foundation
import Glibc
import Synchronization

/// One thread that waits, with epoll, for every job's output and exit.
///
/// A job's end is an event, not something we look for: its pidfd becomes readable the
/// moment it exits and the waiting Swift task is resumed from here. Handlers run on this
/// thread and must be short (read what is there, hand it on).
final class EventLoop: Sendable {
    static let shared = EventLoop()

    /// Called with the epoll events of its descriptor; returns false to be removed.
    typealias Handler = @Sendable (UInt32) -> Bool

    private let epfd: Int32
    private let handlers = Mutex<[Int32: Handler]>([:])

    private init() {
        epfd = epoll_create1(Int32(EPOLL_CLOEXEC))
        precondition(epfd >= 0, "epoll_create1 failed: \(errno)")
        let thread = Thread { [self] in run() }
        thread.name = "corral-events"
        thread.start()
    }

    /// Watches `fd` for readability (level-triggered) until the handler returns false, then
    /// closes it: the loop owns `fd` from this call on.
    func watch(_ fd: Int32, handler: @escaping Handler) throws {
        handlers.withLock { $0[fd] = handler }
        var event = epoll_event()
        event.events = EPOLLIN.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue
        event.data.fd = fd
        do {
            try syscall("epoll_ctl(add)") { epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &event) }
        } catch {
            _ = handlers.withLock { $0.removeValue(forKey: fd) }
            close(fd)
            throw error
        }
    }

    private func run() {
        var events = [epoll_event](repeating: epoll_event(), count: 64)
        while true {
            let n = retryingInterrupted {
                events.withUnsafeMutableBufferPointer { epoll_wait(epfd, $0.baseAddress, 64, -1) }
            }
            // Only EBADF or EINVAL remain, and the loop owns epfd: nothing to do but go on.
            if n < 0 { continue }
            for i in 0..<Int(n) {
                let fd = events[i].data.fd
                guard let handler = handlers.withLock({ $0[fd] }) else { continue }
                if !handler(events[i].events) {
                    // Removed before it is closed, so a reused number never reaches the
                    // old handler.
                    epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nil)
                    _ = handlers.withLock { $0.removeValue(forKey: fd) }
                    close(fd)
                }
            }
        }
    }
}
