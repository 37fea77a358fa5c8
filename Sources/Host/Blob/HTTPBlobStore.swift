/// Read-only blobs at plain `http(s)://` URLs: public archives, S3 presigned URLs, Azure SAS URLs.
///
/// The key *is* the URL. Nothing can be written: a presigned GET URL grants reads only.
public struct HTTPBlobStore: BlobStore {
    public let policy: TransferPolicy
    /// The addresses its transfers may connect to; by default only public ones.
    public let sourceAddresses: SourceAddressPolicy

    public init(policy: TransferPolicy = TransferPolicy(), sourceAddresses: SourceAddressPolicy = SourceAddressPolicy())
    {
        self.policy = policy
        self.sourceAddresses = sourceAddresses
    }

    public var location: String { "http" }

    /// The URL without its query, which may hold a signature or SAS token.
    static func redacted(_ url: String) -> String {
        url.split(separator: "?", maxSplits: 1).first.map(String.init) ?? url
    }

    func request(_ method: CurlRequest.Method, _ url: String) throws(CacheError) -> CurlRequest {
        guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
            throw .unsupportedSource("not an http(s) URL: \(Self.redacted(url))")
        }
        var request = CurlRequest(method: method, url: url, what: Self.redacted(url))
        request.sourceAddresses = sourceAddresses
        return request
    }

    public func get(_ key: String, to path: String, limit: Int64?, progress: ProgressHandler?) async throws(CacheError)
        -> BlobInfo
    {
        try await CurlStore.fetch(request(.get, key), to: path, limit: limit, policy: policy, progress: progress)
    }

    public func put(_ key: String, from path: String) async throws(CacheError) -> BlobInfo {
        throw .readOnlyStore(Self.redacted(key))
    }

    public func head(_ key: String) async throws(CacheError) -> BlobInfo? {
        try await CurlStore.head(request(.head, key), policy: policy)
    }

    public func delete(_ key: String) async throws(CacheError) {
        throw .readOnlyStore(Self.redacted(key))
    }
}
