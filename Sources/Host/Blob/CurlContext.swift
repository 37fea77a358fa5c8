import CCurl
import Foundation
import Glibc
import Sandbox

/// The mutable state of one transfer, shared with libcurl's C callbacks through an
/// unmanaged pointer. Only the transfer's own thread touches it.
final class CurlContext {
    let fd: Int32
    let limit: Int64?
    let progress: ProgressHandler?
    let cancel: CancelFlag

    /// Body bytes safely on disk (download) or handed to curl (upload).
    var committed: Int64 = 0
    /// Bytes on disk when this attempt began, if it asked to resume from there.
    var resumeBase: Int64 = 0
    var resumeRequested = false
    var hasher = SHA256()
    var firstETag: String?

    // Per attempt, from the last response's headers.
    var status = 0
    var etag: String?
    var contentRange: String?
    var decided = false
    var badRange = false
    var overLimit = false
    var ioError: SystemError?
    var errorBody: [UInt8] = []
    var attemptStart = ContinuousClock.now
    var lastReport = ContinuousClock.now
    /// Stall detection: when the byte counter last moved, and whether we gave up waiting.
    var stallTimeout: Duration = .seconds(30)
    var lastMoved: Int64 = -1
    var lastMoveTime = ContinuousClock.now
    var stalled = false
    /// The rate check: bytes a second to keep up, the current window's start (from the
    /// first byte) and the byte count then, and whether the transfer fell below it.
    var minimumRate: Int64 = 1024
    var windowStart: ContinuousClock.Instant?
    var windowBytes: Int64 = 0
    var tooSlow = false
    /// The address check of `http(s)://` sources, with the easy handle it asks for the URL
    /// being connected (the original one, or a redirect's).
    var sourceAddresses: SourceAddressPolicy?
    var handle: UnsafeMutableRawPointer?
    /// A connection the check refused; the attempt fails with it and is not retried.
    var refused: CacheError?

    init(fd: Int32, limit: Int64?, progress: ProgressHandler?, cancel: CancelFlag) {
        self.fd = fd
        self.limit = limit
        self.progress = progress
        self.cancel = cancel
    }

    func beginAttempt(resume: Bool) {
        status = 0
        etag = nil
        contentRange = nil
        decided = false
        badRange = false
        errorBody = []
        resumeRequested = resume
        resumeBase = resume ? committed : 0
        attemptStart = .now
        lastMoved = -1
        lastMoveTime = .now
        stalled = false
        windowStart = nil
        tooSlow = false
        refused = nil
    }

    // MARK: - Connections

    /// Opens the socket for one connection, or refuses it (CURL_SOCKET_BAD makes curl try
    /// the host's next address, then fail the attempt) when the address may not be reached.
    func openSocket(_ address: UnsafeMutablePointer<curl_sockaddr>) -> curl_socket_t {
        let family = address.pointee.family
        if let policy = sourceAddresses {
            var url: UnsafeMutablePointer<CChar>?
            if let handle { _ = cor_curl_getinfo_string(handle, CURLINFO_EFFECTIVE_URL, &url) }
            let host = url.flatMap { SourceAddressPolicy.host(ofURL: String(cString: $0)) } ?? ""
            let target = withUnsafePointer(to: &address.pointee.addr) {
                IPAddress(sockaddr: UnsafeRawPointer($0), length: Int(address.pointee.addrlen))
            }
            guard let target else {
                refused = .unsupportedSource("\(host): address family \(family) is not IPv4 or IPv6")
                return CURL_SOCKET_BAD
            }
            if let refusal = policy.refusal(host: host, address: target) {
                refused = refusal
                return CURL_SOCKET_BAD
            }
        }
        return socket(family, address.pointee.socktype | Int32(SOCK_CLOEXEC.rawValue), address.pointee.protocol)
    }

    // MARK: - Headers

