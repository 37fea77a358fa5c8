import CCap
import Glibc

/// The Linux capabilities a job keeps, as a bit mask (bit n is capability n).
///
/// The spawn path applies the mask raw to the bounding, permitted, effective, inheritable
/// and ambient sets, so nothing here runs after fork. Names are resolved with libcap, the
/// same table `capsh` and `getpcaps` use.
public struct CapabilitySet: Sendable, Hashable, CustomStringConvertible {
    /// Bit n set means capability n is kept.
    public var mask: UInt64

    /// No capabilities at all: the default for every job.
    public static let none = CapabilitySet(mask: 0)

    public init(mask: UInt64) { self.mask = mask }

    /// Resolves names such as `CAP_NET_BIND_SERVICE` or `cap_chown` (any case).
    ///
    /// - Throws: ``CapabilityError/unknownName(_:)`` for a name libcap does not know, and
    ///   for the spellings libcap accepts but a policy should not use (numbers, spaces).
    public init(names: [String]) throws {
        var mask: UInt64 = 0
        for name in names {
            guard let value = Self.value(named: name) else { throw CapabilityError.unknownName(name) }
            mask |= 1 << UInt64(value)
        }
        self.mask = mask
    }

    /// The capability number for a name, or nil. libcap alone also accepts `21` and
    /// `cap_sys_admin ` (trailing space); requiring the name to round-trip refuses those.
    public static func value(named name: String) -> Int? {
        var value: cap_value_t = 0
        guard cap_from_name(name, &value) == 0, value >= 0, value < 64 else { return nil }
        guard let canonical = Self.name(of: Int(value)) else { return nil }
        return canonical == name.lowercased() ? Int(value) : nil
    }

    /// libcap's name for a capability number, e.g. `cap_chown` for 0; nil if it has none.
    public static func name(of value: Int) -> String? {
        guard let raw = cap_to_name(cap_value_t(value)) else { return nil }
        defer { cap_free(raw) }
        let name = String(cString: raw)
        return name.hasPrefix("cap_") ? name : nil
    }

    /// Every capability name libcap knows, in bit order.
    public static var allNames: [String] { (0..<64).compactMap { name(of: $0) } }

    /// Whether the named capability is in the set.
    public func contains(_ name: String) -> Bool {
        guard let value = Self.value(named: name) else { return false }
        return mask & (1 << UInt64(value)) != 0
    }

    /// The kept capabilities' names in upper case, in bit order.
    public var names: [String] {
        (0..<64).filter { mask & (1 << UInt64($0)) != 0 }.map { Self.name(of: $0)?.uppercased() ?? "CAP_\($0)" }
    }

    public var description: String { names.isEmpty ? "none" : names.joined(separator: ",") }
}

/// A capability name libcap does not know.
public enum CapabilityError: Error, Sendable, Equatable, CustomStringConvertible {
    case unknownName(String)

    public var description: String {
        switch self {
        case .unknownName(let name): "unknown capability \"\(name)\""
        }
    }
}
