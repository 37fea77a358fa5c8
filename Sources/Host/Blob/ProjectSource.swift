/// Where a project's archive comes from, parsed from the URL it was registered with.
public enum ProjectSource: Sendable, Equatable, CustomStringConvertible {
    /// `file:///abs/path.tar.gz`: a file on this host, only under an allowed root.
    case file(path: String)
    /// `blob:key`: a blob in the host's own store (archives uploaded to the host).
    case stored(key: String)
    /// `http(s)://…`: a public URL, S3 presigned URL or Azure SAS URL.
    case http(url: String)
    /// `s3://bucket/key`: signed with the host's S3 credentials.
    case s3(bucket: String, key: String)
    /// `azure://container/blob`: signed with the host's Azure connection string.
    case azure(container: String, blob: String)

    /// Parses a source URL; throws ``CacheError/unsupportedSource(_:)`` for anything else.
    public init(parsing text: String) throws(CacheError) {
        func split(_ rest: Substring) throws(CacheError) -> (String, String) {
            guard let slash = rest.firstIndex(of: "/"), slash != rest.startIndex else {
                throw .unsupportedSource("expected scheme://container/key in \"\(text)\"")
            }
            let key = String(rest[rest.index(after: slash)...])
            try BlobKey.validate(key)
            return (String(rest[..<slash]), key)
        }
        if text.hasPrefix("file://") {
            let path = String(text.dropFirst(7)).removingPercentEncoding ?? ""
            guard path.hasPrefix("/") else { throw .unsupportedSource("file:// needs an absolute path") }
            try BlobKey.validate(String(path.dropFirst()))
            self = .file(path: path)
        } else if text.hasPrefix("blob:") {
            let key = String(text.dropFirst(5))
            try BlobKey.validate(key)
            self = .stored(key: key)
        } else if text.hasPrefix("http://") || text.hasPrefix("https://") {
            guard !text.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value == 0x7f }) else {
                throw .unsupportedSource("URL contains spaces or control characters")
            }
            self = .http(url: text)
        } else if text.hasPrefix("s3://") {
            let (bucket, key) = try split(text.dropFirst(5))
            self = .s3(bucket: bucket, key: key)
        } else if text.hasPrefix("azure://") {
            let (container, blob) = try split(text.dropFirst(8))
            self = .azure(container: container, blob: blob)
        } else {
            throw .unsupportedSource("unknown scheme in \"\(HTTPBlobStore.redacted(text))\"")
        }
    }

    /// The source as a URL again, with any query (SAS token, signature) removed.
    public var description: String {
        switch self {
        case .file(let path): "file://\(path)"
        case .stored(let key): "blob:\(key)"
        case .http(let url): HTTPBlobStore.redacted(url)
        case .s3(let bucket, let key): "s3://\(bucket)/\(key)"
        case .azure(let container, let blob): "azure://\(container)/\(blob)"
        }
    }
}

/// The stores a host can read sources from, and the one it writes uploads and snapshots to.
public struct BlobStores: Sendable {
    /// Where uploaded archives and write-back snapshots go (a ``LocalBlobStore`` by default).
    public var primary: any BlobStore
    /// Directories `file://` sources may point into. Empty: `file://` is refused, so a
    /// registration cannot read arbitrary host files such as `/etc/shadow`.
    public var fileRoots: [String]
    public var s3: S3Configuration?
    public var azure: AzureConfiguration?
    public var policy: TransferPolicy
    /// The addresses `http(s)://` sources may reach; by default only public ones.
    public var sourceAddresses = SourceAddressPolicy()

    public init(
        primary: any BlobStore, fileRoots: [String] = [], s3: S3Configuration? = nil, azure: AzureConfiguration? = nil,
        policy: TransferPolicy = TransferPolicy()
    ) {
        self.primary = primary
        self.fileRoots = fileRoots
        self.s3 = s3
        self.azure = azure
        self.policy = policy
    }

    /// ``resolve(_:)``, and for an `http(s)://` source the address check of
    /// ``SourceAddressPolicy/check(url:)``: what a registration must pass.
    public func check(_ source: ProjectSource) async throws(CacheError) {
        _ = try resolve(source)
        if case .http(let url) = source { try await sourceAddresses.check(url: url) }
    }

    /// The store and key that serve `source`, or a clear error when this host cannot.
    public func resolve(_ source: ProjectSource) throws(CacheError) -> (store: any BlobStore, key: String) {
        switch source {
        case .stored(let key):
            return (primary, key)
        case .file(let path):
            for root in fileRoots {
                let base = root.hasSuffix("/") ? root : root + "/"
                if path.hasPrefix(base) {
                    return (LocalBlobStore(directory: root, policy: policy), String(path.dropFirst(base.count)))
                }
            }
            throw .unsupportedSource("\(path) is outside the allowed file roots")
        case .http(let url):
            return (HTTPBlobStore(policy: policy, sourceAddresses: sourceAddresses), url)
        case .s3(let bucket, let key):
            guard let s3 else { throw .unsupportedSource("no S3 credentials configured for s3://\(bucket)") }
            return (S3BlobStore(s3, bucket: bucket, policy: policy), key)
        case .azure(let container, let blob):
            guard let azure else { throw .unsupportedSource("no Azure connection string configured") }
            return (AzureBlobStore(azure, container: container, policy: policy), blob)
        }
    }
}
