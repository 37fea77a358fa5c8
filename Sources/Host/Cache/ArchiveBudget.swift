import Glibc
import Sandbox

/// Counts what an archive holds against ``ExtractionLimits``, entry by entry.
///
/// The packer (write-back) and the extractor (restore, uploads, sources) both count with
/// this one type, so a snapshot the packer finishes is one the extractor accepts under the
/// same limits: whatever write-back saves, restore can restore.
///
/// What is counted: every entry; the bytes of every entry's path and link target (an
/// agent's deep tree costs tar a full path per entry, so names must be bounded as content
/// is); and file data, holes of sparse files excluded (what the disk really holds).
struct ArchiveBudget {
    let limits: ExtractionLimits
    /// "archive" or "snapshot", for messages.
    let subject: String
    private(set) var entries = 0
    /// Data bytes plus name bytes so far.
    private(set) var bytes: Int64 = 0

    init(_ limits: ExtractionLimits, subject: String) {
        self.limits = limits
        self.subject = subject
    }

    /// Counts one entry named `path` (raw bytes) with a link target of `link` bytes.
    mutating func entry(_ path: [UInt8], link: Int = 0) throws(CacheError) {
        let shown = String(decoding: path, as: UTF8.self)
        for length in [path.count, link] where length > limits.maxPathBytes {
            throw .unsafeEntry(path: shown, reason: "path or link target longer than \(limits.maxPathBytes) bytes")
        }
        entries += 1
        if entries > limits.maxEntries {
            throw .tooLarge("\(subject) has more than \(limits.maxEntries) entries")
        }
        try add(Int64(path.count + link), at: shown)
    }

    /// Whether `data` more bytes still fit.
    func fits(_ data: Int64) -> Bool { data <= limits.maxBytes - bytes }

    /// Counts `data` bytes of file content (or names) for the entry `path`.
    mutating func add(_ data: Int64, at path: String) throws(CacheError) {
        bytes += data
        if bytes > limits.maxBytes { throw over(by: bytes - limits.maxBytes, at: path) }
    }

    /// The error for `excess` bytes over the cap, found at `path`.
    func over(by excess: Int64, at path: String) -> CacheError {
        .tooLarge(
            "\(subject) expands past the \(limits.maxBytes)-byte cap of file data and names"
                + " (at least \(excess) bytes over, at \(path))")
    }
}
