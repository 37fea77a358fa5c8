import Foundation
import Host
import TestSupport
import Testing

/// docs/THREATS.md, "Bad archives, paths and snapshots": file tool paths written by an adversary, and a
/// workspace whose contents a hostile job planted. Nothing may reach a host file.
@Suite struct FileToolAttackTests {
    /// Calls every path-taking tool with `path`, returning each error code (or "ok").
    static func everyTool(_ tools: FileTools, _ path: String) -> [String: String] {
        [
            "read": codeOf { try tools.readFile(path) },
            "write": codeOf { try tools.writeFile(path, content: "pwned") },
            "edit": codeOf { try tools.editFile(path, oldString: "root", newString: "pwned") },
            "insert": codeOf { try tools.insert(path, line: 0, text: "pwned") },
            "info": codeOf { try tools.fileInfo(path) },
            "list": codeOf { try tools.listDir(path) },
            "glob": codeOf { try tools.glob("*", path: path) },
            "grep": codeOf { try tools.grep("root", path: path) },
        ]
    }

    @Test(arguments: [
        "../etc/passwd", "../../../../../../etc/passwd", "a/../../etc/passwd", "/workspace/../etc/passwd",
        "/workspace/../../etc/passwd", "..", "/etc/passwd", "/etc", "/", "/proc/self/root/etc/passwd",
        "/proc/1/root/etc/shadow", "/proc/self/fd/0", "/workspacex/a.txt", "/tmp/x", "//etc/passwd",
    ])
    func dotDotAndAbsoluteHostPathsAreOutsideTheProject(path: String) throws {
        let f = try FileToolFixture(files: ["a.txt": "root\n"])
        let host = try HostFile()
        let before = (f.snapshot(), host.snapshot())
        let codes = Self.everyTool(f.tools, path)
        #expect(Set(codes.values) == ["path_outside_project"], "\(path): \(codes)")
        #expect(f.snapshot() == before.0)
        #expect(host.snapshot() == before.1)
    }

    @Test func aClimbingPathWritesNothingBesideTheWorkspace() throws {
        let f = try FileToolFixture()
        let parent = URL(fileURLWithPath: f.root).deletingLastPathComponent().path
        let name = "corral-escape-\(UUID().uuidString)"
        expectError(.pathOutsideProject(path: "../\(name)", reason: "`..` climbs above the project root")) {
            try f.tools.writeFile("../\(name)", content: "x")
        }
        #expect(!FileManager.default.fileExists(atPath: parent + "/" + name))
    }

