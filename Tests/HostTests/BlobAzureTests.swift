import Foundation
import Host
import TestSupport
import Testing

/// Azure Blob Storage with Shared Key signing against a fake endpoint that verifies every
/// signature with the Python SDK's canonicalization.
@Suite(.enabled(if: AzureFakeServer.isAvailable, "needs `pip install azure-storage-blob`"), .serialized)
struct BlobAzureTests {
    let tmp: TemporaryDirectory
    let payload: [UInt8]

    init() throws {
        tmp = try TemporaryDirectory(prefix: "corral-blob-azure")
        payload = (0..<120_000).map { UInt8(truncatingIfNeeded: $0 &* 17 &+ ($0 >> 3)) }
        try Data(payload).write(to: URL(fileURLWithPath: tmp.path + "/src.bin"))
    }

    func store(_ server: AzureFakeServer, connectionString: String? = nil) throws -> AzureBlobStore {
        AzureBlobStore(
            try AzureConfiguration(connectionString: connectionString ?? server.connectionString),
            container: "projects",
            policy: TransferPolicy(attempts: 2, backoff: .milliseconds(10)))
    }

    @Test func putGetHeadDeleteRoundTrip() async throws {
        let server = try AzureFakeServer()
        defer { server.stop() }
        let azure = try store(server)
        let key = "snapshots/web app.tar.zst"
        let put = try await azure.put(key, from: tmp.path + "/src.bin")
        #expect(put.size == 120_000)
        let head = try #require(try await azure.head(key))
        #expect(head.size == 120_000)
        #expect(head.etag == put.etag)
        let got = try await azure.get(key, to: tmp.path + "/out.bin", limit: nil, progress: nil)
        #expect(got.sha256 == SHA256.hash(payload).hexString)
        try await azure.delete(key)
        #expect(try await azure.head(key) == nil)
    }

    @Test func resumedDownloadSignsTheRangeHeader() async throws {
        let server = try AzureFakeServer(truncateOnce: ["/projects/big.bin"])
        defer { server.stop() }
        let azure = try store(server)
        _ = try await azure.put("big.bin", from: tmp.path + "/src.bin")
        let got = try await azure.get("big.bin", to: tmp.path + "/out.bin", limit: nil, progress: nil)
        #expect(got.size == 120_000)
        #expect(Array(FileManager.default.contents(atPath: tmp.path + "/out.bin") ?? Data()) == payload)
    }

    @Test func wrongKeyIsRejectedByTheServer() async throws {
        let server = try AzureFakeServer()
        defer { server.stop() }
        let wrongKey = Data(repeating: 7, count: 64).base64EncodedString()
        let bad = try store(
            server,
            connectionString: "AccountName=\(server.account);AccountKey=\(wrongKey);"
                + "BlobEndpoint=http://127.0.0.1:\(server.port)/\(server.account)")
        await #expect(throws: CacheError.httpStatus(403, "azure://projects/x.bin: AuthenticationFailed")) {
            try await bad.put("x.bin", from: tmp.path + "/src.bin")
        }
    }

    @Test func connectionStringWithoutAKeyIsRefused() {
        #expect(
            throws: CacheError.unsupportedSource("Azure connection string needs AccountName and a base64 AccountKey")
        ) {
            try AzureConfiguration(connectionString: "AccountName=a;EndpointSuffix=core.windows.net")
        }
        #expect(
            (try? AzureConfiguration(connectionString: "AccountName=acct;AccountKey=AAAA"))?.blobEndpoint
                == "https://acct.blob.core.windows.net")
    }
}
