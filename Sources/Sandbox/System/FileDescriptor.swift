import Glibc

/// An owned file descriptor, closed exactly once when released.
///
/// Sandboxes hold descriptors for their whole life (the init's pidfd, cgroup directories);
/// tying them to an object's lifetime is how Corral avoids leaking them.
public final class FileDescriptor: @unchecked Sendable {
    /// The raw descriptor; -1 once closed.
    public private(set) var raw: Int32

    /// Takes ownership of `raw`.
    public init(_ raw: Int32) { self.raw = raw }

    /// Closes now; later calls do nothing.
    public func close() {
        if raw >= 0 {
            _ = Glibc.close(raw)
            raw = -1
        }
    }

    deinit { close() }
}
