import Foundation

/// A real HTTP server on 127.0.0.1 that serves a directory and misbehaves on request:
/// errors, 500-then-success, stalls, truncated bodies, redirects; with Range/If-Range
/// support (or not) and per-path request counts.
///
/// Rules are per path, e.g. `["/a.tgz": ["fail": 2]]`:
/// - `status`: always answer this status code;
/// - `fail`: answer 500 to the first N requests;
/// - `stall`: seconds to go silent after `stall_after` body bytes, for the first
///   `stall_times` requests (default all);
/// - `truncate`: send only N body bytes (after a full Content-Length) and close, for the
///   first `truncate_times` requests (default 1);
/// - `trickle`: after `trickle_after` body bytes, send the rest at this many bytes a second;
/// - `extra`: send this many bytes more than the Content-Length announced;
/// - `noranges`: ignore Range headers; `weak`: send a weak ETag;
/// - `delay`: seconds to wait before answering; `redirect`: answer 302 to this location.
public final class FaultHTTPServer: @unchecked Sendable {
    public let port: Int
    public let root: URL
    private let process: PythonProcess
    private let stats: String

    public init(serving root: URL, rules: [String: [String: any Sendable]] = [:]) throws {
        self.root = root
        let json = try JSONSerialization.data(withJSONObject: rules)
        stats = FileManager.default.temporaryDirectory.appendingPathComponent("fault-\(UUID().uuidString).json").path
        process = try PythonProcess(
            script: Self.script, arguments: [root.path, String(decoding: json, as: UTF8.self), stats])
        guard let port = Int(process.firstLine) else { throw TestSupportError("fault server did not report a port") }
        self.port = port
    }

    public func url(_ path: String) -> String { "http://127.0.0.1:\(port)/\(path)" }

    /// The server rewrites a stats file after every request (written to a temporary name
    /// and renamed, so a read never sees half of it).
    private func readStats() throws -> [String: Any] {
        guard let data = FileManager.default.contents(atPath: stats) else { return [:] }
        return (try JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
    }

    /// How many GET/HEAD requests each path received.
    public func counts() throws -> [String: Int] { (try readStats()["counts"] as? [String: Int]) ?? [:] }

    /// The Range headers each path received, in order ("" for none).
    public func ranges(_ path: String) throws -> [String] {
        ((try readStats()["ranges"] as? [String: [String]]) ?? [:])[path] ?? []
    }

    public func stop() {
        process.stop()
        unlink(stats)
    }

    static let script = #"""
        import hashlib, json, os, sys, threading, time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        root, rules, stats = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
        counts, ranges, lock = {}, {}, threading.Lock()
        def save():
            with open(stats + ".tmp", "w") as f: json.dump({"counts": counts, "ranges": ranges}, f)
            os.replace(stats + ".tmp", stats)

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"
            def log_message(self, *a): pass
            def do_HEAD(self): self.handle_get(head=True)
            def do_GET(self): self.handle_get(head=False)
            def handle_get(self, head):
                path = self.path.split("?", 1)[0]
                with lock:
                    n = counts.get(path, 0); counts[path] = n + 1
                    ranges.setdefault(path, []).append(self.headers.get("Range", ""))
                    save()
                rule = rules.get(path, {})
                if rule.get("delay"): time.sleep(rule["delay"])
                if "status" in rule: return self.fail(rule["status"])
                if n < rule.get("fail", 0): return self.fail(500)
                if "redirect" in rule:
                    self.send_response(302); self.send_header("Location", rule["redirect"])
                    self.send_header("Content-Length", "0"); self.end_headers(); return
                fs = os.path.join(root, path.lstrip("/"))
                if not os.path.isfile(fs): return self.fail(404)
                data = open(fs, "rb").read()
                etag = '"%s"' % hashlib.sha256(data).hexdigest()[:16]
                if rule.get("weak"): etag = "W/" + etag
                start, status = 0, 200
                rng = self.headers.get("Range")
                ifr = self.headers.get("If-Range")
                if rng and not rule.get("noranges") and (ifr is None or ifr == etag):
                    start = int(rng.split("=")[1].split("-")[0]); status = 206
                body = data[start:]
                self.send_response(status)
                self.send_header("ETag", etag)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body)))
                if status == 206: self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
                self.end_headers()
                if head: return
                if "truncate" in rule and n < rule.get("fail", 0) + rule.get("truncate_times", 1):
                    self.wfile.write(body[:rule["truncate"]]); self.wfile.flush()
                    self.connection.shutdown(2); return
                if "trickle" in rule:
                    cut = rule.get("trickle_after", 0)
                    self.wfile.write(body[:cut]); self.wfile.flush()
                    try:
                        for i in range(cut, len(body)):
                            self.wfile.write(body[i:i + 1]); self.wfile.flush(); time.sleep(1 / rule["trickle"])
                    except OSError: pass
                    return
                if "extra" in rule:
                    self.wfile.write(body + b"X" * rule["extra"]); self.wfile.flush(); return
                if "stall" in rule and n < rule.get("fail", 0) + rule.get("stall_times", 1 << 30):
                    cut = rule.get("stall_after", 0)
                    self.wfile.write(body[:cut]); self.wfile.flush()
                    time.sleep(rule["stall"]); body = body[cut:]
                self.wfile.write(body)
            def fail(self, code):
                body = b"error %d" % code
                self.send_response(code); self.send_header("Content-Length", str(len(body))); self.end_headers()
                if self.command != "HEAD": self.wfile.write(body)

        s = ThreadingHTTPServer(("127.0.0.1", 0), H)
        s.daemon_threads = True
        print(s.server_address[1], flush=True)
        s.serve_forever()
        """#
}
