import CSeccomp

/// Names libseccomp resolves: system calls, architectures, and the errno names policy
/// files may use.
public enum SeccompNames {
    /// The system call's number on the native ABI, a negative libseccomp pseudo-number for
    /// a call that exists only on other ABIs (e.g. `socketcall`), or nil for a name libseccomp
    /// does not know.
    public static func syscallNumber(_ name: String) -> Int32? {
        guard !name.isEmpty, name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f }) else { return nil }
        let number = seccomp_syscall_resolve_name(name)
        return number == __NR_SCMP_ERROR ? nil : number
    }

    /// The audit token for `native` or a libseccomp architecture name, nil if unknown.
    public static func architectureToken(_ name: String) -> UInt32? {
        if name == "native" { return seccomp_arch_native() }
        let token = seccomp_arch_resolve_name(name)
        return token == 0 ? nil : token
    }

    /// The errno value for a symbolic name such as `ENOSYS`, or nil.
    public static func errnoValue(named name: String) -> Int32? { errnoByName[name] }

    /// Every errno name ``errnoValue(named:)`` accepts, sorted.
    public static var errnoNames: [String] { errnoByName.keys.sorted() }

    /// The reverse of `Errno.name`, so policy files and error messages use one table.
    private static let errnoByName: [String: Int32] = {
        var table: [String: Int32] = [:]
        for value in Int32(1)...Int32(200) {
            let name = Errno.name(value)
            if !name.hasPrefix("errno ") { table[name] = value }
        }
        return table
    }()

    /// The linked libseccomp's version, e.g. `2.5.4`; unknown system call names depend on it.
    public static var libraryVersion: String {
        guard let version = seccomp_version() else { return "unknown" }
        return "\(version.pointee.major).\(version.pointee.minor).\(version.pointee.micro)"
    }
}
