import CSeccomp
import CShim
import Foundation
import Testing

/// libseccomp compiles a filter to BPF in this process, and a forked child that loads it
/// gets exactly the errno the filter names, while other syscalls still work.
@Suite struct SeccompBindingTests {
    /// Compiles `ctx` to classic BPF through a pipe (libseccomp 2.5 exports to an fd only).
    func exportBPF(_ ctx: scmp_filter_ctx) throws -> [sock_filter] {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        defer { close(fds[0]) }
        let rc = seccomp_export_bpf(ctx, fds[1])
        close(fds[1])
        #expect(rc == 0)
        var bytes = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fds[0], &chunk, chunk.count)
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        let count = bytes.count / MemoryLayout<sock_filter>.size
        #expect(count > 0 && bytes.count % MemoryLayout<sock_filter>.size == 0)
        return bytes.withUnsafeBytes { Array($0.bindMemory(to: sock_filter.self).prefix(count)) }
    }

    func probe(_ program: [sock_filter], _ nr: Int, _ arg0: Int = 0) throws -> Int32 {
        var program = program
        return try program.withUnsafeMutableBufferPointer { buffer in
            var prog = sock_fprog(len: UInt16(buffer.count), filter: buffer.baseAddress)
            var err: Int32 = -1
            let rc = cor_probe_filter(&prog, nr, arg0, &err)
            if rc != 0 { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
            return err
        }
    }

    @Test func blockedSyscallGetsEPERMAndOthersPass() throws {
        let ctx = try #require(seccomp_init(SCMP_ACT_ALLOW))
        defer { seccomp_release(ctx) }
        let nr = seccomp_syscall_resolve_name("getpriority")
        #expect(nr == 140)  // x86_64 getpriority
        #expect(seccomp_rule_add_array(ctx, cor_scmp_act_errno(UInt16(EPERM)), nr, 0, nil) == 0)
        let program = try exportBPF(ctx)

        #expect(try probe(program, Int(nr)) == EPERM)
        #expect(try probe(program, Int(seccomp_syscall_resolve_name("getppid"))) == 0)
    }

    @Test func unknownSyscallNameIsRejected() {
        #expect(seccomp_syscall_resolve_name("no_such_syscall") == __NR_SCMP_ERROR)
    }
}
