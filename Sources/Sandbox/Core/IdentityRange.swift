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

    private let used = Mutex<Set<Int>>([])

    /// Reserves a free slot and returns the first host id of its range.
    public func allocate() throws -> UInt32 {
        try used.withLock { used in
            for slot in 0..<Self.slots where !used.contains(slot) {
                used.insert(slot)
                return Self.base + UInt32(slot) * Self.size
            }
            throw SandboxError.invalidConfiguration("all \(Self.slots) uid ranges are in use")
        }
    }

    /// Returns a range to the pool.
    public func release(_ first: UInt32) {
        let slot = Int((first - Self.base) / Self.size)
        _ = used.withLock { $0.remove(slot) }
    }
}
