import Glibc

extension NetworkNamespace {
    /// A TCP socket connected to `port` on the namespace's loopback, owned by the caller,
    /// non-blocking and close-on-exec: what the API hands to its event loop to reach a
    /// server a job runs.
    ///
    /// Tries 127.0.0.1, then ::1 (a server bound to `localhost` may have picked IPv6). Throws
    /// `ECONNREFUSED` when nothing listens on either, `ETIMEDOUT` when the listener's queue
    /// stays full for `timeout` (a loopback connect otherwise completes at once).
    public func connect(port: UInt16, timeout: Duration = .seconds(5)) async throws -> Int32 {
        do {
            var v4 = Self.loopback(port: port)
            return try await connect(AF_INET, &v4, port: port, timeout: timeout)
        } catch let error as SystemError where error.errno == ECONNREFUSED {
            var v6 = sockaddr_in6()
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = port.bigEndian
            v6.sin6_addr = in6addr_loopback
            do {
                return try await connect(AF_INET6, &v6, port: port, timeout: timeout)
            } catch let v6Error as SystemError where [EADDRNOTAVAIL, ENETUNREACH, EAFNOSUPPORT].contains(v6Error.errno)
            {
                // No IPv6 loopback in there: the IPv4 answer stands.
                throw error
            }
        }
    }

    private func connect<Address>(_ domain: Int32, _ address: inout Address, port: UInt16, timeout: Duration)
        async throws -> Int32
    {
        let what = domain == AF_INET ? "127.0.0.1:\(port)" : "[::1]:\(port)"
        let fd = try socket(domain: domain)
        do {
            let flags = fcntl(fd, F_GETFL)
            try syscall("fcntl(O_NONBLOCK)") { fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
            let size = socklen_t(MemoryLayout<Address>.size)
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, size) }
            }
            if result == 0 { return fd }
            guard errno == EINPROGRESS || errno == EINTR else {
                throw SystemError("connect(\(what) in the sandbox)", errno: errno)
            }
            // Only a full accept queue gets here: the kernel retries the SYN on its own
            // schedule; look every few milliseconds, without holding a thread.
            let deadline = ContinuousClock.now + timeout
            while true {
                var pollfd = Glibc.pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                if retryingInterrupted({ poll(&pollfd, 1, 0) }) == 1 {
                    var error: Int32 = 0
                    var length = socklen_t(MemoryLayout<Int32>.size)
                    try syscall("getsockopt(SO_ERROR)") { getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) }
                    if error == 0 { return fd }
                    throw SystemError("connect(\(what) in the sandbox)", errno: error)
                }
                guard ContinuousClock.now < deadline else {
                    throw SystemError("connect(\(what) in the sandbox)", errno: ETIMEDOUT)
                }
                try await Task.sleep(for: .milliseconds(5))
            }
        } catch {
            close(fd)
            throw error
        }
    }
}
