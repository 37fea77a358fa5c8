import CCurl
import Foundation
import Glibc
import Sandbox

/// One request as a blob store describes it; ``Curl`` performs it with retries.
struct CurlRequest: Sendable {
    enum Method: String, Sendable { case get = "GET", put = "PUT", head = "HEAD", delete = "DELETE" }

    var method: Method
    var url: String
    /// Names the blob in errors and logs; never contains credentials or a SAS query.
    var what: String
    /// Protocols curl may use, including after redirects (`"file"` or `"http,https"`).
    var protocols = "http,https"
    /// `provider1[:provider2[:region[:service]]]` for curl's built-in AWS SigV4 signing.
    var awsSigV4: String?
    /// `user:password` (for SigV4: access key id and secret).
    var credentials: String?
    /// Which addresses the transfer may connect to (`http(s)://` project sources); nil for
    /// the stores an admin configured (S3, Azure, files), which may well be private.
    var sourceAddresses: SourceAddressPolicy?
    /// Headers for one attempt, given the Range value it will send (resume) and the body
    /// length (PUT). Stores that sign each request (Azure) compute the signature here.
    var headers: @Sendable (_ range: String?, _ contentLength: Int64?) -> [(String, String)] = { _, _ in [] }
}

/// The status and validators of a completed request.
struct CurlResponse: Sendable {
    var status: Int
    var etag: String?
    var contentLength: Int64?
    var body: String
}

/// libcurl's process-wide set-up, done once for every user of libcurl in Corral: the blob
/// transfers here and the cluster's worker client. `curl_global_init` is not thread-safe
/// and must not run twice concurrently, so there is one place that calls it.
package enum CurlLibrary {
    /// Touch before the first easy handle.
    package static let initialized: Void = { curl_global_init(Int(CURL_GLOBAL_DEFAULT)) }()
}

/// libcurl easy transfers with timeouts, retries with backoff, resume and a size limit.
///
/// Every function here blocks: call it from ``BlockingThread``, never from a task.
enum Curl {

    private enum Outcome {
        case done
        case retry(CacheError)
        case restart
        case fail(CacheError)
    }

    // MARK: - Operations

    /// Downloads to the file open at `fd`, resuming with `Range`/`If-Range` after an
    /// interrupted attempt when the server offers a strong ETag, restarting otherwise.
    static func download(
        _ request: CurlRequest, fd: Int32, limit: Int64?, policy: TransferPolicy, progress: ProgressHandler?,
        cancel: CancelFlag
    ) throws(CacheError) -> BlobInfo {
        let ctx = CurlContext(fd: fd, limit: limit, progress: progress, cancel: cancel)
        var canResume = true
        try attempts(policy, ctx) { () throws(CacheError) -> Outcome in
            let strong = ctx.firstETag.map { !$0.hasPrefix("W/") } ?? false
            let resume = canResume && ctx.committed > 0 && strong && request.protocols != "file"
            ctx.beginAttempt(resume: resume)
            let range = resume ? "\(ctx.committed)-" : nil
            let (code, message) = perform(request, ctx, range: range, policy: policy)
            if code == CURLE_OK, ctx.status == 206, resume == false {
                return .fail(.transport("\(request.what): unexpected partial content"))
            }
            let outcome = classify(code, ctx, request, message: message)
            if case .restart = outcome { canResume = false }
            return outcome
        }
        ctx.progress?(ctx.snapshot(total: ctx.committed - ctx.resumeBase, uploading: false))
        return BlobInfo(size: ctx.committed, etag: ctx.etag ?? ctx.firstETag, sha256: ctx.hasher.finalize().hexString)
    }

    /// Uploads `size` bytes from `fd` with PUT; a failed attempt starts over from byte 0.
    static func upload(
        _ request: CurlRequest, fd: Int32, size: Int64, policy: TransferPolicy, cancel: CancelFlag
    ) throws(CacheError) -> CurlResponse {
        let ctx = CurlContext(fd: fd, limit: nil, progress: nil, cancel: cancel)
        var response: CurlResponse?
        try attempts(policy, ctx) { () throws(CacheError) -> Outcome in
            ctx.committed = 0
            ctx.beginAttempt(resume: false)
            let (code, message) = perform(request, ctx, range: nil, policy: policy, upload: size)
            let outcome = classify(code, ctx, request, message: message)
            guard case .done = outcome else { return outcome }
            response = CurlResponse(status: ctx.status, etag: ctx.etag, contentLength: size, body: ctx.errorText)
            return .done
        }
        return response!
    }

