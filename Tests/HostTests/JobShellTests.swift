import Foundation
import Sandbox
import TestSupport
import Testing

@testable import Host

/// The job's shell, its working directory and its leftover processes: old records (a
/// journal, a cluster queue written before these fields) still decode and mean what they
/// meant, and bash is chosen only where the image has it.
@Suite struct JobShellTests {
    /// A finished record as a host wrote it before jobs had a shell or counted leftovers.
    static let oldRecord = """
        {"id":"j1","lane":"short","state":"completed","createdAt":700000000,
         "request":{"project":"demo","command":"echo hi","cwd":"/workspace","environment":{},
                    "timeoutSeconds":120,"background":false,"submitter":"local"},
         "result":{"status":"completed","exit_code":0,"timed_out":false,"oom_killed":false,"duration_ms":3,
                   "cpu_ms":1,"peak_memory_bytes":1024,"stdout":"hi\\n","stderr":"","truncated":false,
                   "omitted_bytes":0}}
        """

    @Test func recordsWrittenBeforeShellsAndLeftoversDecodeAsSh() throws {
        let record = try JSONDecoder().decode(JobRecord.self, from: Data(Self.oldRecord.utf8))
        #expect(record.request.shell == .sh)
        #expect(record.request.command == "echo hi")
        #expect(record.result?.leftoverProcesses == nil)
        #expect(record.result?.stdout == "hi\n")
    }

    @Test func newRecordsRoundTripWithTheirShellAndLeftovers() throws {
        var record = try JSONDecoder().decode(JobRecord.self, from: Data(Self.oldRecord.utf8))
        record.request.shell = .bash
        record.result?.leftoverProcesses = 2
        let encoded = try JSONEncoder().encode(record)
        let text = String(decoding: encoded, as: UTF8.self)
        #expect(text.contains("\"shell\":\"bash\""))
        #expect(text.contains("\"leftover_processes\":2"))
        #expect(try JSONDecoder().decode(JobRecord.self, from: encoded) == record)
    }

    @Test func aRelativeWorkingDirectoryIsUnderTheWorkspace() {
        #expect(JobRequest.workingDirectory("/workspace/src") == "/workspace/src")
        #expect(JobRequest.workingDirectory("/tmp") == "/tmp")
        #expect(JobRequest.workingDirectory("sub") == "/workspace/sub")
        #expect(JobRequest.workingDirectory("./sub//deeper/") == "/workspace/sub/deeper")
        #expect(JobRequest.workingDirectory("") == "/workspace")
        #expect(JobRequest.workingDirectory(".") == "/workspace")
        // Left for the spawn to refuse on the resolved path, and named as given.
        #expect(JobRequest.workingDirectory("../..") == "/workspace/../..")
    }

    /// An image is looked at from the host: `bin -> usr/bin` is the image's own bash, an
    /// absolute `bin/bash -> /bin/bash` would be the host's and does not count.
    @Test func bashIsChosenOnlyWhereTheImageHasAnExecutableBash() throws {
        let images = try TemporaryDirectory()
        func image(_ name: String, _ build: (String) throws -> Void) throws -> String {
            let root = images.path + "/" + name
            try FileManager.default.createDirectory(atPath: root + "/usr/bin", withIntermediateDirectories: true)
            try build(root)
            return root
        }
        func executable(_ path: String, mode: Int = 0o755) throws {
            try "#!/bin/sh\n".write(toFile: path, atomically: true, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
        }
        let merged = try image("merged") { root in
            try executable(root + "/usr/bin/bash")
            try FileManager.default.createSymbolicLink(atPath: root + "/bin", withDestinationPath: "usr/bin")
        }
        let usrOnly = try image("usr-only") { try executable($0 + "/usr/bin/bash") }
        let busybox = try image("busybox") {
            try FileManager.default.createDirectory(atPath: $0 + "/bin", withIntermediateDirectories: true)
        }
        let hostLink = try image("host-link") { root in
            try FileManager.default.createDirectory(atPath: root + "/bin", withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(atPath: root + "/bin/bash", withDestinationPath: "/bin/bash")
        }
        let notExecutable = try image("not-executable") { try executable($0 + "/usr/bin/bash", mode: 0o644) }
        let directory = try image("directory") {
            try FileManager.default.createDirectory(atPath: $0 + "/usr/bin/bash", withIntermediateDirectories: true)
        }
        #expect(JobShell.bash.program(rootfs: merged) == "/bin/bash")
        #expect(JobShell.bash.program(rootfs: usrOnly) == "/usr/bin/bash")
        #expect(JobShell.bash.program(rootfs: busybox) == "/bin/sh")
        #expect(JobShell.bash.program(rootfs: hostLink) == "/bin/sh")
        #expect(JobShell.bash.program(rootfs: notExecutable) == "/bin/sh")
        #expect(JobShell.bash.program(rootfs: directory) == "/bin/sh")
        #expect(JobShell.sh.program(rootfs: merged) == "/bin/sh")
    }
}
