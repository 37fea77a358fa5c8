import Synchronization

/// Hands each live sandbox its own range of 65,536 host uids and gids.
///
/// Distinct ranges mean a process of one sandbox is never the same user as a process of
/// another, so file permissions and ptrace checks separate them even if everything else
/// failed. Ranges start at 2^29, far above the uids of real host users and of systemd's
/// dynamic users.
public final class IdentityRanges: Sendable {
    public static let shared = IdentityRanges()

    /// The first host id of slot 0.
    public static let base: UInt32 = 1 << 29
    /// Ids per sandbox: a full 16-bit range, so images with system users work.
    public static let size: UInt32 = 65_536
    /// Slots available; base + slots * size stays below 2^31.
    public static let slots = 8_192

    /// The uid inside a sandbox that owns its workspace: the default job user.
    public static let workspaceOwner: UInt32 = 1000

    private struct Slots {
        /// Live sandboxes per slot (more than one only for a family's slot).
        var used: [Int: Int] = [:]
        /// Slots that own the files of shared layers (docs/CACHE.md, "Forks"): never handed
        /// to an unrelated sandbox, shared by the sandboxes of the projects over those layers.
        var families: Set<Int> = []
        /// Slots held by a sandbox of its own (``allocate()``): never shared, even when the
        /// slot became a family's while that sandbox lived.
        var exclusive: Set<Int> = []
    }

    private let slots = Mutex(Slots())

    init() {}

    /// Reserves a free slot and returns the first host id of its range.
    public func allocate() throws -> UInt32 {
        try slots.withLock { s in
            let slot = try Self.free(s)
            s.used[slot] = 1
            s.exclusive.insert(slot)
            return Self.first(slot)
        }
    }

    /// The family range starting at `first` if it is one (the sandbox then shares it with
    /// the other sandboxes over the same layers), else a fresh range like ``allocate()``.
    ///
    /// Sharing a range is the price of not copying a layer: the sandboxes of a source and
    /// its forks run as the same host uids. Their namespaces still separate them (no common
    /// pid, mount or network namespace, so no signal, ptrace or file reaches the other), but
    /// per-user kernel counters (RLIMIT_NPROC, inotify instances) are shared.
    public func allocate(sharing first: UInt32?) throws -> UInt32 {
        guard let first, let slot = Self.slot(first) else { return try allocate() }
        return try slots.withLock { s in
            guard s.families.contains(slot), !s.exclusive.contains(slot) else {
                let fresh = try Self.free(s)
                s.used[fresh] = 1
                s.exclusive.insert(fresh)
                return Self.first(fresh)
            }
            s.used[slot, default: 0] += 1
            return first
        }
    }

    /// Returns a range to the pool.
    public func release(_ first: UInt32) {
        guard let slot = Self.slot(first) else { return }
        slots.withLock { s in
            let left = (s.used[slot] ?? 1) - 1
            s.used[slot] = left > 0 ? left : nil
            if left <= 0 { s.exclusive.remove(slot) }
        }
    }

    /// Reserves a fresh slot as a family's (for a layer whose files are not owned by any
    /// range yet) and returns its first host id.
    public func reserveFamily() throws -> UInt32 {
        try slots.withLock { s in
            let slot = try Self.free(s)
            s.families.insert(slot)
            return Self.first(slot)
        }
    }

    /// Marks the range of `first` as a family's (a layer made from a tree its sandboxes
    /// owned, or found again at a restart); false when `first` starts no range.
    @discardableResult
    public func reserve(family first: UInt32) -> Bool {
        guard let slot = Self.slot(first) else { return false }
        _ = slots.withLock { $0.families.insert(slot) }
        return true
    }

    /// Ends a family reservation (its last layer is gone); live sandboxes keep their range.
    public func release(family first: UInt32) {
        guard let slot = Self.slot(first) else { return }
        _ = slots.withLock { $0.families.remove(slot) }
    }

    /// The first host id of the range holding host uid `uid`, if it is in one.
    public static func range(of uid: UInt32) -> UInt32? {
        slot(uid).map { first($0) }
    }

    private static func slot(_ id: UInt32) -> Int? {
        guard id >= base else { return nil }
        let slot = Int((id - base) / size)
        return slot < slots ? slot : nil
    }

    private static func first(_ slot: Int) -> UInt32 { base + UInt32(slot) * size }

    private static func free(_ s: Slots) throws -> Int {
        for slot in 0..<Self.slots where s.used[slot] == nil && !s.families.contains(slot) { return slot }
        throw SandboxError.invalidConfiguration("all \(Self.slots) uid ranges are in use")
    }
}