    /// HEAD or DELETE: returns the final status (404 included) after retrying 5xx and
    /// connection failures.
    static func simple(_ request: CurlRequest, policy: TransferPolicy, cancel: CancelFlag) throws(CacheError)
        -> CurlResponse
    {
        let ctx = CurlContext(fd: -1, limit: nil, progress: nil, cancel: cancel)
        var response: CurlResponse?
        try attempts(policy, ctx) { () throws(CacheError) -> Outcome in
            ctx.beginAttempt(resume: false)
            let (code, message, length) = performSimple(request, ctx, policy: policy)
            let outcome = classify(code, ctx, request, message: message)
            guard case .done = outcome else { return outcome }
            response = CurlResponse(status: ctx.status, etag: ctx.etag, contentLength: length, body: ctx.errorText)
            return .done
        }
        return response!
    }

    // MARK: - Attempts

    private static func attempts(
        _ policy: TransferPolicy, _ ctx: CurlContext, _ body: () throws(CacheError) -> Outcome
    ) throws(CacheError) {
        _ = CurlLibrary.initialized
        var attempt = 0
        while true {
            attempt += 1
            switch try body() {
            case .done: return
            case .fail(let error): throw error
            case .restart where attempt < policy.attempts:
                continue
            case .retry(let error) where attempt < policy.attempts:
                try sleep(policy.delay(after: attempt), cancel: ctx.cancel)
                _ = error
            case .retry(let error): throw error
            case .restart: throw .transport("server kept answering ranged requests inconsistently")
            }
        }
    }

    /// Sleeps in small steps so a cancelled transfer does not wait out its backoff.
    private static func sleep(_ duration: Duration, cancel: CancelFlag) throws(CacheError) {
        let deadline = ContinuousClock.now + duration
        while ContinuousClock.now < deadline {
            if cancel.isCancelled { throw .cancelled }
            usleep(UInt32(min(50_000, max(1, (deadline - ContinuousClock.now).milliseconds * 1000))))
        }
    }

    private static func classify(_ code: CURLcode, _ ctx: CurlContext, _ r: CurlRequest, message: String)
        -> Outcome
    {
        if ctx.cancel.isCancelled { return .fail(.cancelled) }
        if let refused = ctx.refused { return .fail(refused) }
        if ctx.stalled { return .retry(.timeout("\(r.what): no data for \(ctx.stallTimeout)")) }
        if ctx.tooSlow {
            return .retry(
                .timeout("\(r.what): slower than \(ctx.minimumRate) bytes a second for \(ctx.stallTimeout)"))
        }
        if ctx.overLimit || code == CURLE_FILESIZE_EXCEEDED {
            return .fail(.tooLarge("\(r.what) exceeds the download limit of \(ctx.limit ?? 0) bytes"))
        }
        if let error = ctx.ioError { return .fail(.system(error)) }
        if ctx.badRange || code == CURLE_RANGE_ERROR { return .restart }
        let status = ctx.status
        if code == CURLE_OK || code == CURLE_HTTP_RETURNED_ERROR {
            switch status {
            case 0, 200..<300: return code == CURLE_OK ? .done : .fail(.httpStatus(status, r.what))
            case 404, 410: return r.method == .get ? .fail(.notFound(r.what)) : .done
            case 416 where ctx.resumeRequested: return .restart
            case 408, 429, 500...599: return .retry(.httpStatus(status, r.what))
            default: return r.method == .get ? .fail(.httpStatus(status, r.what)) : .done
            }
        }
        switch code {
        case CURLE_OPERATION_TIMEDOUT:
            return .retry(.timeout("\(r.what): \(message)"))
        case CURLE_COULDNT_CONNECT, CURLE_RECV_ERROR, CURLE_SEND_ERROR, CURLE_PARTIAL_FILE, CURLE_GOT_NOTHING,
            CURLE_COULDNT_RESOLVE_HOST, CURLE_SSL_CONNECT_ERROR, CURLE_HTTP2, CURLE_HTTP2_STREAM:
            return .retry(.transport("\(r.what): \(message)"))
        case CURLE_FILE_COULDNT_READ_FILE:
            return .fail(.notFound(r.what))
        case CURLE_UNSUPPORTED_PROTOCOL:
            return .fail(.unsupportedSource("\(r.what): \(message)"))
        default:
            return .fail(.transport("\(r.what): \(message)"))
        }
    }

