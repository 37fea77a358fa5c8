import Foundation
import Host
import Hummingbird

/// The endpoints of the common first design, unchanged, so an agent backend switches by
/// changing its base URL: `GET /`, `POST /execute`, `POST /file/read`, `POST /search`.
/// Reads and searches run inside the project's sandbox, so a path can reach nothing of
/// the host whatever symlinks the project holds.
struct CompatRoutes {
    let state: APIState
    var limits: APILimits { state.configuration.limits }

    func add(to router: Router<APIContext>) {
        router.get("/") { _, _ in
            Response.json(["service": "corral", "status": "ok", "version": .string(HostModule.version)])
        }
        router.post("/execute") { request, context in try await execute(request, context) }
        router.post("/file/read") { request, context in try await readFile(request, context) }
        router.post("/search") { request, context in try await search(request, context) }
    }

    /// The body's `project_id`, which the caller must be allowed to use.
    func project(_ body: inout Arguments, _ context: APIContext) throws(APIError) -> (String, Principal) {
        let id = try body.requiredString("project_id", maxBytes: 128)
        guard ProjectID.isValid(id) else {
            throw APIError(
                .badRequest, "invalid_project", "invalid project id \"\(id)\": use 1-128 of A-Z a-z 0-9 . _ -")
        }
        return (id, try context.authorize(project: id))
    }

    /// `{project_id, command, timeout?, cwd?}` → `{stdout, stderr, return_code}`; waits for
    /// the end, as the callers of this shape expect.
    func execute(_ request: Request, _ context: APIContext) async throws -> Response {
        var body = try await request.jsonObject(limit: limits.maxJSONBytes)
        let (id, principal) = try project(&body, context)
        let command = try body.requiredString("command", maxBytes: limits.maxCommandBytes)
        guard !command.allSatisfy(\.isWhitespace) else { throw APIError.invalidArgument("command", "is empty") }
        let timeout = try body.number("timeout", aliases: ["timeout_s"], in: 0.001...604_800)
        let cwd = try CommandBody.cwd(&body)
        try body.finish("an execute request")
        let seconds = try await CommandBody.resolvedTimeout(timeout, project: id, state: state)
        let job = JobRequest(
            project: id, command: command, cwd: cwd, timeoutSeconds: seconds, submitter: principal.name,
            submitterCap: principal.jobCap(limits))
        let snapshot = try await state.commands.run(
            job, budget: .seconds(min(seconds + 30, 7200)), via: "compat:execute")
        var stderr = snapshot.record.result?.stderr ?? ""
        if let note = Self.note(JobView(snapshot: snapshot)) {
            stderr += (stderr.isEmpty || stderr.hasSuffix("\n") ? "" : "\n") + "[corral] " + note
        }
        let code: JSON = snapshot.record.result.map { .int($0.exitCode) } ?? (snapshot.record.state.isFinal ? -1 : nil)
        return Response.json([
            "stdout": .string(snapshot.record.result?.stdout ?? snapshot.output), "stderr": .string(stderr),
            "return_code": code,
        ])
    }

    /// What `/execute` adds to `stderr` for the caller: what happened and what to do, as a
    /// job's `message` says it. Its `stdout` and `stderr` are the result's whole (up to the
    /// policy's output cap, as this shape's callers expect), so it names only that cap's cut.
    static func note(_ view: JobView) -> String? {
        var notes = [view.stateMessage, view.leftoverMessage].compactMap { $0 }
        if let result = view.result, result.truncated {
            let whole =
                result.logPath.map {
                    "The whole output is in \(JobView.sandboxPath($0)); read it with read_file (offset/limit) or grep it."
                }
                ?? "The host could not keep the whole output."
            notes.insert(
                "The output was longer than the cap: \(result.omittedBytes) bytes in the middle were cut. \(whole)",
                at: min(1, notes.count))
        }
        if notes.isEmpty, let error = view.record.error { return error }
        return notes.isEmpty ? nil : notes.joined(separator: " ")
    }

