import CCurl
import Foundation
import TestSupport
import Testing

/// libcurl is linked, its variadic setopt is reachable through the typed shim, and it
/// downloads real bytes from a real server on loopback.
@Suite struct CurlBindingTests {
    final class Sink {
        var bytes = Data()
    }

    @Test func downloadsAFileFromALoopbackServer() throws {
        let dir = try TemporaryDirectory()
        let payload = Data((0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        try payload.write(to: dir.url.appendingPathComponent("blob.bin"))
        let server = try LoopbackHTTPServer(serving: dir.url)
        defer { server.stop() }

        let handle = try #require(curl_easy_init())
        defer { curl_easy_cleanup(handle) }
        let sink = Sink()
        let unmanaged = Unmanaged.passRetained(sink)
        defer { unmanaged.release() }

        #expect(cor_curl_setopt_string(handle, CURLOPT_URL, server.url("blob.bin")) == CURLE_OK)
        #expect(cor_curl_setopt_long(handle, CURLOPT_FAILONERROR, 1) == CURLE_OK)
        #expect(cor_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, unmanaged.toOpaque()) == CURLE_OK)
        let write: cor_curl_data_cb = { buffer, size, count, context in
            let sink = Unmanaged<Sink>.fromOpaque(context!).takeUnretainedValue()
            let n = size * count
            sink.bytes.append(UnsafeRawPointer(buffer!).assumingMemoryBound(to: UInt8.self), count: n)
            return n
        }
        #expect(cor_curl_setopt_data_cb(handle, CURLOPT_WRITEFUNCTION, write) == CURLE_OK)
        #expect(curl_easy_perform(handle) == CURLE_OK)

        var status = 0
        #expect(cor_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK)
        #expect(status == 200)
        #expect(sink.bytes == payload)
    }

    @Test func reportsAMissingFileAsAnHTTPError() throws {
        let dir = try TemporaryDirectory()
        let server = try LoopbackHTTPServer(serving: dir.url)
        defer { server.stop() }
        let handle = try #require(curl_easy_init())
        defer { curl_easy_cleanup(handle) }
        #expect(cor_curl_setopt_string(handle, CURLOPT_URL, server.url("absent")) == CURLE_OK)
        #expect(cor_curl_setopt_long(handle, CURLOPT_FAILONERROR, 1) == CURLE_OK)
        #expect(cor_curl_setopt_long(handle, CURLOPT_NOBODY, 1) == CURLE_OK)
        #expect(curl_easy_perform(handle) == CURLE_HTTP_RETURNED_ERROR)
        var status = 0
        _ = cor_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        #expect(status == 404)
    }
}