    // MARK: - One attempt

    private static func perform(
        _ r: CurlRequest, _ ctx: CurlContext, range: String?, policy: TransferPolicy, upload: Int64? = nil
    ) -> (CURLcode, String) {
        guard let h = curl_easy_init() else { return (CURLE_OUT_OF_MEMORY, "curl_easy_init failed") }
        defer { curl_easy_cleanup(h) }
        let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE))
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE))
        defer { errorBuffer.deallocate() }
        let unmanaged = Unmanaged.passRetained(ctx)
        defer { unmanaged.release() }
        let me = unmanaged.toOpaque()

        var headers = r.headers(range.map { "bytes=\($0)" }, upload)
        // Skip the 100-continue round trip, except under SigV4: curl signs every header in
        // the list, even one that only removes a header, and S3 then rejects the signature.
        if upload != nil && r.awsSigV4 == nil { headers.append(("Expect", "")) }
        let list = slist(headers)
        defer { curl_slist_free_all(list) }

        common(h, r, ctx, list: list, errorBuffer: errorBuffer, policy: policy)
        if let range { _ = cor_curl_setopt_string(h, CURLOPT_RANGE, range) }
        if let upload {
            _ = cor_curl_setopt_long(h, CURLOPT_UPLOAD, 1)
            _ = cor_curl_setopt_off(h, CURLOPT_INFILESIZE_LARGE, curl_off_t(upload))
            _ = cor_curl_setopt_data_cb(h, CURLOPT_READFUNCTION, curlRead)
            _ = cor_curl_setopt_pointer(h, CURLOPT_READDATA, me)
            _ = cor_curl_setopt_data_cb(h, CURLOPT_WRITEFUNCTION, curlWriteOther)
            _ = cor_curl_setopt_xferinfo_cb(h, CURLOPT_XFERINFOFUNCTION, curlUploadProgress)
        } else {
            _ = cor_curl_setopt_long(h, CURLOPT_FAILONERROR, 1)
            _ = cor_curl_setopt_data_cb(h, CURLOPT_WRITEFUNCTION, curlWriteBody)
            if let limit = ctx.limit { _ = cor_curl_setopt_off(h, CURLOPT_MAXFILESIZE_LARGE, curl_off_t(limit)) }
            _ = cor_curl_setopt_xferinfo_cb(h, CURLOPT_XFERINFOFUNCTION, curlDownloadProgress)
        }
        let code = curl_easy_perform(h)
        finish(h, ctx)
        return (code, message(code, errorBuffer))
    }

    private static func performSimple(_ r: CurlRequest, _ ctx: CurlContext, policy: TransferPolicy)
        -> (CURLcode, String, Int64?)
    {
        guard let h = curl_easy_init() else { return (CURLE_OUT_OF_MEMORY, "curl_easy_init failed", nil) }
        defer { curl_easy_cleanup(h) }
        let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE))
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE))
        defer { errorBuffer.deallocate() }
        let unmanaged = Unmanaged.passRetained(ctx)
        defer { unmanaged.release() }
        let list = slist(r.headers(nil, nil))
        defer { curl_slist_free_all(list) }

        common(h, r, ctx, list: list, errorBuffer: errorBuffer, policy: policy)
        if r.method == .head {
            _ = cor_curl_setopt_long(h, CURLOPT_NOBODY, 1)
        } else {
            _ = cor_curl_setopt_string(h, CURLOPT_CUSTOMREQUEST, r.method.rawValue)
        }
        _ = cor_curl_setopt_data_cb(h, CURLOPT_WRITEFUNCTION, curlWriteOther)
        _ = cor_curl_setopt_xferinfo_cb(h, CURLOPT_XFERINFOFUNCTION, curlDownloadProgress)
        let code = curl_easy_perform(h)
        finish(h, ctx)
        var length: curl_off_t = -1
        _ = cor_curl_getinfo_off(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length)
        return (code, message(code, errorBuffer), length >= 0 ? Int64(length) : nil)
    }

    private static func common(
        _ h: UnsafeMutableRawPointer, _ r: CurlRequest, _ ctx: CurlContext, list: UnsafeMutablePointer<curl_slist>?,
        errorBuffer: UnsafeMutablePointer<CChar>, policy: TransferPolicy
    ) {
        let me = Unmanaged.passUnretained(ctx).toOpaque()
        _ = cor_curl_setopt_string(h, CURLOPT_URL, r.url)
        // Restricting protocols, redirects included, stops a hostile server from bouncing a
        // fetch to file:///etc/shadow or some other scheme.
        _ = cor_curl_setopt_string(h, CURLOPT_PROTOCOLS_STR, r.protocols)
        _ = cor_curl_setopt_string(h, CURLOPT_REDIR_PROTOCOLS_STR, r.protocols == "file" ? "" : "http,https")
        // Signed requests must not follow redirects: the signature covers the original host.
        let follow = r.awsSigV4 == nil && r.credentials == nil && r.method == .get
        _ = cor_curl_setopt_long(h, CURLOPT_FOLLOWLOCATION, follow ? 1 : 0)
        _ = cor_curl_setopt_long(h, CURLOPT_MAXREDIRS, 5)
        _ = cor_curl_setopt_long(h, CURLOPT_NOSIGNAL, 1)
        _ = cor_curl_setopt_string(h, CURLOPT_USERAGENT, "corral/\(HostModule.version)")
        _ = cor_curl_setopt_long(h, CURLOPT_CONNECTTIMEOUT_MS, Int(policy.connectTimeout.milliseconds))
        ctx.stallTimeout = policy.stallTimeout
        ctx.minimumRate = policy.minimumBytesPerSecond
        if let t = policy.attemptTimeout { _ = cor_curl_setopt_long(h, CURLOPT_TIMEOUT_MS, Int(t.milliseconds)) }
        _ = cor_curl_setopt_pointer(h, CURLOPT_ERRORBUFFER, errorBuffer)
        _ = cor_curl_setopt_data_cb(h, CURLOPT_HEADERFUNCTION, curlHeader)
        _ = cor_curl_setopt_pointer(h, CURLOPT_HEADERDATA, me)
        _ = cor_curl_setopt_pointer(h, CURLOPT_WRITEDATA, me)
        _ = cor_curl_setopt_long(h, CURLOPT_NOPROGRESS, 0)
        _ = cor_curl_setopt_pointer(h, CURLOPT_XFERINFODATA, me)
        if let list { _ = cor_curl_setopt_slist(h, CURLOPT_HTTPHEADER, list) }
        if let sig = r.awsSigV4 { _ = cor_curl_setopt_string(h, CURLOPT_AWS_SIGV4, sig) }
        if let credentials = r.credentials { _ = cor_curl_setopt_string(h, CURLOPT_USERPWD, credentials) }
        if let addresses = r.sourceAddresses, !addresses.allowPrivate {
            // Every socket the transfer opens (each address tried, each redirect) is checked
            // against the address it is for, so neither DNS changing after registration nor
            // a redirect can reach a refused address. Through a proxy the socket would be the
            // proxy's, and the target unchecked: no proxy, whatever the environment says.
            ctx.handle = h
            ctx.sourceAddresses = addresses
            _ = cor_curl_setopt_opensocket_cb(h, curlOpenSocket)
            _ = cor_curl_setopt_pointer(h, CURLOPT_OPENSOCKETDATA, me)
            _ = cor_curl_setopt_string(h, CURLOPT_PROXY, "")
        }
    }

    private static func finish(_ h: UnsafeMutableRawPointer, _ ctx: CurlContext) {
        var status = 0
        _ = cor_curl_getinfo_long(h, CURLINFO_RESPONSE_CODE, &status)
        ctx.status = status
    }

    private static func slist(_ headers: [(String, String)]) -> UnsafeMutablePointer<curl_slist>? {
        var list: UnsafeMutablePointer<curl_slist>?
        // An empty value becomes "Name:", which removes a header curl would add itself.
        for (name, value) in headers {
            list = curl_slist_append(list, value.isEmpty ? "\(name):" : "\(name): \(value)")
        }
        return list
    }

    private static func message(_ code: CURLcode, _ buffer: UnsafeMutablePointer<CChar>) -> String {
        let detail = String(cString: buffer)
        return detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
    }
}

extension CurlContext {
    var errorText: String { String(decoding: errorBody, as: UTF8.self) }
}
