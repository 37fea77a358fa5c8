import Foundation

/// An Azure Storage account as a connection string describes it.
public struct AzureConfiguration: Sendable, Equatable {
    public var accountName: String
    /// The decoded account key (the HMAC key of Shared Key signing).
    public var accountKey: [UInt8]
    /// `https://<account>.blob.core.windows.net`, or the `BlobEndpoint` given (Azurite, sovereign clouds).
    public var blobEndpoint: String

    /// Parses `DefaultEndpointsProtocol=https;AccountName=…;AccountKey=…;EndpointSuffix=…`
    /// (or with `BlobEndpoint=…`).
    public init(connectionString: String) throws(CacheError) {
        var fields: [String: String] = [:]
        for part in connectionString.split(separator: ";") {
            guard let eq = part.firstIndex(of: "=") else { continue }
            fields[part[..<eq].lowercased()] = String(part[part.index(after: eq)...])
        }
        guard let name = fields["accountname"], let key = fields["accountkey"],
            let decoded = Data(base64Encoded: key)
        else { throw .unsupportedSource("Azure connection string needs AccountName and a base64 AccountKey") }
        accountName = name
        accountKey = Array(decoded)
        if let endpoint = fields["blobendpoint"] {
            blobEndpoint = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint
        } else {
            let scheme = fields["defaultendpointsprotocol"] ?? "https"
            blobEndpoint = "\(scheme)://\(name).blob.\(fields["endpointsuffix"] ?? "core.windows.net")"
        }
    }
}

/// Azure Storage Shared Key authorization, computed here (HMAC-SHA256 over the canonical
/// request) because libcurl has no built-in signer for it.
public struct AzureSharedKey: Sendable {
    public let account: String
    let key: [UInt8]

    public init(account: String, key: [UInt8]) {
        self.account = account
        self.key = key
    }

    /// The standard headers signed by position, in the service's order.
    static let positional = [
        "content-encoding", "content-language", "content-length", "content-md5", "content-type", "date",
        "if-modified-since", "if-match", "if-none-match", "if-unmodified-since", "range",
    ]

    /// The exact string the service signs for this request (version 2009-09-19 and later).
    public func stringToSign(method: String, url: String, headers: [(String, String)]) -> String {
        var byName: [String: String] = [:]
        for (name, value) in headers where !value.isEmpty { byName[name.lowercased()] = value }
        // Since 2015-02-21 a zero Content-Length is signed as empty.
        if byName["content-length"] == "0" { byName["content-length"] = nil }
        var lines = [method.uppercased()]
        lines += Self.positional.map { byName[$0] ?? "" }
        let canonicalHeaders = byName.filter { $0.key.hasPrefix("x-ms-") }.sorted { $0.key < $1.key }
            .map { "\($0.key):\($0.value.trimmingCharacters(in: .whitespaces))\n" }.joined()
        return lines.joined(separator: "\n") + "\n" + canonicalHeaders + canonicalResource(url)
    }

    /// `/account/path` plus each query parameter as `\nname:value`, sorted by name.
    func canonicalResource(_ url: String) -> String {
        let afterScheme = url.range(of: "://").map { url[$0.upperBound...] } ?? url[...]
        let pathAndQuery = afterScheme.firstIndex(of: "/").map { afterScheme[$0...] } ?? "/"
        let parts = pathAndQuery.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        var resource = "/\(account)\(parts[0])"
        if parts.count > 1 {
            var params: [String: [String]] = [:]
            for pair in parts[1].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let name = (kv[0].removingPercentEncoding ?? String(kv[0])).lowercased()
                let value = kv.count > 1 ? (kv[1].removingPercentEncoding ?? String(kv[1])) : ""
                params[name, default: []].append(value)
            }
            for (name, values) in params.sorted(by: { $0.key < $1.key }) {
                resource += "\n\(name):\(values.sorted().joined(separator: ","))"
            }
        }
        return resource
    }

    /// The `Authorization` header value: `SharedKey account:base64(HMAC-SHA256(key, stringToSign))`.
    public func authorization(method: String, url: String, headers: [(String, String)]) -> String {
        let mac = HMACSHA256.mac(
            key: key, message: Array(stringToSign(method: method, url: url, headers: headers).utf8))
        return "SharedKey \(account):\(Data(mac).base64EncodedString())"
    }
}

/// One container of an Azure Storage account, authorized with Shared Key.
///
/// Uploads are single `Put Blob` calls (block blobs up to 5000 MiB with service version
/// 2019-12-12 and later), which is plenty for project archives and snapshots.
public struct AzureBlobStore: BlobStore {
    public static let serviceVersion = "2021-08-06"

    public let configuration: AzureConfiguration
    public let container: String
    public let policy: TransferPolicy
    let signer: AzureSharedKey
    /// Injected in tests to make signatures reproducible.
    let now: @Sendable () -> Date

    public init(
        _ configuration: AzureConfiguration, container: String, policy: TransferPolicy = TransferPolicy(),
        now: @escaping @Sendable () -> Date = Date.init
    ) {
        self.configuration = configuration
        self.container = container
        self.policy = policy
        self.signer = AzureSharedKey(account: configuration.accountName, key: configuration.accountKey)
        self.now = now
    }

    public var location: String { "azure://\(container) at \(configuration.blobEndpoint)" }

    func request(_ method: CurlRequest.Method, _ key: String, extra: [(String, String)] = [])
        throws(CacheError) -> CurlRequest
    {
        try BlobKey.validate(key)
        let url = "\(configuration.blobEndpoint)/\(BlobKey.encode(container))/\(BlobKey.encode(key))"
        let signer = self.signer
        let now = self.now
        return CurlRequest(method: method, url: url, what: "azure://\(container)/\(key)") { range, length in
            // Fresh date and signature per attempt: the service rejects requests older than 15 minutes.
            var headers = [("x-ms-date", HTTPDate.format(now())), ("x-ms-version", Self.serviceVersion)] + extra
            var signed = headers
            if let range { signed.append(("Range", range)) }
            if let length { signed.append(("Content-Length", String(length))) }
            headers.append(("Authorization", signer.authorization(method: method.rawValue, url: url, headers: signed)))
            return headers
        }
    }

    public func get(_ key: String, to path: String, limit: Int64?, progress: ProgressHandler?) async throws(CacheError)
        -> BlobInfo
    {
        try await CurlStore.fetch(request(.get, key), to: path, limit: limit, policy: policy, progress: progress)
    }

    public func put(_ key: String, from path: String) async throws(CacheError) -> BlobInfo {
        let request = try request(.put, key, extra: [("x-ms-blob-type", "BlockBlob")])
        return try await CurlStore.send(from: path, policy: policy) { _ in request }.1
    }

    public func head(_ key: String) async throws(CacheError) -> BlobInfo? {
        try await CurlStore.head(request(.head, key), policy: policy)
    }

    public func delete(_ key: String) async throws(CacheError) {
        try await CurlStore.delete(request(.delete, key), policy: policy)
    }
}

/// RFC 1123 dates (`Sun, 06 Nov 1994 08:49:37 GMT`), independent of the process locale.
enum HTTPDate {
    static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    static func format(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970.rounded(.down))
        var tm = tm()
        gmtime_r(&t, &tm)
        func two(_ v: Int32) -> String { String(v).leftPadded(to: 2) }
        return "\(days[Int(tm.tm_wday)]), \(two(tm.tm_mday)) \(months[Int(tm.tm_mon)]) \(tm.tm_year + 1900) "
            + "\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec)) GMT"
    }
}