    @Test func aNulByteIsOutsideTheProject() throws {
        let f = try FileToolFixture(files: ["a.txt": "root\n"])
        let before = f.snapshot()
        for path in ["a.txt\0/etc/passwd", "\0", "/workspace/a\0.txt"] {
            let codes = Self.everyTool(f.tools, path)
            #expect(Set(codes.values) == ["path_outside_project"], "\(codes)")
            #expect(
                errorOf { try f.tools.readFile(path) }
                    == .pathOutsideProject(path: path, reason: "the path contains a NUL byte"))
        }
        #expect(f.snapshot() == before)
    }

    @Test func aSymlinkToEtcResolvesInsideTheWorkspace() throws {
        let f = try FileToolFixture()
        try f.symlink("hostetc", to: "/etc")
        try f.symlink("up", to: "../../../../../../../etc")
        for path in ["hostetc/passwd", "hostetc/hostname", "up/passwd", "/workspace/hostetc/passwd"] {
            #expect(errorOf { try f.tools.readFile(path) }?.code == "not_found", "\(path)")
            #expect(errorOf { try f.tools.fileInfo(path) }?.code == "not_found", "\(path)")
        }
        #expect(errorOf { try f.tools.listDir("hostetc") }?.code == "not_found")
        #expect(errorOf { try f.tools.grep("root", path: "hostetc") }?.code == "not_found")
        #expect(errorOf { try f.tools.glob("*", path: "hostetc") }?.code == "not_found")
        // The workspace is `/` for the link: with a project etc/ of its own, that is read.
        try f.write("etc/passwd", "project passwd\n")
        #expect(try f.tools.readFile("hostetc/passwd").text == "     1\tproject passwd")
        #expect(try f.tools.readFile("up/passwd").text == "     1\tproject passwd")
    }

    @Test func aSymlinkNamedEtcPointingAtEtcIsALoop() throws {
        let f = try FileToolFixture()
        // Inside the root, `/etc` is this very link again.
        try f.symlink("etc", to: "/etc")
        let error = errorOf { try f.tools.readFile("etc/passwd") }
        #expect(
            error
                == .pathOutsideProject(
                    path: "etc/passwd", reason: "it goes through too many symbolic links or a /proc magic link"))
        #expect(errorOf { try f.tools.listDir("etc") }?.code == "path_outside_project")
    }

    @Test func aSymlinkToEtcPasswdNeverReturnsTheHostFile() throws {
        let f = try FileToolFixture()
        let host = try HostFile()
        try f.symlink("pw", to: "/etc/passwd")
        try f.symlink("secret", to: host.path)
        try f.symlink("rel", to: "../../../../../../../.." + host.path)
        expectError(
            .notFound(
                path: "pw", similar: [],
                detail: "`pw` is a symbolic link to `/etc/passwd`, which does not exist in the project "
                    + "(links resolve with the project as `/`)")
        ) { try f.tools.readFile("pw") }
        for path in ["pw", "secret", "rel"] {
            #expect(errorOf { try f.tools.readFile(path) }?.code == "not_found", "\(path)")
            let grep = try f.tools.grep("host secret|root:", path: ".")
            #expect(grep.matches.isEmpty)
        }
        // file_info describes the link itself and does not follow it.
        let info = try f.tools.fileInfo("pw")
        #expect(info.kind == .symlink)
        #expect(info.linkTarget == "/etc/passwd")
        #expect(info.lineCount == nil)
    }

    @Test func procMagicLinksAreRefused() throws {
        let f = try FileToolFixture()
        try f.symlink("self", to: "/proc/self/root")
        try f.symlink("fd", to: "/proc/self/fd")
        #expect(errorOf { try f.tools.readFile("self/etc/passwd") }?.code == "not_found")
        #expect(errorOf { try f.tools.readFile("fd/0") }?.code == "not_found")
        #expect(errorOf { try f.tools.readFile("/proc/self/root/etc/passwd") }?.code == "path_outside_project")
    }

    /// A real procfs inside the workspace (bind-mounted in a private mount namespace of one
    /// thread, so the host's mount table is untouched): its magic links must not be
    /// followed, nor its mount crossed.
    @Test func aProcMountInsideTheWorkspaceIsNotCrossed() throws {
        let f = try FileToolFixture()
        try f.mkdir("proc")
        let root = f.root
        let codes = withDeadline(seconds: 20) { () -> [String] in
            guard Namespaces.enterPrivateMountNamespace(), mount("/proc", root + "/proc", nil, UInt(MS_BIND), nil) == 0
            else { return ["setup failed: errno \(errno)"] }
            // Opened after the mount, from inside this namespace, so the tools see it.
            guard let tools = try? FileTools(root: root, owner: FileToolFixture.owner) else { return ["no tools"] }
            return ["proc/self/root/etc/passwd", "proc/self/cwd", "proc/1/root/etc/passwd", "proc/self/status"].map {
                path in codeOf { try tools.readFile(path) }
            }
        }
        #expect(codes == Array(repeating: "path_outside_project", count: 4))
    }

    @Test func aFifoNeverHangsARequest() throws {
        let f = try FileToolFixture(files: ["a.txt": "root\n"])
        #expect(mkfifo(f.root + "/pipe", 0o644) == 0)
        let tools = f.tools
        let codes = withDeadline(seconds: 10) { () -> [String: String] in
            Self.everyTool(tools, "pipe")
        }
        #expect(
            codes == [
                "read": "not_a_regular_file", "write": "not_a_regular_file", "edit": "not_a_regular_file",
                "insert": "not_a_regular_file", "info": "ok", "list": "invalid_argument", "glob": "invalid_argument",
                "grep": "not_a_regular_file",
            ])
        // Searching and listing a directory that holds a FIFO finishes too.
        let found = withDeadline(seconds: 10) { try? tools.grep("root").matches.count }
        #expect(found == 1)
        let info = try f.tools.fileInfo("pipe")
        #expect(info.kind == .fifo)
        #expect(try f.tools.listDir().entries.map(\.kind) == [.file, .fifo])
    }

    @Test func socketsAndDeviceNodesAreNotOpened() throws {
        let f = try FileToolFixture()
        // /dev/null (1:3, encoded as 0x0103): harmless if opened, but the tools must refuse first.
        #expect(mknod(f.root + "/null", S_IFCHR | 0o666, dev_t(0x0103)) == 0)
        let socketPath = f.root + "/sock"
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: Array(socketPath.utf8) + [0])
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        #expect(bound == 0)
        #expect(
            errorOf { try f.tools.readFile("null") }
                == .notARegularFile(path: "null", kind: "character device", detail: nil))
        #expect(errorOf { try f.tools.readFile("sock") } == .notARegularFile(path: "sock", kind: "socket", detail: nil))
        #expect(errorOf { try f.tools.writeFile("null", content: "x") }?.code == "not_a_regular_file")
        #expect(try f.tools.fileInfo("null").kind == .charDevice)
        #expect(try f.tools.fileInfo("sock").kind == .socket)
    }

    @Test func writingThroughAPlantedSymlinkLeavesTheHostFileAlone() throws {
        let f = try FileToolFixture()
        let host = try HostFile()
        let before = host.snapshot()
        try f.symlink("abs", to: host.path)
        try f.symlink("rel", to: "../../../../../../../.." + host.path)
        for path in ["abs", "rel"] {
            let error = errorOf { try f.tools.writeFile(path, content: "pwned") }
            #expect(error?.code == "not_a_regular_file")
            #expect(error?.message.contains("do not write through links") == true)
            #expect(
                errorOf { try f.tools.editFile(path, oldString: "host", newString: "pwned") }?.code
                    == "not_a_regular_file")
            #expect(errorOf { try f.tools.insert(path, line: 0, text: "pwned") }?.code == "not_a_regular_file")
            #expect(f.stat(path).map { $0.st_mode & S_IFMT } == S_IFLNK)
        }
        #expect(host.snapshot() == before)
        #expect(try String(contentsOfFile: host.path, encoding: .utf8) == host.content)
    }

    @Test func aPlantedSymlinkedParentDirectoryIsNotWrittenThrough() throws {
        let f = try FileToolFixture()
        let host = try HostFile()
        let before = host.snapshot()
        try f.symlink("evil", to: host.directory.path)
        try f.symlink("evilrel", to: "../../../../../../.." + host.directory.path)
        for path in ["evil/new.txt", "evil/sub/new.txt", "evilrel/new.txt"] {
            let error = errorOf { try f.tools.writeFile(path, content: "pwned") }
            #expect(
                error?.code == "path_outside_project" || error?.code == "not_found",
                "\(path): \(String(describing: error))")
        }
        #expect(errorOf { try f.tools.writeFile("evil/new.txt", content: "x") }?.code == "path_outside_project")
        #expect(
            errorOf { try f.tools.editFile("evil/secret.txt", oldString: "host", newString: "pwned") }?.code
                == "not_found")
        #expect(errorOf { try f.tools.readFile("evil/secret.txt") }?.code == "not_found")
        #expect(host.snapshot() == before)
        #expect(f.names() == ["evil", "evilrel"])
    }

    @Test func aHardLinkToAHostFileIsReplacedNotWrittenInto() throws {
        let f = try FileToolFixture()
        let host = try HostFile()
        let before = host.snapshot()
        #expect(link(host.path, f.root + "/hard") == 0)
        // A job cannot make such a link (no host path is visible to it); if one appears,
        // a write replaces the workspace's name and leaves the shared inode alone.
        _ = try f.tools.writeFile("hard", content: "new\n")
        #expect(f.contents("hard") == "new\n")
        #expect(try String(contentsOfFile: host.path, encoding: .utf8) == host.content)
        #expect(host.snapshot().nodes["secret.txt"]?.content == before.nodes["secret.txt"]?.content)
    }

    @Test func aSymlinkLoopIsAClearError() throws {
        let f = try FileToolFixture()
        try f.symlink("a", to: "b")
        try f.symlink("b", to: "a")
        #expect(errorOf { try f.tools.readFile("a") }?.code == "path_outside_project")
        #expect(errorOf { try f.tools.writeFile("a/x", content: "x") }?.code == "path_outside_project")
    }
}

/// Per-thread mount namespaces for tests (glibc hides `unshare` from Swift).
enum Namespaces {
    /// Moves the calling thread into a new mount namespace whose mounts do not propagate
    /// back to the host. Only for a thread that ends right after.
    static func enterPrivateMountNamespace() -> Bool {
        typealias Unshare = @convention(c) (Int32) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "unshare") else { return false }
        let unshare = unsafeBitCast(symbol, to: Unshare.self)
        let newNamespace: Int32 = 0x0002_0000  // CLONE_NEWNS
        guard unshare(newNamespace) == 0 else { return false }
        return mount(nil, "/", nil, UInt(MS_REC | MS_PRIVATE), nil) == 0
    }
}
