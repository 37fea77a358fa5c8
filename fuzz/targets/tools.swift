// libFuzzer target: the file tools as a model calls them, FileTools.call(name:arguments:),
// which decodes each tool's arguments (types, aliases, unknown keys) and runs the tool on a
// real workspace: read, write, edit, list, glob, grep, file_info and the text-editor tool.
//
// Input: the first byte picks the tool (every name and alias), the rest is the arguments'
// JSON object. Beyond "no crash, hang or leak", each run checks the confinement the tools
// promise: whatever the arguments, nothing outside the workspace is read into the result,
// changed or created, even through the symlinks the workspace holds.
import Glibc

/// Per process on tmpfs: `base/ws` is the workspace, rebuilt before every run; `base/secret`
/// and `base/outside/` sit beside it and must stay exactly as they are.
private let base: String = {
    let base = "/dev/shm/corral-fuzz-tools-\(getpid())"
    mkdir(base, 0o700)
    mkdir(base + "/outside", 0o700)
    put(base + "/secret", secret)
    atexit { removeTree("/dev/shm/corral-fuzz-tools-\(getpid())") }
    return base
}()

private let secret = "SECRET-OUTSIDE-THE-WORKSPACE\n"
private let names = FileTools.toolNames.sorted() + ["no_such_tool"]
private let limits: FileTools.Limits = {
    var limits = FileTools.Limits()
    limits.grepTimeBudget = 2
    limits.maxWalkEntries = 2000
    return limits
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTools(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let name = names[Int(data[0]) % names.count]
    guard
        case .object(let arguments)? = try? JSONValue.parse(json: UnsafeBufferPointer(start: data + 1, count: size - 1))
    else { return 0 }
    let workspace = base + "/ws"
    removeTree(workspace)
    makeWorkspace(workspace)

    let tools = try! FileTools(root: workspace, owner: (0, 0), limits: limits)
    let result = tools.call(name: name, arguments: arguments, caller: "fuzz")
    if result.text.contains("SECRET-OUTSIDE")
        || String(decoding: result.structured.serialized(), as: UTF8.self).contains("SECRET-OUTSIDE")
    {
        fatalError("\(name) read a file outside the workspace: \(result.text.prefix(400))")
    }
    if read(base + "/secret") != secret { fatalError("\(name) changed a file outside the workspace") }
    let outside = entries(of: base + "/outside")
    if !outside.isEmpty { fatalError("\(name) created \(outside) outside the workspace") }
    let beside = entries(of: base)
    if beside != ["outside", "secret", "ws"] { fatalError("\(name) created \(beside) beside the workspace") }
    return 0
}

/// A small project with the shapes the tools treat specially: nested files, an ignored file,
/// `node_modules`, `.git`, a binary file, and symlinks inside and out of the workspace.
private func makeWorkspace(_ root: String) {
    mkdir(root, 0o755)
    for directory in ["src", "src/deep", "node_modules", ".git", "logs"] { mkdir(root + "/" + directory, 0o755) }
    put(root + "/README.md", "# Demo\n\nfoo bar baz\nfoo again\n")
    put(root + "/src/main.py", "def main():\n    print('hello')\n    return 1\n\nmain()\n")
    put(root + "/src/deep/util.js", "export const x = 1;\nexport function f() { return x; }\n")
    put(root + "/.gitignore", "*.log\nbuild/\n")
    put(root + "/logs/run.log", "ignored log line\n")
    put(root + "/node_modules/pkg.js", "module.exports = 1;\n")
    put(root + "/.git/HEAD", "ref: refs/heads/main\n")
    put(root + "/bin.dat", "abc\u{0}def")
    symlink("README.md", root + "/readme-link")
    symlink("../secret", root + "/escape-link")
    symlink(base + "/secret", root + "/absolute-link")
    symlink("../outside", root + "/outside-dir")
}

private func put(_ path: String, _ text: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    precondition(fd >= 0, "open \(path): \(errno)")
    let bytes = Array(text.utf8)
    precondition(write(fd, bytes, bytes.count) == bytes.count)
    close(fd)
}

private func read(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 4096)
    let count = Glibc.read(fd, &buffer, buffer.count)
    return count < 0 ? nil : String(decoding: buffer[..<count], as: UTF8.self)
}
