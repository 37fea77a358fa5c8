import Foundation
import Glibc

/// Blobs as files under a directory: the embedded default, and how `file://` sources are read.
///
/// Reads go through libcurl's `file://` handler like every other source, so limits,
/// progress and checksums behave the same. Writes land in a temporary file that is synced
/// and renamed into place: a reader sees the old blob or the new one, never a torn one.
public struct LocalBlobStore: BlobStore {
    /// The directory holding the blobs.
    public let directory: String
    public let policy: TransferPolicy

    /// A store rooted at `directory` (created on first write).
    public init(directory: String, policy: TransferPolicy = TransferPolicy(attempts: 1)) {
        self.directory = directory.hasSuffix("/") && directory.count > 1 ? String(directory.dropLast()) : directory
        self.policy = policy
    }

    public var location: String { "file://\(directory)" }

    func path(_ key: String) -> String { directory == "/" ? "/\(key)" : "\(directory)/\(key)" }

    public func get(_ key: String, to path: String, limit: Int64?, progress: ProgressHandler?) async throws(CacheError)
        -> BlobInfo
    {
        try BlobKey.validate(key)
        let source = self.path(key)
        let request = CurlRequest(
            method: .get, url: "file://" + BlobKey.encode(source), what: "file://\(source)", protocols: "file")
        var info = try await CurlStore.fetch(request, to: path, limit: limit, policy: policy, progress: progress)
        info.etag = try await head(key)?.etag
        return info
    }

    public func put(_ key: String, from source: String) async throws(CacheError) -> BlobInfo {
        try BlobKey.validate(key)
        let target = path(key)
        return try await BlockingThread.run("corral-blob-put") { () throws(CacheError) -> BlobInfo in
            try Self.makeParents(of: target)
            let temporary = "\(target).tmp-\(UUID().uuidString)"
            do throws(CacheError) {
                let info = try Self.copy(from: source, to: temporary)
                try sys("rename(\(target))") { rename(temporary, target) }
                return info
            } catch {
                unlink(temporary)
                throw error
            }
        }
    }

    /// Removes the temporary files of puts a killed process never renamed into place
    /// (`<key>.tmp-<UUID>`); returns how many. Called when the host that owns this store
    /// starts, before anything writes to it.
    @discardableResult
    public func removeTemporaries() -> Int {
        guard let walk = FileManager.default.enumerator(atPath: directory) else { return 0 }
        var removed = 0
        while let relative = walk.nextObject() as? String {
            let name = relative.split(separator: "/").last.map(String.init) ?? relative
            guard let mark = name.range(of: ".tmp-", options: .backwards),
                UUID(uuidString: String(name[mark.upperBound...])) != nil
            else { continue }
            let path = self.path(relative)
            var st = stat()
            if lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFREG, unlink(path) == 0 { removed += 1 }
        }
        return removed
    }

    public func head(_ key: String) async throws(CacheError) -> BlobInfo? {
        try BlobKey.validate(key)
        var st = stat()
        if stat(path(key), &st) != 0 {
            if errno == ENOENT || errno == ENOTDIR { return nil }
            throw .system(.init("stat(\(path(key)))", errno: errno))
        }
        guard st.st_mode & S_IFMT == S_IFREG else { return nil }
        // No hash on HEAD (it would read the whole blob): inode, mtime and size identify a
        // version of a file that is only ever replaced by rename.
        let etag = "\"\(st.st_ino)-\(st.st_mtim.tv_sec)\(st.st_mtim.tv_nsec)-\(st.st_size)\""
        return BlobInfo(size: Int64(st.st_size), etag: etag)
    }

    /// Removes the blob, then the directories it leaves empty below its first segment
    /// (`uploads/<id>/` goes with a deleted project's last upload; `uploads/` stays, so
    /// another project's upload is never left without its parent mid-write).
    public func delete(_ key: String) async throws(CacheError) {
        try BlobKey.validate(key)
        if unlink(path(key)) != 0 && errno != ENOENT {
            throw .system(.init("unlink(\(path(key)))", errno: errno))
        }
        var parents = key.split(separator: "/").dropLast()
        while parents.count > 1 {
            // ENOTEMPTY (other blobs) or ENOENT: nothing more to tidy.
            guard rmdir(path(parents.joined(separator: "/"))) == 0 else { break }
            parents.removeLast()
        }
    }

    // MARK: - Helpers

    static func makeParents(of path: String) throws(CacheError) {
        var prefix = ""
        for part in path.split(separator: "/").dropLast() {
            prefix += "/\(part)"
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                throw .system(.init("mkdir(\(prefix))", errno: errno))
            }
        }
    }

    /// Copies and hashes `source` into a new file, synced before it is renamed into place.
    static func copy(from source: String, to target: String) throws(CacheError) -> BlobInfo {
        let input = try sys("open(\(source))") { open(source, O_RDONLY | O_CLOEXEC) }
        defer { close(input) }
        let output = try sys("open(\(target))") {
            open(target, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        }
        defer { close(output) }
        var hasher = SHA256()
        var size: Int64 = 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = try sys("read(\(source))") { read(input, buffer.baseAddress, buffer.count) }
            if n == 0 { break }
            var done = 0
            while done < n {
                done += try sys("write(\(target))") { write(output, buffer.baseAddress! + done, n - done) }
            }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            size += Int64(n)
        }
        try sys("fsync(\(target))") { fsync(output) }
        return BlobInfo(size: size, sha256: hasher.finalize().hexString)
    }
}
