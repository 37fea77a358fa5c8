import COpenSSL

/// SHA-256, streaming, through OpenSSL's EVP interface (libcrypto is linked already for
/// the cluster's TLS to its store): archive checksums, manifest digests, token digests and HMAC-SHA256 for
/// Azure Shared Key. OpenSSL picks the fastest implementation the CPU offers (SHA-NI, AVX2).
///
/// A value type: a copy hashes on from where the original was, independently.
public struct SHA256: @unchecked Sendable {
    /// The digest length in bytes.
    public static let byteCount = 32
    static let blockSize = 64

    /// Owns one `EVP_MD_CTX`; copied on write, so copies of a ``SHA256`` never share state.
    private final class Context {
        let pointer: OpaquePointer

        init() {
            // Allocation and SHA-256 itself are always available; a failure here is memory
            // exhaustion, where nothing can go on.
            guard let pointer = EVP_MD_CTX_new(), EVP_DigestInit_ex(pointer, EVP_sha256(), nil) == 1 else {
                fatalError("EVP SHA-256 is unavailable")
            }
            self.pointer = pointer
        }

        init(copying other: Context) {
            guard let pointer = EVP_MD_CTX_new(), EVP_MD_CTX_copy_ex(pointer, other.pointer) == 1 else {
                fatalError("EVP_MD_CTX_copy_ex failed")
            }
            self.pointer = pointer
        }

        deinit { EVP_MD_CTX_free(pointer) }
    }

    private var context = Context()

    public init() {}

    /// Hashes `bytes` in one call.
    public static func hash<Bytes: Sequence>(_ bytes: Bytes) -> [UInt8] where Bytes.Element == UInt8 {
        var h = SHA256()
        h.update(Array(bytes))
        return h.finalize()
    }

    /// Feeds more input.
    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// Feeds more input from raw memory.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        unique()
        EVP_DigestUpdate(context.pointer, base, bytes.count)
    }

    /// Returns the 32-byte digest of everything fed so far, and starts over.
    public mutating func finalize() -> [UInt8] {
        unique()
        var digest = [UInt8](repeating: 0, count: Self.byteCount)
        var length: UInt32 = 0
        EVP_DigestFinal_ex(context.pointer, &digest, &length)
        EVP_DigestInit_ex(context.pointer, EVP_sha256(), nil)
        return digest
    }

    private mutating func unique() {
        if !isKnownUniquelyReferenced(&context) { context = Context(copying: context) }
    }
}

/// HMAC-SHA256 (RFC 2104), through OpenSSL.
public enum HMACSHA256 {
    /// The MAC of `message` under `key`.
    public static func mac(key: [UInt8], message: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: SHA256.byteCount)
        var length: UInt32 = 0
        let done = key.withUnsafeBytes { k in
            message.withUnsafeBytes { m in
                HMAC(
                    EVP_sha256(), k.baseAddress, Int32(k.count), m.bindMemory(to: UInt8.self).baseAddress, m.count,
                    &out, &length)
            }
        }
        precondition(done != nil && length == UInt32(SHA256.byteCount), "HMAC-SHA256 failed")
        return out
    }
}

extension Sequence where Element == UInt8 {
    /// Lowercase hexadecimal, two digits per byte.
    public var hexString: String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for b in self {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension SHA256 {
    /// The lowercase hex digest of a string's UTF-8 bytes.
    public static func hex(_ text: String) -> String { hash(Array(text.utf8)).hexString }
}