    /// `{project_id, file_path}` → `{content, error, exists, size}`.
    func readFile(_ request: Request, _ context: APIContext) async throws -> Response {
        var body = try await request.jsonObject(limit: limits.maxJSONBytes)
        let (id, principal) = try project(&body, context)
        let path = try body.requiredString("file_path", aliases: ["path"], maxBytes: 4096)
        try body.finish("a file read")
        guard let inside = SandboxPaths.resolve(path) else {
            return Response.json(
                Self.read(nil, error: "path_outside_project: \(path) is outside the project", exists: false))
        }
        let script = """
            f=$CORRAL_PATH
            [ -e "$f" ] || exit 3
            [ -d "$f" ] && exit 4
            [ -r "$f" ] || exit 5
            wc -c < "$f" >&2 && exec cat -- "$f"
            """
        let job = JobRequest(
            project: id, command: script, environment: ["CORRAL_PATH": inside], timeoutSeconds: 30,
            submitter: principal.name,
            submitterCap: principal.jobCap(limits), writesLog: false)
        let snapshot = try await state.commands.run(job, budget: .seconds(60), via: "compat:file_read")
        guard let result = snapshot.record.result, snapshot.record.state == .completed else {
            return Response.json(
                Self.read(nil, error: snapshot.record.error ?? "the read did not finish", exists: false))
        }
        let size = Int(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))
        switch result.exitCode {
        case 0 where result.truncated:
            return Response.json(
                Self.read(
                    nil, error: "file_too_large: read it in parts with the read_file tool", exists: true, size: size))
        case 0: return Response.json(Self.read(result.stdout, error: nil, exists: true, size: size))
        case 3: return Response.json(Self.read(nil, error: "not_found: \(path) does not exist", exists: false))
        case 4: return Response.json(Self.read(nil, error: "is_directory: \(path) is a directory", exists: true))
        default: return Response.json(Self.read(nil, error: "cannot read \(path): \(result.stderr)", exists: true))
        }
    }

    /// A failed read answers `content: ""` (a string, as the first design it is compatible
    /// with does): clients that treat `content` as text must not break on a missing file.
    static func read(_ content: String?, error: String?, exists: Bool, size: Int? = nil) -> JSON {
        [
            "content": .string(content ?? ""), "error": .optional(error.map { .string($0) }),
            "exists": .bool(exists), "size": .optional(size.map { .int($0) }),
        ]
    }

    /// `{project_id, query, path?, glob?, case_insensitive?, regex?, max_results?}` →
    /// `{results: [{file, line, text}], count, truncated}`.
    func search(_ request: Request, _ context: APIContext) async throws -> Response {
        var body = try await request.jsonObject(limit: limits.maxJSONBytes)
        let (id, principal) = try project(&body, context)
        let query = try body.requiredString("query", aliases: ["pattern"], maxBytes: 4096)
        guard !query.isEmpty else { throw APIError.invalidArgument("query", "is empty") }
        let path = try body.string("path", maxBytes: 4096) ?? "."
        let glob = try body.string("glob", maxBytes: 1024)
        let caseInsensitive = try body.bool("case_insensitive") ?? false
        let regex = try body.bool("regex") ?? false
        let max = try body.int("max_results", in: 1...10_000) ?? 200
        try body.finish("a search")
        guard let inside = SandboxPaths.resolve(path) else {
            throw APIError(.unprocessableContent, "path_outside_project", "\(path) is outside the project")
        }
        let job = JobRequest(
            project: id,
            command: SearchScript.command(regex: regex, caseInsensitive: caseInsensitive, glob: glob != nil, max: max),
            environment: ["CORRAL_QUERY": query, "CORRAL_PATH": inside, "CORRAL_GLOB": glob ?? ""], timeoutSeconds: 60,
            submitter: principal.name,
            submitterCap: principal.jobCap(limits), writesLog: false)
        let snapshot = try await state.commands.run(job, budget: .seconds(90), via: "compat:search")
        guard let result = snapshot.record.result, snapshot.record.state == .completed else {
            let why = snapshot.record.result?.stderr ?? snapshot.record.error ?? "the search did not finish"
            throw APIError(.unprocessableContent, "search_failed", "search failed: \(why)")
        }
        // busybox grep has no --include: the glob is applied to file names here too.
        let hits = SearchScript.parse(result.stdout).filter { hit in
            glob.map { Glob.matches($0, String(hit.0.split(separator: "/").last ?? "")) } ?? true
        }
        // 2 is an error for both tools; with matches it was a file they could not read (the
        // matches stand), without any it is the answer: never an empty result.
        if result.exitCode > 1, hits.isEmpty {
            let why = result.stderr.split(separator: "\n").first.map(String.init) ?? "exit \(result.exitCode)"
            if regex, SearchScript.isPatternError(result.stderr) {
                throw APIError.invalidArgument(
                    "query",
                    "is not a valid regular expression (\(why)); escape ( [ { . * + ? with a backslash, "
                        + "or leave regex false to search for the text literally")
            }
            throw APIError(.unprocessableContent, "search_failed", "search failed: \(why)")
        }
        return Response.json([
            "results": .array(
                hits.prefix(max).map { ["file": .string($0.0), "line": .int($0.1), "text": .string($0.2)] }),
            "count": .int(min(hits.count, max)), "truncated": .bool(hits.count > max),
        ])
    }
}

