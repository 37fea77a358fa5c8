import CShim
import Glibc
import Testing

@testable import Sandbox

/// A child's `{stage, errno}` record as the host reports it: stage names come from C, where
/// the stages are defined, and the records that mean something of their own become their
/// own errors (never matched by a stage's name).
@Suite struct StageNameTests {
    static func record(_ stage: cor_stage, _ err: Int32) -> cor_status {
        cor_status(stage: Int32(stage.rawValue), err: err, value: 0)
    }

    @Test func everyFailureStageHasAName() {
        for stage in Array(2...17) + Array(20...39) {
            #expect(cor_stage_name(Int32(stage)) != nil, "stage \(stage)")
        }
        #expect(SandboxError.stageName(Int32(COR_STAGE_SETNS.rawValue)) == "setns")
        #expect(SandboxError.stageName(Int32(COR_STAGE_PROC.rawValue)) == "mount(proc)")
        #expect(SandboxError.stageName(18) == "stage 18")
    }

    @Test func recordsBecomeTypedErrors() {
        #expect(SandboxError.child(Self.record(COR_STAGE_SETNS, ESRCH)) == .sandboxGone(""))
        #expect(SandboxError.child(Self.record(COR_STAGE_SETNS, EPERM)) == .childFailed(stage: "setns", errno: EPERM))
        #expect(SandboxError.child(Self.record(COR_STAGE_FORK, ENOMEM)) == .memoryFullWhileStarting)
        #expect(SandboxError.child(Self.record(COR_STAGE_CWD_OUTSIDE, EXDEV), cwd: "/x") == .cwdOutsideWorkspace("/x"))
        #expect(SandboxError.child(Self.record(COR_STAGE_EXEC, ENOENT)).description == "execve: ENOENT")
    }

    @Test func jobsJoinEveryNamespaceTheInitHas() {
        // user, mnt, pid, net, uts, ipc, cgroup: the kernel's CLONE_NEW* bits.
        #expect(
            Spawner.namespaces == 0x1000_0000 | 0x0002_0000 | 0x2000_0000 | 0x4000_0000 | 0x0400_0000 | 0x0800_0000
                | 0x0200_0000)
    }
}
