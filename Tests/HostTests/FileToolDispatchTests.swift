import Foundation
import Host
import Sandbox
import Testing

/// `FileTools.call`: JSON arguments checked exactly, and the aliases models know.
@Suite struct FileToolDispatchTests {
    static func project() throws -> FileToolFixture {
        try FileToolFixture(files: ["a.txt": "one\ntwo\nthree\n", "src/main.py": "print('hi')\n"])
    }

    @Test func theApiToolsRunWithTheirDefaults() throws {
        let f = try Self.project()
        let read = f.tools.call(name: "read_file", arguments: ["path": "a.txt", "offset": 2, "limit": 1])
        #expect(read == ToolResult(try f.tools.readFile("a.txt", offset: 2, limit: 1)))
        #expect(read.text == "     2\ttwo\n... 1 more line; call read_file with offset=3")
        #expect(!read.isError)
        #expect(read.errorCode == nil)
        let written = f.tools.call(name: "write_file", arguments: ["path": "b/c.txt", "content": "x\n"])
        #expect(written.text == "Created `b/c.txt`: 2 bytes, 1 line.")
        #expect(written.structured == ["path": "b/c.txt", "bytes_written": 2, "created": true])
        let edited = f.tools.call(name: "edit_file", arguments: ["path": "a.txt", "old_str": "two", "new_str": "2"])
        #expect(edited.structured.objectValue?["replacements"] == 1)
        #expect(
            f.tools.call(name: "list_dir", arguments: [:]).text == "./\n  a.txt\n  b/\n    c.txt\n  src/\n    main.py")
        #expect(f.tools.call(name: "glob", arguments: ["pattern": "**/*.py"]).text == "src/main.py")
        #expect(
            f.tools.call(name: "grep", arguments: ["pattern": "print", "context": 0]).text
                == "src/main.py:1:print('hi')")
        #expect(
            f.tools.call(name: "file_info", arguments: ["path": "a.txt"]).structured.objectValue?["line_count"] == 3)
    }

    @Test func anthropicTextEditorCommands() throws {
        let f = try Self.project()
        let tool = "str_replace_based_edit_tool"
        #expect(
            f.tools.call(name: tool, arguments: ["command": "view", "path": "/workspace/a.txt"]).text
                == "     1\tone\n     2\ttwo\n     3\tthree")
        #expect(
            f.tools.call(name: tool, arguments: ["command": "view", "path": "a.txt", "view_range": [2, -1]]).text
                == "     2\ttwo\n     3\tthree")
        #expect(
            f.tools.call(name: tool, arguments: ["command": "view", "path": "a.txt", "view_range": [1, 2]]).text
                == "     1\tone\n     2\ttwo\n... 1 more line; call read_file with offset=3")
        #expect(
            f.tools.call(name: tool, arguments: ["command": "view", "path": "/workspace"]).text
                == "./\n  a.txt\n  src/\n    main.py")
        _ = f.tools.call(name: tool, arguments: ["command": "create", "path": "new.txt", "file_text": "n\n"])
        #expect(f.contents("new.txt") == "n\n")
        let replaced = f.tools.call(
            name: "str_replace_editor",
            arguments: ["command": "str_replace", "path": "a.txt", "old_str": "one", "new_str": "1"])
        #expect(!replaced.isError)
        _ = f.tools.call(
            name: tool, arguments: ["command": "insert", "path": "a.txt", "insert_line": 0, "insert_text": "zero"])
        _ = f.tools.call(
            name: tool, arguments: ["command": "insert", "path": "a.txt", "insert_line": 4, "new_str": "four"])
        #expect(f.contents("a.txt") == "zero\n1\ntwo\nthree\nfour\n")
        let undo = f.tools.call(name: tool, arguments: ["command": "undo_edit", "path": "a.txt"])
        #expect(undo.errorCode == "invalid_argument")
        #expect(undo.isError)
    }

    @Test func argumentSpellingsAndMcpNames() throws {
        let f = try Self.project()
        _ = f.tools.call(name: "edit_file", arguments: ["file_path": "a.txt", "old_string": "one", "new_string": "1"])
        _ = f.tools.call(
            name: "edit_file",
            arguments: [
                "path": "a.txt", "edits": [["oldText": "two", "newText": "2"], ["old_str": "three", "new_str": "3"]],
            ])
        #expect(f.contents("a.txt") == "1\n2\n3\n")
        #expect(
            f.tools.call(name: "read_text_file", arguments: ["path": "a.txt", "head": 1]).text
                == "     1\t1\n... 2 more lines; call read_file with offset=2")
        #expect(
            f.tools.call(name: "read_text_file", arguments: ["path": "a.txt", "tail": 2]).text == "     2\t2\n     3\t3"
        )
        #expect(
            f.tools.call(name: "list_directory", arguments: ["path": "."]).text == "./\n  a.txt\n  src/\n"
                + "(directories at the depth limit are not expanded; call list_dir on one, or raise depth)")
        #expect(
            f.tools.call(name: "directory_tree", arguments: ["path": "."]).text == "./\n  a.txt\n  src/\n    main.py")
        #expect(f.tools.call(name: "search_files", arguments: ["path": ".", "pattern": "*.py"]).text == "src/main.py")
        #expect(
            f.tools.call(name: "get_file_info", arguments: ["path": "src/main.py"]).structured.objectValue?["type"]
                == "file")
    }

    @Test func argumentsAreCheckedExactly() throws {
        let f = try Self.project()
        let before = f.snapshot()
        let cases: [(String, [String: JSONValue], String, String)] = [
            ("read_file", [:], "path", "is required."),
            ("read_file", ["path": 7], "path", "must be a string, got an integer."),
            ("read_file", ["path": "a.txt", "offset": "10"], "offset", "must be an integer, got a string."),
            ("read_file", ["path": "a.txt", "offset": 1.5], "offset", "must be an integer, got a number."),
            ("read_file", ["path": "a.txt", "path2": "x"], "path2", "`read_file` has no such argument; it takes "),
            ("write_file", ["path": "x.txt"], "content", "is required."),
            ("write_file", ["path": "x.txt", "content": ["a"]], "content", "must be a string, got an array."),
            ("edit_file", ["path": "a.txt", "old_str": "one"], "new_str", "is required."),
            (
                "edit_file", ["path": "a.txt", "old_str": "one", "new_str": "1", "replace_all": "yes"], "replace_all",
                "must be a boolean (true or false), got a string."
            ),
            (
                "edit_file", ["path": "a.txt", "old_str": "one", "old_string": "one", "new_str": "1"], "old_str",
                "given more than once, as `old_str` and `old_string`."
            ),
            ("edit_file", ["path": "a.txt", "edits": [["old_str": "one"]]], "edits[0].new_str", "is required."),
            ("edit_file", ["path": "a.txt", "edits": ["one"]], "edits[0]", "must be an object, got a string."),
            (
                "edit_file", ["path": "a.txt", "edits": [["old_str": "one", "new_str": "1", "bogus": true]]], "bogus",
                "`edit_file edits[0]` has no such argument"
            ),
            ("grep", ["pattern": "x", "max_results": 0], "max_results", "must be between 1 and 10000."),
            ("list_dir", ["depth": true], "depth", "must be an integer, got a boolean."),
            (
                "str_replace_based_edit_tool", ["command": "frobnicate", "path": "a.txt"], "command",
                "`frobnicate` is not a command; use view, create, str_replace or insert."
            ),
            ("rm_rf", ["path": "."], "tool", "there is no file tool `rm_rf`"),
        ]
        for (tool, arguments, argument, detail) in cases {
            let result = f.tools.call(name: tool, arguments: arguments)
            #expect(result.isError, "\(tool) \(arguments)")
            #expect(result.errorCode == "invalid_argument", "\(tool) \(arguments)")
            #expect(result.text.hasPrefix("Invalid argument `\(argument)`: \(detail)"), "\(tool): \(result.text)")
            #expect(result.structured.objectValue?["code"] == "invalid_argument")
        }
        #expect(f.snapshot() == before)
    }

    @Test func badInputChangesNothing() throws {
        let f = try Self.project()
        try f.symlink("link", to: "/etc/passwd")
        #expect(mkfifo(f.root + "/pipe", 0o600) == 0)
        let before = f.snapshot()
        let calls: [(String, [String: JSONValue])] = [
            ("write_file", ["path": "../x", "content": "x"]), ("write_file", ["path": "/etc/x", "content": "x"]),
            ("write_file", ["path": "link", "content": "x"]), ("write_file", ["path": "pipe", "content": "x"]),
            ("write_file", ["path": "src", "content": "x"]),
            ("edit_file", ["path": "a.txt", "old_str": "nope", "new_str": "x"]),
            ("edit_file", ["path": "a.txt", "old_str": "o", "new_str": "x"]),
            (
                "edit_file",
                ["path": "a.txt", "edits": [["old_str": "one", "new_str": "1"], ["old_str": "zz", "new_str": "y"]]]
            ),
            ("edit_file", ["path": "missing/a.txt", "old_str": "a", "new_str": "b"]),
            (
                "str_replace_based_edit_tool",
                ["command": "insert", "path": "a.txt", "insert_line": 99, "insert_text": "x"]
            ),
            ("write_file", ["path": "a\u{0}b", "content": "x"]), ("write_file", ["path": "x", "content": 5]),
        ]
        for (tool, arguments) in calls {
            let result = f.tools.call(name: tool, arguments: arguments)
            #expect(result.isError, "\(tool) \(arguments): \(result.text)")
        }
        #expect(f.snapshot() == before)
    }

    @Test func infrastructureErrorsAreNotModelErrors() {
        let error = ToolError.io(path: "a.txt", SystemError("write(a.txt)", errno: ENOSPC))
        #expect(error.code == "io_error")
        #expect(!ToolResult(error).isError)
        #expect(ToolResult(ToolError.noOpEdit(path: "a", edit: nil)).isError)
    }

    @Test func jsonValuesRoundTrip() throws {
        let value: JSONValue = ["a": [1, 2.5, "x", true, nil], "b": ["c": -3]]
        let data = try JSONEncoder().encode(value)
        #expect(try JSONDecoder().decode(JSONValue.self, from: data) == value)
        #expect(String(decoding: try JSONEncoder().encode(JSONValue.number(3)), as: UTF8.self) == "3")
    }
}

extension JSONValue {
    var objectValue: [String: JSONValue]? {
        if case .object(let fields) = self { return fields }
        return nil
    }
}
