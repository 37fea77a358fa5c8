/// Credentials and endpoint of an S3-compatible service (AWS, MinIO, Ceph, moto, …).
public struct S3Configuration: Sendable, Equatable {
    /// Scheme, host and port, e.g. `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:9000`.
    public var endpoint: String
    public var region: String
    public var accessKeyID: String
    public var secretAccessKey: String
    /// For temporary credentials (STS); sent as `x-amz-security-token`.
    public var sessionToken: String?

    public init(
        endpoint: String, region: String = "us-east-1", accessKeyID: String, secretAccessKey: String,
        sessionToken: String? = nil
    ) {
        self.endpoint = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint
        self.region = region
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }
}

/// One S3 bucket, addressed path-style (`endpoint/bucket/key`), which every S3-compatible
/// server understands. Requests are signed by libcurl's built-in SigV4 (`CURLOPT_AWS_SIGV4`).
public struct S3BlobStore: BlobStore {
    public let configuration: S3Configuration
    public let bucket: String
    public let policy: TransferPolicy

    public init(_ configuration: S3Configuration, bucket: String, policy: TransferPolicy = TransferPolicy()) {
        self.configuration = configuration
        self.bucket = bucket
        self.policy = policy
    }

    public var location: String { "s3://\(bucket) at \(configuration.endpoint)" }

    /// `payload` is the hex SHA-256 of the body, or `UNSIGNED-PAYLOAD` for requests without
    /// one. S3 requires the header; curl puts the same value into the canonical request.
    func request(_ method: CurlRequest.Method, _ key: String, payload: String = "UNSIGNED-PAYLOAD")
        throws(CacheError) -> CurlRequest
    {
        try BlobKey.validate(key)
        let c = configuration
        var headers = [("x-amz-content-sha256", payload)]
        if let token = c.sessionToken { headers.append(("x-amz-security-token", token)) }
        let fixed = headers
        return CurlRequest(
            method: method, url: "\(c.endpoint)/\(BlobKey.encode(bucket))/\(BlobKey.encode(key))",
            what: "s3://\(bucket)/\(key)", awsSigV4: "aws:amz:\(c.region):s3",
            credentials: "\(c.accessKeyID):\(c.secretAccessKey)", headers: { _, _ in fixed })
    }

    public func get(_ key: String, to path: String, limit: Int64?, progress: ProgressHandler?) async throws(CacheError)
        -> BlobInfo
    {
        try await CurlStore.fetch(request(.get, key), to: path, limit: limit, policy: policy, progress: progress)
    }

    public func put(_ key: String, from path: String) async throws(CacheError) -> BlobInfo {
        _ = try request(.put, key)
        let store = self
        return try await CurlStore.send(from: path, policy: policy) { sha in
            // Validated above, so building the request again cannot fail.
            (try? store.request(.put, key, payload: sha))!
        }.1
    }

    public func head(_ key: String) async throws(CacheError) -> BlobInfo? {
        try await CurlStore.head(request(.head, key), policy: policy)
    }

    public func delete(_ key: String) async throws(CacheError) {
        try await CurlStore.delete(request(.delete, key), policy: policy)
    }
}
