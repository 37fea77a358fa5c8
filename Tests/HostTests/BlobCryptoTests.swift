import Foundation
import Host
import TestSupport
import Testing

/// SHA-256 and HMAC-SHA256 against published vectors, and Azure Shared Key signatures
/// against Microsoft's own Python SDK signer.
@Suite struct BlobCryptoTests {
    func hex(_ s: String) -> String { SHA256.hash(Array(s.utf8)).hexString }

    @Test func sha256MatchesFIPSVectors() {
        #expect(hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(
            hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(
            SHA256.hash([UInt8](repeating: 0x61, count: 1_000_000)).hexString
                == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test func streamingInOddChunksEqualsOneShotAndPython() throws {
        let data = (0..<100_003).map { UInt8(truncatingIfNeeded: $0 &* 7919 &+ ($0 >> 5)) }
        var h = SHA256()
        var i = 0
        for step in [1, 63, 64, 65, 127, 1000, 4096] {
            let end = min(i + step, data.count)
            h.update(Array(data[i..<end]))
            i = end
        }
        h.update(Array(data[i...]))
        let streamed = h.finalize().hexString
        let python = try PythonProcess.run(
            "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())", stdin: Data(data))
        #expect(streamed == SHA256.hash(data).hexString)
        #expect(streamed == python.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// A copy of a hasher mid-stream goes on independently: the OpenSSL context is copied
    /// on write, never shared.
    @Test func aCopiedHasherGoesOnIndependently() {
        var a = SHA256()
        a.update(Array("ab".utf8))
        var b = a
        a.update(Array("c".utf8))
        b.update(Array("d".utf8))
        #expect(a.finalize().hexString == hex("abc"))
        #expect(b.finalize().hexString == hex("abd"))
        // finalize starts over.
        a.update(Array("abc".utf8))
        #expect(a.finalize().hexString == hex("abc"))
    }

    @Test func hmacMatchesRFC4231() {
        let case1 = HMACSHA256.mac(key: [UInt8](repeating: 0x0b, count: 20), message: Array("Hi There".utf8))
        #expect(case1.hexString == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        let case2 = HMACSHA256.mac(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8))
        #expect(case2.hexString == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        // Key longer than the block size: hashed first.
        let case6 = HMACSHA256.mac(
            key: [UInt8](repeating: 0xaa, count: 131),
            message: Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8))
        #expect(case6.hexString == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    }

    /// AWS's published SigV4 example (GET /test.txt, range 0-9): the signing-key chain and the
    /// final signature exercise HMAC exactly as a real signer does.
    @Test func hmacChainReproducesAWSPublishedSignature() {
        let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
        var key = HMACSHA256.mac(key: Array("AWS4\(secret)".utf8), message: Array("20130524".utf8))
        for part in ["us-east-1", "s3", "aws4_request"] { key = HMACSHA256.mac(key: key, message: Array(part.utf8)) }
        let canonical = """
            GET
            /test.txt

            host:examplebucket.s3.amazonaws.com
            range:bytes=0-9
            x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            x-amz-date:20130524T000000Z

            host;range;x-amz-content-sha256;x-amz-date
            e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
            """
        let toSign = "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\(hex(canonical))"
        #expect(hex(canonical) == "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972")
        #expect(
            HMACSHA256.mac(key: key, message: Array(toSign.utf8)).hexString
                == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    }

    // MARK: - Azure Shared Key

    static let azureAvailable = PythonProcess.hasModule("azure.storage.blob")

    @Test(.enabled(if: azureAvailable, "needs `pip install azure-storage-blob` (the reference signer)"))
    func azureSharedKeyMatchesTheSDKSigner() throws {
        let key = Data((0..<64).map { UInt8($0 * 3 % 256) }).base64EncodedString()
        let date = "Sun, 22 Nov 2026 04:18:34 GMT"
        let requests: [(String, String, [(String, String)])] = [
            ("GET", "https://acct.blob.core.windows.net/projects/app%20v2.tar.gz", [("x-ms-date", date)]),
            (
                "PUT", "https://acct.blob.core.windows.net/projects/snap.tar.zst",
                [
                    ("x-ms-date", date), ("x-ms-blob-type", "BlockBlob"), ("Content-Length", "1048576"),
                    ("Content-Type", "application/zstd"), ("x-ms-meta-project", "demo"),
                ]
            ),
            (
                "HEAD", "http://127.0.0.1:10000/devstoreaccount1/c/a/b.tgz",
                [("x-ms-date", date), ("Content-Length", "0")]
            ),
            (
                "GET", "https://acct.blob.core.windows.net/c?restype=container&comp=list&prefix=snap",
                [("x-ms-date", date), ("x-ms-range", "bytes=100-")]
            ),
            (
                "DELETE", "https://acct.blob.core.windows.net/c/old.tgz",
                [("x-ms-date", date), ("If-Match", "\"0x8D\"")]
            ),
        ]
        let signer = AzureSharedKey(account: "acct", key: Array(Data(base64Encoded: key)!))
        var specs: [[String: Any]] = []
        var ours: [String] = []
        for (method, url, headers) in requests {
            let all = headers + [("x-ms-version", AzureBlobStore.serviceVersion)]
            ours.append(signer.authorization(method: method, url: url, headers: all))
            specs.append([
                "method": method, "url": url, "account": "acct", "key": key,
                "headers": Dictionary(all, uniquingKeysWith: { a, _ in a }),
            ])
        }
        let reference = try PythonProcess.run(
            Self.referenceSigner, stdin: try JSONSerialization.data(withJSONObject: specs)
        ).split(separator: "\n").map(String.init)
        #expect(ours == reference)
        #expect(ours.count == 5)
    }

    static let referenceSigner = """
        import sys, json
        from azure.core.pipeline import PipelineRequest, PipelineContext
        from azure.core.pipeline.transport import HttpRequest
        from azure.storage.blob._shared.authentication import SharedKeyCredentialPolicy
        for spec in json.load(sys.stdin):
            req = HttpRequest(spec["method"], spec["url"], headers=spec["headers"])
            SharedKeyCredentialPolicy(spec["account"], spec["key"]).on_request(PipelineRequest(req, PipelineContext(None)))
            print(req.headers["Authorization"])
        """
}
