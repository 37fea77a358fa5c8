import Foundation

/// Corral's own drivers of a session's process, passed with `-c` so nothing in the sandbox
/// can change them, and the framing the host speaks with them over the driver's fd 3
/// (commands in) and fd 4 (replies out). No network port, no pickle: the shell's replies are
/// text fields, python's are JSON.
enum SessionDrivers {
    /// The shell driver, for bash and for busybox's sh alike (`command eval`, so a syntax
    /// error in a command does not end a POSIX shell). A command's `return` ends it, as in a
    /// sourced script.
    static let shell = #"""
        # Corral's shell session driver (docs/SESSIONS.md). The host writes each command on fd 3 as
        # a header line "ID END STDIN", the command's lines, a line END, and (STDIN = 1) the stdin
        # lines and END again; END is a random marker per run. The command runs in this shell, so
        # cd, exports, functions and aliases stay for the next one; the reply on fd 4 is
        # "ID STATUS\0CWD\0". fds 3 and 4 are closed while a command runs.
        [ -n "${BASH_VERSION-}" ] && shopt -s expand_aliases
        # An interrupt (the host signals this shell and what the command started, as a terminal's
        # Ctrl-C would) ends the whole command, not just its foreground process: the trap returns
        # from the function the command runs in, which stays in this shell.
        trap 'return 130' INT
        __corral_run() { command eval "$__corral_cmd"; }
        printf '0 0\0%s\0' "$PWD" >&4
        while IFS= read -r __corral_head <&3; do
          __corral_id=${__corral_head%% *}
          __corral_end=${__corral_head#* }
          __corral_in=${__corral_end#* }
          __corral_end=${__corral_end%% *}
          __corral_cmd=
          while IFS= read -r __corral_line <&3; do
            [ "$__corral_line" = "$__corral_end" ] && break
            __corral_cmd="$__corral_cmd$__corral_line
        "
          done
          if [ "$__corral_in" = 1 ]; then
            __corral_stdin=
            __corral_first=1
            while IFS= read -r __corral_line <&3; do
              [ "$__corral_line" = "$__corral_end" ] && break
              if [ -n "$__corral_first" ]; then __corral_stdin=$__corral_line; __corral_first=
              else __corral_stdin="$__corral_stdin
        $__corral_line"; fi
            done
            __corral_run 3<&- 4>&- <<__CORRAL_STDIN__
        $__corral_stdin
        __CORRAL_STDIN__
          else
            __corral_run 3<&- 4>&- </dev/null
          fi
          printf '%s %s\0%s\0' "$__corral_id" "$?" "$PWD" >&4
        done
        """#

    /// The python driver.
    static let python = #"""
        # Corral's python session driver (docs/SESSIONS.md). The host writes each request on fd 3
        # as "LENGTH\n" and that many bytes of JSON {"id", "code"}; the reply on fd 4 has the same
        # framing: {"id", "result", "error", "outputs"}. Only JSON crosses the pipes. The code runs
        # in one namespace that lives as long as the session; stdout and stderr are the session's.
        import ast, base64, builtins, importlib.abc, importlib.util, io, json, linecache, os, sys, traceback, types

        _commands = os.fdopen(os.dup(3), "rb", buffering=0)
        _replies = os.dup(4)
        os.close(3)
        os.close(4)
        os.set_inheritable(_replies, False)
        _main = types.ModuleType("__main__")
        _main.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = _main
        _outputs = []
        _cells = 0


        def _write(message):
            data = json.dumps(message, ensure_ascii=False, default=str).encode()
            data = b"%d\n" % len(data) + data
            while data:
                data = data[os.write(_replies, data):]


        def _read():
            header = b""
            while not header.endswith(b"\n"):
                byte = _commands.read(1)
                if not byte:
                    return None
                header += byte
            size, body = int(header), b""
            while len(body) < size:
                chunk = _commands.read(size - len(body))
                if not chunk:
                    return None
                body += chunk
            return json.loads(body)


        def _figures():
            """Every open matplotlib figure as a PNG output, closed afterwards."""
            pyplot = sys.modules.get("matplotlib.pyplot")
            if pyplot is None:
                return
            for number in pyplot.get_fignums():
                figure = pyplot.figure(number)
                buffer = io.BytesIO()
                figure.savefig(buffer, format="png", bbox_inches="tight")
                _outputs.append({"mime_type": "image/png", "data": base64.b64encode(buffer.getvalue()).decode()})
            pyplot.close("all")


        def display(*values):
            """Shows values in the run's outputs, as a notebook would: HTML and text for tables,
            PNG for figures and images."""
            for value in values:
                _rich(value)


        def _rich(value):
            figure_type = getattr(sys.modules.get("matplotlib.figure"), "Figure", None)
            if figure_type is not None and isinstance(value, figure_type):
                buffer = io.BytesIO()
                value.savefig(buffer, format="png", bbox_inches="tight")
                _outputs.append({"mime_type": "image/png", "data": base64.b64encode(buffer.getvalue()).decode()})
                return
            for method, mime in (("_repr_png_", "image/png"), ("_repr_html_", "text/html")):
                render = getattr(value, method, None)
                if callable(render) and not isinstance(value, type):
                    try:
                        data = render()
                    except Exception:
                        data = None
                    if data:
                        if isinstance(data, bytes):
                            data = base64.b64encode(data).decode()
                        _outputs.append({"mime_type": mime, "data": data})
            _outputs.append({"mime_type": "text/plain", "data": repr(value)})


        class _PyplotHook(importlib.abc.MetaPathFinder, importlib.abc.Loader):
            """Makes pyplot's show() hand its figures to the run's outputs, the moment pyplot is
            first imported."""

            def find_spec(self, name, path, target=None):
                if name != "matplotlib.pyplot":
                    return None
                sys.meta_path.remove(self)
                try:
                    spec = importlib.util.find_spec(name)
                finally:
                    sys.meta_path.insert(0, self)
                if spec is None:
                    return None
                self.inner = spec.loader
                spec.loader = self
                return spec

            def create_module(self, spec):
                return self.inner.create_module(spec)

            def exec_module(self, module):
                self.inner.exec_module(module)
                module.show = lambda *args, **kwargs: _figures()


        sys.meta_path.insert(0, _PyplotHook())
        builtins.display = display


        def _traceback(error):
            frames = traceback.extract_tb(error.__traceback__)
            # The driver's own frames come first; the user's start at their cell.
            while frames and not frames[0].filename.startswith("<cell-"):
                frames.pop(0)
            lines = ["Traceback (most recent call last):\n"] + traceback.format_list(frames) if frames else []
            return "".join(lines + traceback.format_exception_only(type(error), error))


        def _run(code):
            global _cells
            _cells += 1
            name = "<cell-%d>" % _cells
            linecache.cache[name] = (len(code), None, code.splitlines(True), name)
            result, error = None, None
            try:
                tree = ast.parse(code, name, "exec")
                last = None
                if tree.body and isinstance(tree.body[-1], ast.Expr):
                    last = ast.Expression(tree.body.pop().value)
                exec(compile(tree, name, "exec"), _main.__dict__)
                if last is not None:
                    value = eval(compile(last, name, "eval"), _main.__dict__)
                    if value is not None:
                        _main.__dict__["_"] = value
                        result = repr(value)
                        figure_type = getattr(sys.modules.get("matplotlib.figure"), "Figure", None)
                        rich = hasattr(value, "_repr_html_") or hasattr(value, "_repr_png_")
                        if rich or (figure_type is not None and isinstance(value, figure_type)):
                            _rich(value)
            except BaseException as caught:
                if isinstance(caught, SystemExit):
                    raise
                error = {"name": type(caught).__name__, "value": str(caught), "traceback": _traceback(caught)}
            try:
                _figures()
            except Exception as caught:
                error = error or {"name": type(caught).__name__, "value": str(caught), "traceback": _traceback(caught)}
            return result, error


        _write({"id": 0, "ready": True, "version": sys.version.split()[0]})
        while True:
            try:
                request = _read()
                if request is None:
                    break
                del _outputs[:]
                result, error = _run(request["code"])
                sys.stdout.flush()
                sys.stderr.flush()
                _write({"id": request["id"], "result": result, "error": error, "outputs": list(_outputs)})
            except KeyboardInterrupt:
                # An interrupt that came between runs, or while a reply was being written.
                continue
        """#

    /// A shell command as the shell driver reads it: a header line `ID END STDIN`, the
    /// command's lines, the marker line, then (with stdin) its lines and the marker again.
    /// The marker is random per run, so no line of the command or its stdin can be it.
    static func shellFrame(id: Int, command: String, stdin: String?) -> [UInt8] {
        let marker = "__CORRAL_END_" + UUID().uuidString.replacingOccurrences(of: "-", with: "")
        var text = "\(id) \(marker) \(stdin == nil ? 0 : 1)\n" + terminated(command) + marker + "\n"
        if let stdin { text += terminated(stdin) + marker + "\n" }
        return Array(text.utf8)
    }

    private static func terminated(_ text: String) -> String {
        text.isEmpty || text.hasSuffix("\n") ? text : text + "\n"
    }

    /// A python request: `LENGTH\n` and the JSON.
    static func pythonFrame(id: Int, code: String) -> [UInt8] {
        let body = JSONValue.object(["id": .number(Double(id)), "code": .string(code)]).serialized()
        return Array("\(body.count)\n".utf8) + body
    }
}

/// Splits what a driver writes on fd 4 into replies, across chunk boundaries.
struct ReplyParser {
    enum Reply: Equatable {
        /// The shell's `ID STATUS\0CWD\0`.
        case shell(id: Int, status: Int32, cwd: String)
        /// Python's JSON object.
        case python([String: JSONValue])
    }

    let kind: SessionKind
    private var buffer: [UInt8] = []

    init(kind: SessionKind) { self.kind = kind }

    /// The whole replies `chunk` completes; nil when the driver broke the framing.
    mutating func feed(_ chunk: [UInt8]) -> [Reply]? {
        buffer += chunk
        var replies: [Reply] = []
        while true {
            switch kind {
            case .shell:
                guard let first = buffer.firstIndex(of: 0),
                    let second = buffer[(first + 1)...].firstIndex(of: 0)
                else { return replies }
                let head = String(decoding: buffer[..<first], as: UTF8.self).split(separator: " ")
                let cwd = String(decoding: buffer[(first + 1)..<second], as: UTF8.self)
                buffer.removeFirst(second + 1)
                guard head.count == 2, let id = Int(head[0]), let status = Int32(head[1]) else { return nil }
                replies.append(.shell(id: id, status: status, cwd: cwd))
            case .python:
                guard let newline = buffer.firstIndex(of: 0x0A) else {
                    return buffer.count > 20 ? nil : replies
                }
                guard let size = Int(String(decoding: buffer[..<newline], as: UTF8.self)), size >= 0 else {
                    return nil
                }
                guard buffer.count >= newline + 1 + size else { return replies }
                let body = Array(buffer[(newline + 1)..<(newline + 1 + size)])
                buffer.removeFirst(newline + 1 + size)
                guard case .object(let fields)? = try? JSONValue.parse(json: body) else { return nil }
                replies.append(.python(fields))
            }
        }
    }
}