/// Paths as the compatibility calls give them, checked lexically before they reach the
/// sandbox: relative ones are under /workspace, absolute ones must be.
enum SandboxPaths {
    static func resolve(_ path: String) -> String? {
        guard !path.isEmpty, !path.utf8.contains(0) else { return nil }
        let relative: Substring
        if path.hasPrefix("/") {
            guard path == "/workspace" || path.hasPrefix("/workspace/") else { return nil }
            relative = path.dropFirst("/workspace".count)
        } else {
            relative = Substring(path)
        }
        var parts: [Substring] = []
        for part in relative.split(separator: "/") where part != "." {
            if part == ".." {
                guard !parts.isEmpty else { return nil }
                parts.removeLast()
            } else {
                parts.append(part)
            }
        }
        return "/workspace" + (parts.isEmpty ? "" : "/" + parts.joined(separator: "/"))
    }
}

/// ripgrep when the image has it (it skips ignored and binary files), else grep with
/// extended expressions (rg's syntax, near enough); both print `file:line:text`. The query and paths come in through the environment, never
/// through the command text.
enum SearchScript {
    /// The search's own exit status is the script's (0 matches, 1 none, 2 an error such as a
    /// bad pattern), not `head`'s: POSIX sh has no `pipefail`, so it comes out on fd 4. 141
    /// is the search stopped by SIGPIPE once `head` had the lines it wanted.
    static func command(regex: Bool, caseInsensitive: Bool, glob: Bool, max: Int) -> String {
        let flags = (regex ? "" : " -F") + (caseInsensitive ? " -i" : "")
        // grep's default syntax is basic, where `(` is a literal; -E reads what rg reads.
        let grepFlags = (regex ? " -E" : " -F") + (caseInsensitive ? " -i" : "")
        let rgGlob = glob ? " -g \"$CORRAL_GLOB\"" : ""
        return """
            cd /workspace || exit 2
            search() {
              if command -v rg >/dev/null 2>&1; then
                rg -n -H --no-heading --color never\(flags)\(rgGlob) -e "$CORRAL_QUERY" -- "$CORRAL_PATH"
              else
                grep -r -n -H\(grepFlags) -e "$CORRAL_QUERY" -- "$CORRAL_PATH"
              fi
            }
            exec 3>&1
            status=$( { { search; echo $? >&4; } | head -n \(max + 1) >&3; } 4>&1 )
            [ "$status" = 141 ] && status=0
            exit "$status"
            """
    }

    /// Whether a failed search's stderr is about the pattern: ripgrep's, GNU grep's and
    /// busybox grep's wording.
    static func isPatternError(_ stderr: String) -> Bool {
        ["regex parse error", "error parsing regex", "Unmatched", "Invalid", "Trailing backslash", "bad regex"]
            .contains { stderr.contains($0) }
    }

    /// `file:line:text` lines; the file part loses its `/workspace/` prefix.
    static func parse(_ output: String) -> [(String, Int, String)] {
        output.split(separator: "\n", omittingEmptySubsequences: true).compactMap { line in
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3, let number = Int(parts[1]) else { return nil }
            var file = String(parts[0])
            if file.hasPrefix("/workspace/") { file.removeFirst("/workspace/".count) }
            return (file, number, String(parts[2]))
        }
    }
}
