import Foundation
import Glibc

/// A place archives and snapshots live: a directory, a web server, S3, Azure Blob Storage.
///
/// Every call does its blocking work (libcurl, file copies) on a dedicated thread, so
/// callers may await it from anywhere. Keys are `/`-separated relative names without `.`
/// or `..` segments (see ``BlobKey``).
public protocol BlobStore: Sendable {
    /// Where this store points, for logs and errors; never contains a secret.
    var location: String { get }

    /// Downloads `key` into a new file at `path` (replacing it), reporting progress. On any
    /// failure the file is removed. Fails with ``CacheError/tooLarge(_:)`` past `limit` bytes.
    func get(_ key: String, to path: String, limit: Int64?, progress: ProgressHandler?) async throws(CacheError)
        -> BlobInfo

    /// Uploads the file at `path` as `key`, replacing any previous blob atomically.
    func put(_ key: String, from path: String) async throws(CacheError) -> BlobInfo

    /// Size and validators of `key`, or nil when it does not exist.
    func head(_ key: String) async throws(CacheError) -> BlobInfo?

    /// Removes `key`; removing a missing key succeeds.
    func delete(_ key: String) async throws(CacheError)
}

/// Validation and URL encoding of blob keys.
public enum BlobKey {
    /// Throws unless `key` is non-empty, relative, and free of empty, `.` and `..` segments
    /// and control characters, so it can be neither a path escape nor a URL injection.
    public static func validate(_ key: String) throws(CacheError) {
        let segments = key.split(separator: "/", omittingEmptySubsequences: false)
        let bad =
            key.isEmpty || key.utf8.count > 1024
            || segments.contains { $0.isEmpty || $0 == "." || $0 == ".." }
            || key.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7f }
        if bad { throw .unsupportedSource("invalid blob key \"\(key)\"") }
    }

    /// Percent-encodes everything but RFC 3986 unreserved characters and `/`, which is
    /// also the canonical form SigV4 and Azure Shared Key sign.
    public static func encode(_ key: String) -> String {
        var out = ""
        for byte in key.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"), UInt8(ascii: "/"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }
}

extension String {
    func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}

// MARK: - Shared helpers for curl-backed stores

enum CurlStore {
    /// Runs a download on its own thread into a fresh file; removes the file on failure.
    static func fetch(
        _ request: CurlRequest, to path: String, limit: Int64?, policy: TransferPolicy, progress: ProgressHandler?
    ) async throws(CacheError) -> BlobInfo {
        try await BlockingThread.cancellable("corral-fetch") { cancel throws(CacheError) -> BlobInfo in
            let fd = try sys("open(\(path))") { open(path, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600) }
            defer { close(fd) }
            do throws(CacheError) {
                return try Curl.download(
                    request, fd: fd, limit: limit, policy: policy, progress: progress, cancel: cancel)
            } catch {
                unlink(path)
                throw error
            }
        }
    }

    /// Hashes the file, then runs an upload built from the hash on its own thread.
    static func send(
        from path: String, policy: TransferPolicy, _ request: @escaping @Sendable (_ sha256: String) -> CurlRequest
    ) async throws(CacheError) -> (CurlResponse, BlobInfo) {
        try await BlockingThread.cancellable("corral-upload") { cancel throws(CacheError) in
            let fd = try sys("open(\(path))") { open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) }
            defer { close(fd) }
            let (size, sha) = try FileHash.sha256(fd: fd)
            let r = request(sha)
            let response = try Curl.upload(r, fd: fd, size: size, policy: policy, cancel: cancel)
            guard (200..<300).contains(response.status) else {
                throw .httpStatus(response.status, "\(r.what): \(response.body.prefix(300))")
            }
            return (response, BlobInfo(size: size, etag: response.etag, sha256: sha))
        }
    }

    /// HEAD, mapped to nil for 404.
    static func head(_ request: CurlRequest, policy: TransferPolicy) async throws(CacheError) -> BlobInfo? {
        try await BlockingThread.cancellable("corral-head") { cancel throws(CacheError) -> BlobInfo? in
            let response = try Curl.simple(request, policy: policy, cancel: cancel)
            switch response.status {
            case 200..<300: return BlobInfo(size: response.contentLength ?? 0, etag: response.etag)
            case 404: return nil
            default: throw .httpStatus(response.status, request.what)
            }
        }
    }

    /// DELETE; a missing blob counts as deleted.
    static func delete(_ request: CurlRequest, policy: TransferPolicy) async throws(CacheError) {
        try await BlockingThread.cancellable("corral-delete") { cancel throws(CacheError) in
            let response = try Curl.simple(request, policy: policy, cancel: cancel)
            guard (200..<300).contains(response.status) || response.status == 404 else {
                throw .httpStatus(response.status, request.what)
            }
        }
    }
}

/// Streaming SHA-256 of an open file.
enum FileHash {
    static func sha256(fd: Int32) throws(CacheError) -> (Int64, String) {
        var hasher = SHA256()
        var size: Int64 = 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = try sys("pread") { pread(fd, buffer.baseAddress, buffer.count, off_t(size)) }
            if n == 0 { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            size += Int64(n)
        }
        return (size, hasher.finalize().hexString)
    }
}
