import CCurl  // in release builds, SOCK_STREAM and SOCK_CLOEXEC come through its <sys/socket.h>
import COpenSSL
import Foundation
import Glibc
import Host
import Sandbox

/// How to reach Redis over TLS (`rediss://`): the CA that signs its certificate (the
/// system's trust store when nil), and a client certificate for servers that ask for one.
public struct RedisTLS: Sendable, Equatable {
    /// PEM file of the certificate authorities to trust; nil: the system's.
    public var caFile: String?
    /// PEM certificate chain and key this client presents (Redis's `tls-auth-clients yes`).
    public var certFile: String?
    public var keyFile: String?

    public init(caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
    }
}

/// A TLS connection to Redis, handed to hiredis as one end of a socket pair.
///
/// The hiredis this builds against (Debian's 0.14) speaks plain TCP only. The handshake
/// happens here, verifying the server's certificate against the CA and its name against the
/// host of the URL, before hiredis sees a byte; then a thread of the bridge's own moves
/// bytes between the pair and the TLS stream until either side closes. hiredis keeps its
/// own timeouts on its end of the pair.
enum RedisTLSBridge {
    /// Connects, completes the handshake and returns hiredis's end of the pair. Throws
    /// ``ClusterError/tls(_:)`` for a certificate or handshake failure and
    /// ``ClusterError/redisUnavailable(retryAfterSeconds:)`` when the server cannot be reached.
    static func open(host: String, port: Int, tls: RedisTLS, timeout: Duration) throws(ClusterError) -> Int32 {
        let tcp = try connectTCP(host: host, port: port, timeout: timeout)
        guard let ctx = SSL_CTX_new(TLS_client_method()) else {
            close(tcp)
            throw .tls("cannot create a TLS context: \(lastError())")
        }
        defer { SSL_CTX_free(ctx) }
        _ = cor_ssl_ctx_min_tls12(ctx)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
        let trusted =
            tls.caFile.map { SSL_CTX_load_verify_locations(ctx, $0, nil) } ?? SSL_CTX_set_default_verify_paths(ctx)
        if trusted != 1 {
            close(tcp)
            throw .tls("cannot load the CA file \(tls.caFile ?? "(system)"): \(lastError())")
        }
        if let cert = tls.certFile {
            guard SSL_CTX_use_certificate_chain_file(ctx, cert) == 1,
                SSL_CTX_use_PrivateKey_file(ctx, tls.keyFile ?? cert, SSL_FILETYPE_PEM) == 1
            else {
                close(tcp)
                throw .tls("cannot load the client certificate \(cert): \(lastError())")
            }
        }
        guard let ssl = SSL_new(ctx) else {
            close(tcp)
            throw .tls("cannot create a TLS session: \(lastError())")
        }
        // The name the certificate must carry: the URL's host (a DNS name or an address).
        _ = cor_ssl_set_sni(ssl, host)
        _ = SSL_set1_host(ssl, host)
        _ = SSL_set_fd(ssl, tcp)
        if SSL_connect(ssl) != 1 {
            let verify = SSL_get_verify_result(ssl)
            let why =
                verify != X509_V_OK
                ? "certificate verify failed: \(String(cString: X509_verify_cert_error_string(verify)))"
                : lastError()
            SSL_free(ssl)
            close(tcp)
            throw .tls("TLS handshake with \(host):\(port) failed: \(why)")
        }
        var pair: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            SSL_free(ssl)
            close(tcp)
            throw .tls("socketpair: errno \(errno)")
        }
        // The handshake's timeouts must not cut a long blocking read (XREAD BLOCK) short.
        var none = timeval()
        _ = setsockopt(tcp, SOL_SOCKET, SO_RCVTIMEO, &none, socklen_t(MemoryLayout<timeval>.size))
        // The pump must come back to poll after a record with no application data (a TLS
        // 1.3 session ticket the server sends after the handshake): blocking in SSL_read
        // for the next record then, while hiredis's request waits unread on the pair, was
        // a deadlock that ended only at the command time-out.
        cor_ssl_no_auto_retry(ssl)
        let session = Session(ssl: ssl, tcp: tcp, local: pair[1])
        let thread = Thread { session.pump() }
        thread.name = "corral-redis-tls"
        thread.start()
        return pair[0]
    }

    private static func connectTCP(host: String, port: Int, timeout: Duration) throws(ClusterError) -> Int32 {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var found: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &found) == 0, let first = found else {
            throw .redisUnavailable(retryAfterSeconds: 1)
        }
        defer { freeaddrinfo(found) }
        var wait = timeout.timeval
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let info = entry {
            let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), 0)
            if fd >= 0 {
                // Bounds the connect and the handshake.
                _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
                _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
                var one: Int32 = 1
                _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                if Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 { return fd }
                close(fd)
            }
            entry = info.pointee.ai_next
        }
        throw .redisUnavailable(retryAfterSeconds: 1)
    }

    static func lastError() -> String {
        let code = ERR_get_error()
        guard code != 0 else { return "unknown error" }
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        return String(cString: buffer)
    }

    /// One bridged connection; only its thread touches it after the handshake.
    final class Session: @unchecked Sendable {
        let ssl: OpaquePointer
        let tcp: Int32
        let local: Int32

        init(ssl: OpaquePointer, tcp: Int32, local: Int32) {
            self.ssl = ssl
            self.tcp = tcp
            self.local = local
        }

        /// Moves bytes both ways until hiredis closes its end or the server goes away.
        func pump() {
            defer {
                SSL_shutdown(ssl)
                SSL_free(ssl)
                close(tcp)
                close(local)
            }
            var buffer = [UInt8](repeating: 0, count: 16_384)
            while true {
                // Decrypted bytes already buffered by OpenSSL do not make the socket readable.
                if SSL_pending(ssl) == 0 {
                    var fds = [
                        pollfd(fd: local, events: Int16(POLLIN), revents: 0),
                        pollfd(fd: tcp, events: Int16(POLLIN), revents: 0),
                    ]
                    if poll(&fds, 2, -1) < 0 {
                        if errno == EINTR { continue }
                        return
                    }
                    if fds[0].revents != 0 {
                        let n = read(local, &buffer, buffer.count)
                        if n <= 0 { return }
                        if !writeTLS(buffer, count: n) { return }
                    }
                    if fds[1].revents == 0 { continue }
                }
                let n = SSL_read(ssl, &buffer, Int32(buffer.count))
                if n <= 0 {
                    // Only a handshake or ticket record was read: poll again.
                    let error = SSL_get_error(ssl, n)
                    if error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE { continue }
                    return
                }
                if !writeAll(local, buffer, count: Int(n)) { return }
            }
        }

        private func writeTLS(_ bytes: [UInt8], count: Int) -> Bool {
            var done = 0
            while done < count {
                let n = bytes.withUnsafeBytes { SSL_write(ssl, $0.baseAddress! + done, Int32(count - done)) }
                if n <= 0 { return false }
                done += Int(n)
            }
            return true
        }

        private func writeAll(_ fd: Int32, _ bytes: [UInt8], count: Int) -> Bool {
            var done = 0
            while done < count {
                let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, count - done) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return false }
                done += n
            }
            return true
        }
    }
}
