import Foundation
import Glibc

// MARK: - Spare filesystems

extension ProjectCache {
    /// How many cap sizes spares are kept for: a host has one default cap and rarely more.
    static let spareSizeCount = 2

    /// A spare image of exactly `bytes`, if one is ready (the caller renames it into place),
    /// and a refill behind it. Remembers `bytes` as a size to keep spares of.
    func takeSpare(bytes: Int64) -> String? {
        guard config.spareVolumes > 0, !sparesStopped else { return nil }
        keepSpares(of: bytes)
        let taken = spares[bytes]?.popLast()
        refillSpares()
        return taken
    }

    /// Starts making spares of `bytes` (a host calls it with its default cap at start, so
    /// even its first new project finds one).
    public func prepareSpares(bytes: Int64) {
        guard config.spareVolumes > 0, !sparesStopped else { return }
        keepSpares(of: bytes)
        refillSpares()
    }

    /// The spares ready now, by size; for status and tests.
    public var spareCounts: [Int64: Int] { spares.mapValues(\.count) }

    /// Removes every spare and stops making them (at shutdown): they are empty filesystems.
    public func removeSpares() async {
        sparesStopped = true
        spareRefill?.cancel()
        await spareRefill?.value
        spares = [:]
        let directory = layout.spares
        await BlockingThread.run("corral-spares") { () -> Void in try? SafeTree.remove(path: directory) }
    }

    private func keepSpares(of bytes: Int64) {
        spareSizes.removeAll { $0 == bytes }
        spareSizes.insert(bytes, at: 0)
        for dropped in spareSizes.dropFirst(Self.spareSizeCount) {
            for path in spares.removeValue(forKey: dropped) ?? [] { unlink(path) }
        }
        spareSizes = Array(spareSizes.prefix(Self.spareSizeCount))
    }

    private func refillSpares() {
        guard spareRefill == nil else { return }
        spareRefill = Task { await self.runRefill() }
    }

    /// One image at a time, on a blocking thread, until every size has its count: making
    /// them is off every request's path, and one mkfs at a time keeps it from crowding out
    /// the work they are for.
    private func runRefill() async {
        defer { spareRefill = nil }
        let directory = layout.spares
        while !Task.isCancelled, !sparesStopped,
            let bytes = spareSizes.first(where: { (spares[$0]?.count ?? 0) < config.spareVolumes })
        {
            let path = "\(directory)/\(UUID().uuidString).img"
            do {
                try await BlockingThread.run("corral-spare") { () throws(CacheError) in
                    try Volume.format(image: path, bytes: bytes)
                }
            } catch {
                logger.warning("cannot make a spare workspace filesystem", metadata: ["error": "\(error)"])
                return
            }
            if sparesStopped || !spareSizes.contains(bytes) {
                unlink(path)
            } else {
                spares[bytes, default: []].append(path)
            }
        }
    }
}
