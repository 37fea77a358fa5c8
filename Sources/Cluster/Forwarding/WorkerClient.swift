import CCurl
import Dispatch
import Foundation
import Host
import Sandbox
import Synchronization

/// An HTTP response from a worker host, as ``WorkerClient`` received it.
public struct WorkerResponse: Sendable {
    public var status: Int
    /// Header names in lower case.
    public var headers: [String: String]
    public var body: [UInt8]
}

/// How an API node reaches the worker hosts of a cluster for the calls that are not jobs
/// (project calls and file tools), over plain HTTP/1.1 with libcurl.
///
/// Easy handles are kept between requests, so their connections stay open (keep-alive)
/// and a forwarded call costs one round trip on an open socket. Each request blocks a
/// thread of a concurrent dispatch queue, never a task.
public final class WorkerClient: Sendable {
    /// Sent as the bearer token: an admin token of the workers' API.
    let token: String?
    /// How long a request may take unless it asks for more or less.
    let timeout: Duration
    private let idle = Mutex<[EasyHandle]>([])
    private static let queue = DispatchQueue(label: "corral.worker-client", attributes: .concurrent)

    /// `timeout` bounds a whole request; a forwarded call that waits longer (a warm of a
    /// large project, a session run with a long `wait_s`) must ask for more.
    public init(token: String?, timeout: Duration = .seconds(600)) {
        _ = CurlLibrary.initialized
        self.token = token
        self.timeout = timeout
    }

    deinit {
        for handle in idle.withLock({ $0 }) { curl_easy_cleanup(handle.raw) }
    }

    /// Sends one request. `onChunk` sees the body as it arrives (for event streams); the
    /// response holds it all either way. `timeout` replaces the client's for this request.
    /// Throws ``ClusterError/workerUnreachable(_:)`` when the worker cannot be reached or the
    /// connection breaks.
    public func send(
        _ method: String, _ url: String, headers: [(String, String)] = [], body: [UInt8]? = nil,
        timeout: Duration? = nil, onChunk: (@Sendable ([UInt8]) -> Void)? = nil
    ) async throws -> WorkerResponse {
        let handle = idle.withLock { $0.popLast() } ?? EasyHandle(raw: curl_easy_init())
        let sink = ResponseSink(onChunk: onChunk)
        var lines = headers.map { "\($0.0): \($0.1)" }
        if let token { lines.append("Authorization: Bearer \(token)") }
        // No `Expect: 100-continue` round trip before a large body.
        lines.append("Expect:")
        let request = Request(method: method, url: url, headers: lines, body: body, timeout: timeout ?? self.timeout)
        let (code, message) = await withCheckedContinuation { continuation in
            Self.queue.async { continuation.resume(returning: Self.perform(handle, request, sink)) }
        }
        if code == CURLE_OK {
            idle.withLock { $0.append(handle) }
        } else {
            curl_easy_cleanup(handle.raw)
            throw ClusterError.workerUnreachable("\(method) \(url): \(message)")
        }
        return sink.response
    }

    private struct Request: Sendable {
        var method: String
        var url: String
        var headers: [String]
        var body: [UInt8]?
        var timeout: Duration
    }

    private static func perform(_ handle: EasyHandle, _ request: Request, _ sink: ResponseSink) -> (CURLcode, String) {
        let h = handle.raw
        // Options of the previous request must not leak into this one; the connection stays.
        curl_easy_reset(h)
        var list: UnsafeMutablePointer<curl_slist>?
        for line in request.headers { list = curl_slist_append(list, line) }
        defer { curl_slist_free_all(list) }
        let me = Unmanaged.passUnretained(sink).toOpaque()
        _ = cor_curl_setopt_string(h, CURLOPT_URL, request.url)
        _ = cor_curl_setopt_string(h, CURLOPT_PROTOCOLS_STR, "http,https")
        _ = cor_curl_setopt_string(h, CURLOPT_CUSTOMREQUEST, request.method)
        _ = cor_curl_setopt_long(h, CURLOPT_NOSIGNAL, 1)
        _ = cor_curl_setopt_long(h, CURLOPT_TCP_NODELAY, 1)
        _ = cor_curl_setopt_long(h, CURLOPT_CONNECTTIMEOUT_MS, 2000)
        _ = cor_curl_setopt_long(h, CURLOPT_TIMEOUT_MS, Int(request.timeout.millisecondsRoundedUp))
        _ = cor_curl_setopt_slist(h, CURLOPT_HTTPHEADER, list)
        _ = cor_curl_setopt_data_cb(h, CURLOPT_WRITEFUNCTION, workerWrite)
        _ = cor_curl_setopt_pointer(h, CURLOPT_WRITEDATA, me)
        _ = cor_curl_setopt_data_cb(h, CURLOPT_HEADERFUNCTION, workerHeader)
        _ = cor_curl_setopt_pointer(h, CURLOPT_HEADERDATA, me)
        let code: CURLcode
        if let body = request.body {
            _ = cor_curl_setopt_off(h, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count))
            code = body.withUnsafeBytes { raw in
                // COPYPOSTFIELDS copies the bytes, so they need only live for this call.
                _ = cor_curl_setopt_pointer(
                    h, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: raw.baseAddress))
                // A POST-style body with the method given above (PUT, POST, DELETE).
                _ = cor_curl_setopt_string(h, CURLOPT_CUSTOMREQUEST, request.method)
                return curl_easy_perform(h)
            }
        } else {
            if request.method == "GET" { _ = cor_curl_setopt_long(h, CURLOPT_HTTPGET, 1) }
            code = curl_easy_perform(h)
        }
        var status = 0
        _ = cor_curl_getinfo_long(h, CURLINFO_RESPONSE_CODE, &status)
        sink.status = status
        return (code, code == CURLE_OK ? "" : String(cString: curl_easy_strerror(code)))
    }
}

/// A libcurl easy handle, used by one request at a time.
private struct EasyHandle: @unchecked Sendable {
    let raw: UnsafeMutableRawPointer
    init(raw: UnsafeMutableRawPointer?) { self.raw = raw! }
}

/// Collects one response; written only by the thread performing the request.
private final class ResponseSink: @unchecked Sendable {
    let onChunk: (@Sendable ([UInt8]) -> Void)?
    var status = 0
    var headers: [String: String] = [:]
    var body: [UInt8] = []

    init(onChunk: (@Sendable ([UInt8]) -> Void)?) { self.onChunk = onChunk }

    var response: WorkerResponse { WorkerResponse(status: status, headers: headers, body: body) }
}

private let workerWrite: cor_curl_data_cb = { buffer, size, count, pointer in
    let sink = Unmanaged<ResponseSink>.fromOpaque(pointer!).takeUnretainedValue()
    let bytes = Array(UnsafeRawBufferPointer(start: buffer, count: size * count))
    sink.body.append(contentsOf: bytes)
    sink.onChunk?(bytes)
    return size * count
}

private let workerHeader: cor_curl_data_cb = { buffer, size, count, pointer in
    let sink = Unmanaged<ResponseSink>.fromOpaque(pointer!).takeUnretainedValue()
    let line = String(decoding: UnsafeRawBufferPointer(start: buffer, count: size * count), as: UTF8.self)
    if line.hasPrefix("HTTP/") { sink.headers = [:] }
    if let colon = line.firstIndex(of: ":") {
        let name = line[..<colon].lowercased()
        sink.headers[name] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)
    }
    return size * count
}
