import Glibc
import Sandbox

/// Everything that can go wrong fetching, extracting, caching or writing back a project.
///
/// Each case is a clear, typed answer for the API layer (one HTTP status and error code per
/// case, see ``code``); none of them leaves a half-extracted project or a partial download.
public enum CacheError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A project id that is not `[A-Za-z0-9._-]{1,128}` (or is `.`/`..`).
    case invalidProject(String)
    /// The project was never registered.
    case unknownProject(String)
    /// A source that cannot be parsed or is not allowed here (scheme, file root, config).
    case unsupportedSource(String)
    /// The blob does not exist (HTTP 404, missing file).
    case notFound(String)
    /// The server answered with an HTTP status that is not retried (or still failed after retries).
    case httpStatus(Int, String)
    /// The transfer stalled or exceeded its deadline, after retries.
    case timeout(String)
    /// Connection-level failure after retries (refused, reset, truncated body).
    case transport(String)
    /// A limit was exceeded: download size, extracted bytes, entry count or compression ratio.
    case tooLarge(String)
    /// The downloaded bytes do not match the registered checksum.
    case checksumMismatch(expected: String, actual: String)
    /// An archive entry that would escape the project or create something unsafe.
    case unsafeEntry(path: String, reason: String)
    /// libarchive could not read the archive.
    case corruptArchive(String)
    /// The store cannot be written (plain HTTP sources are read-only).
    case readOnlyStore(String)
    /// The project is in use (pinned by running jobs) or in a state that forbids the call.
    case busy(String)
    /// The project's files cannot be replaced or patched now: jobs run (or, for a
    /// replacement, sessions live) in its workspace. The message says how many and how to
    /// end them; nothing was changed.
    case projectBusy(String)
    /// A patch failed part-way: the paths in `applied` were written or deleted (each one
    /// whole), the rest were not. The workspace is dirty and the write-back keeps what was applied.
    case patchIncomplete(applied: [String], failed: String, reason: String)
    /// A local file-system call failed.
    case system(SystemError)
    /// The persistent cache index (SQLite) failed.
    case index(String)
    /// The caller cancelled the transfer.
    case cancelled
    /// A workspace disk cap outside what a volume can hold.
    case invalidQuota(String)
    /// A workspace filesystem (the disk cap) could not be created, mounted or removed.
    case volume(String)
    /// An `http(s)://` source whose host is, or resolves to, an address sources may not
    /// reach (loopback, link-local, private, …), at registration or at any connection of a
    /// transfer, redirects included; see ``SourceAddressPolicy``.
    case forbiddenAddress(host: String, address: String, kind: String)
    /// A snapshot name outside ``NamedSnapshot/rule``.
    case invalidSnapshotName(String)
    /// A named snapshot of that name exists: snapshots are immutable, never overwritten.
    case snapshotExists(project: String, name: String)
    /// The project has no named snapshot of that name.
    case snapshotNotFound(project: String, name: String)
    /// A fork's new id is a project already (docs/CACHE.md, "Forks"): a fork never
    /// replaces a project.
    case projectExists(String)
    /// The project cannot be forked as it is (an uncapped workspace, a fork chain too deep);
    /// the message says why and what to do. Nothing was changed.
    case forkUnsupported(String)

    /// A stable, machine-readable code for the API (`not_found`, `unsafe_entry`, …).
    public var code: String {
        switch self {
        case .invalidProject: "invalid_project"
        case .unknownProject: "unknown_project"
        case .unsupportedSource: "unsupported_source"
        case .notFound: "not_found"
        case .httpStatus: "upstream_http_status"
        case .timeout: "timeout"
        case .transport: "transport"
        case .tooLarge: "too_large"
        case .checksumMismatch: "checksum_mismatch"
        case .unsafeEntry: "unsafe_entry"
        case .corruptArchive: "corrupt_archive"
        case .readOnlyStore: "read_only_store"
        case .busy: "busy"
        case .projectBusy: "project_busy"
        case .patchIncomplete: "patch_incomplete"
        case .system: "io_error"
        case .index: "index_error"
        case .cancelled: "cancelled"
        case .invalidQuota: "invalid_quota"
        case .volume: "volume_error"
        case .forbiddenAddress: "forbidden_address"
        case .invalidSnapshotName: "invalid_snapshot_name"
        case .snapshotExists: "snapshot_exists"
        case .snapshotNotFound: "snapshot_not_found"
        case .projectExists: "project_exists"
        case .forkUnsupported: "fork_unsupported"
        }
    }

    public var description: String {
        switch self {
        case .invalidProject(let id): "invalid project id \"\(id)\": use 1-128 of A-Z a-z 0-9 . _ -"
        case .unknownProject(let id): "project \"\(id)\" is not registered"
        case .unsupportedSource(let why): "unsupported source: \(why)"
        case .notFound(let what): "not found: \(what)"
        case .httpStatus(let code, let what): "HTTP \(code) from \(what)"
        case .timeout(let what): "timed out: \(what)"
        case .transport(let what): "transfer failed: \(what)"
        case .tooLarge(let what): "too large: \(what)"
        case .checksumMismatch(let expected, let actual): "checksum mismatch: expected \(expected), got \(actual)"
        case .unsafeEntry(let path, let reason): "unsafe archive entry \"\(path)\": \(reason)"
        case .corruptArchive(let why): "corrupt or unsupported archive: \(why)"
        case .readOnlyStore(let what): "blob store is read-only: \(what)"
        case .busy(let why): "busy: \(why)"
        case .projectBusy(let why): why
        case .patchIncomplete(let applied, let failed, let reason):
            "the patch stopped at \"\(failed)\" (\(reason)) after applying \(applied.count) path(s)"
                + (applied.isEmpty ? "" : ": " + Self.list(applied))
        case .system(let error): error.description
        case .index(let why): "cache index: \(why)"
        case .cancelled: "cancelled"
        case .invalidQuota(let why): "invalid workspace quota: \(why)"
        case .volume(let why): "workspace filesystem: \(why)"
        case .forbiddenAddress(let host, let address, let kind):
            (host == address ? "\(address) is" : "\(host) resolves to \(address),")
                + " a \(kind) address; http(s) sources may reach it only if allowed with --allow-source-host"
        case .invalidSnapshotName(let name): "invalid snapshot name \"\(name)\": use \(NamedSnapshot.rule)"
        case .snapshotExists(let project, let name):
            "project \(project) already has a snapshot named \(name); snapshots are immutable: choose another name, or delete it first (DELETE /v1/projects/\(project)/snapshots/\(name))"
        case .snapshotNotFound(let project, let name): "project \(project) has no snapshot named \(name)"
        case .projectExists(let id):
            "project \(id) exists already; a fork makes a new project: choose another id, or delete \(id) first (DELETE /v1/projects/\(id))"
        case .forkUnsupported(let why): "cannot fork: \(why)"
        }
    }
}

extension CacheError {
    /// Up to 50 paths, then how many more: an error message stays readable.
    static func list(_ paths: [String]) -> String {
        let shown = paths.prefix(50).joined(separator: ", ")
        return paths.count > 50 ? "\(shown) and \(paths.count - 50) more" : shown
    }
}

/// Runs a system call like ``Sandbox/syscall(_:_:)`` but throws ``CacheError/system(_:)``.
@discardableResult
func sys<T: BinaryInteger>(_ call: @autoclosure () -> String, _ body: () -> T) throws(CacheError) -> T {
    do {
        return try syscall(call(), body)
    } catch let error as SystemError {
        throw .system(error)
    } catch {
        throw .system(SystemError(call(), errno: EIO))
    }
}
