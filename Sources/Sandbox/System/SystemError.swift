import Glibc

/// A failed system call: which call, on what, and the errno it returned.
///
/// Reads like `setns(mnt): EPERM (Operation not permitted)`, never `error 1`.
public struct SystemError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The call and, in parentheses, what it acted on, e.g. `openat(cgroup.procs)`.
    public let call: String
    /// The errno value.
    public let errno: Int32

    public init(_ call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    /// The symbolic errno name, e.g. `EPERM`.
    public var errnoName: String { Errno.name(errno) }

    public var description: String {
        "\(call): \(errnoName) (\(String(cString: strerror(errno))))"
    }
}

/// Runs a system call, retrying on EINTR, and throws a `SystemError` naming the call on
/// failure. `body` returns the raw result; -1 means failure with `errno` set.
@discardableResult
public func syscall<T: BinaryInteger>(_ call: @autoclosure () -> String, _ body: () -> T) throws -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        let e = Glibc.errno
        if e == EINTR { continue }
        throw SystemError(call(), errno: e)
    }
}

/// Runs a call again while it fails with EINTR, and returns its last result as is (-1 with
/// `errno` set on any other failure): for calls whose failure is handled where they are made,
/// not thrown. One place for the retry, instead of a loop at every call.
@discardableResult
public func retryingInterrupted<T: BinaryInteger>(_ body: () -> T) -> T {
    while true {
        let result = body()
        if result != -1 || Glibc.errno != EINTR { return result }
    }
}

/// Symbolic names for the errno values Corral reports.
public enum Errno {
    private static let names: [Int32: String] = [
        EPERM: "EPERM", ENOENT: "ENOENT", ESRCH: "ESRCH", EINTR: "EINTR", EIO: "EIO",
        ENXIO: "ENXIO", E2BIG: "E2BIG", ENOEXEC: "ENOEXEC", EBADF: "EBADF", ECHILD: "ECHILD",
        EAGAIN: "EAGAIN", ENOMEM: "ENOMEM", EACCES: "EACCES", EFAULT: "EFAULT", EBUSY: "EBUSY",
        EEXIST: "EEXIST", EXDEV: "EXDEV", ENODEV: "ENODEV", ENOTDIR: "ENOTDIR", EISDIR: "EISDIR",
        EINVAL: "EINVAL", ENFILE: "ENFILE", EMFILE: "EMFILE", ENOTTY: "ENOTTY", EFBIG: "EFBIG",
        ENOSPC: "ENOSPC", ESPIPE: "ESPIPE", EROFS: "EROFS", EMLINK: "EMLINK", EPIPE: "EPIPE",
        ERANGE: "ERANGE", ENAMETOOLONG: "ENAMETOOLONG", ENOSYS: "ENOSYS", ENOTEMPTY: "ENOTEMPTY",
        ELOOP: "ELOOP", EOPNOTSUPP: "EOPNOTSUPP", EAFNOSUPPORT: "EAFNOSUPPORT",
        EADDRINUSE: "EADDRINUSE", ENETUNREACH: "ENETUNREACH", ECONNREFUSED: "ECONNREFUSED",
        ETIMEDOUT: "ETIMEDOUT", EPROTO: "EPROTO", EOVERFLOW: "EOVERFLOW", EDQUOT: "EDQUOT",
        ECANCELED: "ECANCELED", ETXTBSY: "ETXTBSY", EPROTONOSUPPORT: "EPROTONOSUPPORT",
    ]

    /// `EPERM` for 1, `errno 200` for a value without a known name.
    public static func name(_ value: Int32) -> String { names[value] ?? "errno \(value)" }
}
