import Foundation

/// A minimal Azure Blob Storage endpoint on 127.0.0.1 (Azurite-style URLs:
/// `http://127.0.0.1:PORT/<account>/<container>/<blob>`) that checks every request's
/// Shared Key signature with the canonicalization code of Microsoft's Python SDK and
/// answers 403 on a mismatch. Blobs live in memory; Put/Get (with Range)/Head/Delete Blob.
///
/// The SDK signs ranges as `x-ms-range` and leaves the standard `Range` slot empty; the
/// service signs `Range` there, so the checker fills that slot from the `Range` header.
public final class AzureFakeServer: @unchecked Sendable {
    public let port: Int
    public let account = "devstoreaccount1"
    public let key: String
    private let process: PythonProcess

    public static let isAvailable = PythonProcess.hasModule("azure.storage.blob")

    /// `truncateOnce`: blob paths (`/container/blob`) whose first GET is cut after 1000 bytes.
    public init(truncateOnce: [String] = []) throws {
        key = Data((0..<64).map { UInt8(($0 * 37 + 11) % 256) }).base64EncodedString()
        let json = String(decoding: try JSONSerialization.data(withJSONObject: truncateOnce), as: UTF8.self)
        process = try PythonProcess(script: Self.script, arguments: [account, key, json])
        guard let port = Int(process.firstLine) else { throw TestSupportError("azure fake did not start") }
        self.port = port
    }

    /// A connection string for this endpoint.
    public var connectionString: String {
        "DefaultEndpointsProtocol=http;AccountName=\(account);AccountKey=\(key);"
            + "BlobEndpoint=http://127.0.0.1:\(port)/\(account);"
    }

    public func stop() { process.stop() }

    static let script = #"""
        import base64, hashlib, hmac, json, sys, threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import unquote
        from azure.core.pipeline import PipelineRequest, PipelineContext
        from azure.core.pipeline.transport import HttpRequest
        from azure.storage.blob._shared.authentication import SharedKeyCredentialPolicy
        account, key, truncate = sys.argv[1], sys.argv[2], set(json.loads(sys.argv[3]))
        policy = SharedKeyCredentialPolicy(account, key)
        blobs, seen, lock = {}, set(), threading.Lock()
        STANDARD = ["content-encoding", "content-language", "content-length", "content-md5", "content-type", "date",
                    "if-modified-since", "if-match", "if-none-match", "if-unmodified-since", "range"]

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"
            def log_message(self, *a): pass
            def authorized(self):
                headers = {k: v for k, v in self.headers.items() if k.lower() != "authorization"}
                url = "http://127.0.0.1:%d%s" % (self.server.server_address[1], self.path)
                pr = PipelineRequest(HttpRequest(self.command, url, headers=headers), PipelineContext(None))
                sts = (policy._get_verb(pr) + policy._get_headers(pr, STANDARD) +
                       policy._get_canonicalized_headers(pr) + policy._get_canonicalized_resource(pr) +
                       policy._get_canonicalized_resource_query(pr))
                mac = hmac.new(base64.b64decode(key), sts.encode(), hashlib.sha256).digest()
                return self.headers.get("Authorization") == "SharedKey %s:%s" % (account, base64.b64encode(mac).decode())
            def reply(self, code, body=b"", headers=()):
                self.send_response(code)
                for k, v in headers: self.send_header(k, v)
                self.send_header("Content-Length", str(len(body))); self.end_headers()
                if self.command != "HEAD": self.wfile.write(body)
            def blob(self):
                path = unquote(self.path.split("?")[0])
                prefix = "/" + account
                return path[len(prefix):] if path.startswith(prefix + "/") else None
            def handle_any(self):
                name = self.blob()
                if name is None: return self.reply(400, b"bad path")
                if not self.authorized(): return self.reply(403, b"AuthenticationFailed")
                if self.command == "PUT":
                    if self.headers.get("x-ms-blob-type") != "BlockBlob": return self.reply(400, b"blob type")
                    data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                    with lock: blobs[name] = data
                    return self.reply(201, b"", [("ETag", '"%s"' % hashlib.md5(data).hexdigest())])
                with lock: data = blobs.get(name)
                if data is None: return self.reply(404, b"BlobNotFound")
                etag = '"%s"' % hashlib.md5(data).hexdigest()
                if self.command == "DELETE":
                    with lock: blobs.pop(name, None)
                    return self.reply(202)
                if self.command == "HEAD":
                    self.send_response(200); self.send_header("ETag", etag)
                    self.send_header("Content-Length", str(len(data))); self.end_headers(); return
                start, code, extra = 0, 200, [("ETag", etag)]
                rng = self.headers.get("Range")
                if rng:
                    start, code = int(rng.split("=")[1].split("-")[0]), 206
                    extra.append(("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data))))
                body = data[start:]
                with lock:
                    cut = name in truncate and name not in seen
                    seen.add(name)
                if cut:
                    self.send_response(code)
                    for k, v in extra: self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body))); self.end_headers()
                    self.wfile.write(body[:1000]); self.wfile.flush(); self.connection.shutdown(2); return
                self.reply(code, body, extra)
            do_GET = do_PUT = do_HEAD = do_DELETE = handle_any

        s = ThreadingHTTPServer(("127.0.0.1", 0), H)
        s.daemon_threads = True
        print(s.server_address[1], flush=True)
        s.serve_forever()
        """#
}
