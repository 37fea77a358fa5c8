import Sandbox

/// Descriptions and JSON Schemas of the tools, for MCP `tools/list` and `GET …/tools`.
enum ToolCatalog {
    static func definitions(for names: [String]) -> [JSON] {
        names.compactMap { name in
            guard let (description, properties, required) = table[name] else { return nil }
            return [
                "name": .string(name), "description": .string(description),
                "inputSchema": [
                    "type": "object", "properties": .object(properties),
                    "required": .array(required.map { .string($0) }),
                ],
            ]
        }
    }

    private static func string(_ text: String) -> JSON { ["type": "string", "description": .string(text)] }
    private static func integer(_ text: String) -> JSON { ["type": "integer", "description": .string(text)] }
    private static func number(_ text: String) -> JSON { ["type": "number", "description": .string(text)] }
    private static func boolean(_ text: String) -> JSON { ["type": "boolean", "description": .string(text)] }

    static let table: [String: (String, [String: JSON], [String])] = [
        "bash": (
            "Run a command with bash -c (/bin/sh -c where the project's image has no bash) in the project's sandbox, in a fresh shell each call. Returns its output and exit code; a non-zero exit is a normal result. Processes it leaves running (server &, nohup) are stopped when it exits: long commands and servers need background set to true, then read the output with job_output.",
            [
                "command": string("The bash command."),
                "timeout": number(
                    "Seconds before the command and all it started are killed (default 120; the project's policy sets the maximum)."
                ),
                "cwd": string(
                    "Working directory: absolute, or relative to /workspace (default /workspace). It must be inside /workspace."
                ),
                "env": [
                    "type": "object", "additionalProperties": ["type": "string"],
                    "description": "Environment variables for the command, name to value.",
                ],
                "background": boolean("Start it and return its job_id at once (default false)."),
                "session_id": string(
                    "Run it in this shell session (POST /v1/projects/{id}/sessions), where cd, exports and functions persist. A caller with a session of its own (an MCP session, or an X-Session-Id header) gets a persistent shell without naming one."
                ),
                "restart": boolean("Start the session's shell afresh first (alone: just restart it)."),
            ], ["command"]
        ),
        "python": (
            "Run Python code in a persistent interpreter in the project's sandbox: variables, imports and open files stay between calls. Returns what it printed, the value of the last expression, the traceback of an error, and matplotlib figures (plt.show(), or left open) as images; tables (pandas DataFrames) also as HTML. Files are under /workspace.",
            [
                "code": string("The code to run."),
                "timeout": number(
                    "Seconds before the run is interrupted (KeyboardInterrupt); the interpreter and its variables stay."
                ),
                "session_id": string("Run it in this python session instead of the caller's own."),
                "restart": boolean("Start the interpreter afresh first (alone: just restart it)."),
            ], ["code"]
        ),
        "job_output": (
            "Read a job's new output and status, waiting up to `wait` seconds for something new.",
            [
                "job_id": string("The job's id."), "wait": number("Seconds to wait for new output (default 30)."),
                "since": integer("The cursor from the previous call, to get only new output (default 0)."),
            ], ["job_id"]
        ),
        "job_kill": (
            "Stop a job: its whole process tree gets the signal, then SIGKILL for anything still running after a short grace (KILL: at once). Returns what the job printed and how it ended.",
            [
                "job_id": string("The job's id."),
                "signal": [
                    "type": "string", "enum": .array(JobSignal.allCases.map { .string($0.rawValue) }),
                    "description":
                        "Sent first (default TERM). INT lets a program that handles Ctrl-C (a test runner, a server) finish its own way; KILL stops at once.",
                ],
            ],
            ["job_id"]
        ),
        "project_info": (
            "The project's workspace root, whether it changed, when it expires, its running jobs, the TCP ports its processes listen on (each with the URL that reaches it through this API) and its limits.",
            [:], []
        ),
        "read_file": (
            "Read a text file as numbered lines. Large files: use offset and limit; the answer says how to continue.",
            [
                "path": string("Path relative to /workspace (or absolute inside it)."),
                "offset": integer("First line, from 1 (default 1)."),
                "limit": integer("Lines to read (default 2000)."),
            ], ["path"]
        ),
        "write_file": (
            "Write a whole file atomically, creating parent directories.",
            ["path": string("Path relative to /workspace."), "content": string("The file's new content.")],
            ["path", "content"]
        ),
        "edit_file": (
            "Replace an exact string in a file: old_str must match exactly and once (or use replace_all). edits applies several replacements all or nothing. Returns the changed lines.",
            [
                "path": string("Path relative to /workspace."), "old_str": string("The exact text to replace."),
                "new_str": string("The replacement."),
                "replace_all": boolean("Replace every occurrence (default false)."),
                "edits": [
                    "type": "array", "description": "Several {old_str, new_str, replace_all} edits, applied together.",
                    "items": [
                        "type": "object",
                        "properties": [
                            "old_str": ["type": "string"], "new_str": ["type": "string"],
                            "replace_all": ["type": "boolean"],
                        ], "required": ["old_str", "new_str"],
                    ],
                ],
            ], ["path"]
        ),
        "list_dir": (
            "List a directory tree (skips .git, node_modules and ignored files, and says so).",
            [
                "path": string("Directory (default the workspace root)."), "depth": integer("Levels (default 2)."),
                "limit": integer("Most entries (default 500)."),
            ], []
        ),
        "glob": (
            "Find files by glob pattern, newest first.",
            [
                "pattern": string("A glob such as **/*.py."), "path": string("Directory to search (default root)."),
                "limit": integer("Most results (default 100)."),
            ], ["pattern"]
        ),
        "grep": (
            "Search file contents with a regular expression (ripgrep syntax).",
            [
                "pattern": string("The regular expression."), "path": string("File or directory (default root)."),
                "glob": string("Only files matching this glob."),
                "case_insensitive": boolean("Ignore case (default false)."),
                "fixed_strings": boolean("Treat the pattern as plain text (default false)."),
                "context": integer("Lines of context around each match (default 0)."),
                "max_results": integer("Most matches (default 200)."),
            ], ["pattern"]
        ),
        "file_info": (
            "Type, size, line count and modification time of a path.", ["path": string("The path.")], ["path"]
        ),
    ]
}