    func header(_ line: Substring) {
        if line.hasPrefix("HTTP/") {
            // A new status line starts a new response (redirect, 100 Continue): forget the old one.
            status = line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
            etag = nil
            contentRange = nil
            return
        }
        guard let colon = line.firstIndex(of: ":") else { return }
        let name = line[..<colon].lowercased()
        let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)
        switch name {
        case "etag":
            etag = value
            if firstETag == nil { firstETag = value }
        case "content-range": contentRange = value
        default: break
        }
    }

    // MARK: - Download body

    /// Writes a chunk of the body; returning less than its size makes curl abort.
    func receive(_ chunk: UnsafeRawBufferPointer) -> Int {
        if !decided {
            decided = true
            if resumeRequested && status == 206 {
                // Only append when the server resumed exactly where our file ends.
                guard let start = contentRange.flatMap(Self.rangeStart), start == committed else {
                    badRange = true
                    return 0
                }
            } else if committed > 0 {
                // The server sent the whole body again: start the file over.
                if ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0 {
                    ioError = SystemError("ftruncate(download)", errno: errno)
                    return 0
                }
                committed = 0
                resumeBase = 0
                hasher = SHA256()
            }
        }
        if let limit, committed + Int64(chunk.count) > limit {
            overLimit = true
            return 0
        }
        var offset = 0
        while offset < chunk.count {
            let n = write(fd, chunk.baseAddress! + offset, chunk.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                ioError = SystemError("write(download)", errno: errno)
                return 0
            }
            offset += n
        }
        hasher.update(chunk)
        committed += Int64(chunk.count)
        return chunk.count
    }

    /// Keeps the start of an error response for the error message.
    func receiveOther(_ chunk: UnsafeRawBufferPointer) -> Int {
        if errorBody.count < 1024 { errorBody += chunk.prefix(1024 - errorBody.count) }
        return chunk.count
    }

    // MARK: - Upload body

    /// Fills curl's buffer from the file at the current upload offset.
    func send(_ buffer: UnsafeMutableRawBufferPointer) -> Int {
        while true {
            let n = pread(fd, buffer.baseAddress, buffer.count, off_t(committed))
            if n < 0 {
                if errno == EINTR { continue }
                ioError = SystemError("pread(upload)", errno: errno)
                return Int(CURL_READFUNC_ABORT)
            }
            committed += Int64(n)
            return n
        }
    }

    // MARK: - Progress

    /// Reports progress at most every 100 ms; returns nonzero to abort a cancelled or
    /// stalled transfer.
    ///
    /// Stalls are detected here rather than with CURLOPT_LOW_SPEED_*: curl averages speed
    /// over a window of several seconds, so a connection that delivered a burst and then
    /// went silent would be kept alive for far longer than the configured stall timeout.
    /// curl calls this at least once a second even when no byte arrives.
    func tick(total: Int64, now: Int64, uploading: Bool) -> Int32 {
        if cancel.isCancelled { return 1 }
        let clock = ContinuousClock.now
        if now != lastMoved {
            lastMoved = now
            lastMoveTime = clock
        } else if clock - lastMoveTime >= stallTimeout {
            stalled = true
            return 1
        }
        if now > 0, minimumRate > 0 {
            if let start = windowStart, clock - start >= stallTimeout {
                if Double(now - windowBytes) < Double(minimumRate) * (clock - start).timeInterval {
                    tooSlow = true
                    return 1
                }
                (windowStart, windowBytes) = (clock, now)
            } else if windowStart == nil {
                (windowStart, windowBytes) = (clock, now)
            }
        }
        guard let progress else { return 0 }
        guard clock - lastReport >= .milliseconds(100) else { return 0 }
        lastReport = clock
        progress(snapshot(total: total, uploading: uploading))
        return 0
    }

    func snapshot(total: Int64, uploading: Bool) -> TransferProgress {
        let elapsed = max((ContinuousClock.now - attemptStart).timeInterval, 0.001)
        let moved = Double(committed - resumeBase)
        let known: Int64? = total > 0 ? (uploading ? total : resumeBase + total) : nil
        return TransferProgress(bytes: committed, total: known, bytesPerSecond: moved / elapsed)
    }

    static func rangeStart(_ header: String) -> Int64? {
        // "bytes 100-999/1000"
        guard header.hasPrefix("bytes ") else { return nil }
        return header.dropFirst(6).split(separator: "-").first.flatMap { Int64($0) }
    }
}

// MARK: - C callbacks

private func context(_ pointer: UnsafeMutableRawPointer?) -> CurlContext {
    Unmanaged<CurlContext>.fromOpaque(pointer!).takeUnretainedValue()
}

let curlWriteBody: cor_curl_data_cb = { buffer, size, count, pointer in
    context(pointer).receive(UnsafeRawBufferPointer(start: buffer, count: size * count))
}

let curlWriteOther: cor_curl_data_cb = { buffer, size, count, pointer in
    context(pointer).receiveOther(UnsafeRawBufferPointer(start: buffer, count: size * count))
}

let curlRead: cor_curl_data_cb = { buffer, size, count, pointer in
    context(pointer).send(UnsafeMutableRawBufferPointer(start: buffer, count: size * count))
}

let curlHeader: cor_curl_data_cb = { buffer, size, count, pointer in
    let n = size * count
    let raw = UnsafeRawBufferPointer(start: buffer, count: n)
    context(pointer).header(Substring(String(decoding: raw, as: UTF8.self)))
    return n
}

let curlOpenSocket: curl_opensocket_callback = { pointer, _, address in
    context(pointer).openSocket(address!)
}

let curlDownloadProgress: cor_curl_xferinfo_cb = { pointer, dltotal, dlnow, _, _ in
    context(pointer).tick(total: Int64(dltotal), now: Int64(dlnow), uploading: false)
}

let curlUploadProgress: cor_curl_xferinfo_cb = { pointer, _, _, ultotal, ulnow in
    context(pointer).tick(total: Int64(ultotal), now: Int64(ulnow), uploading: true)
}
