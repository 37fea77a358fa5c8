import CShim
import Glibc
import Sandbox

/// Runs one system call in a forked child that loaded `program` (or nothing), and reports
/// what the kernel answered.
enum Probe {
    static func run(
        _ program: SeccompProgram?, _ name: String, _ args: [Int] = [], abi: cor_probe_abi = COR_PROBE_NATIVE
    ) throws -> cor_probe_result {
        guard let number = SeccompNames.syscallNumber(name), number >= 0 else { throw ProbeError.unknown(name) }
        return try run(program, number: Int(number), args, abi: abi)
    }

    static func run(
        _ program: SeccompProgram?, number: Int, _ args: [Int] = [], abi: cor_probe_abi = COR_PROBE_NATIVE
    ) throws -> cor_probe_result {
        let padded = args + Array(repeating: 0, count: 6 - args.count)
        var result = cor_probe_result()
        let rc: Int32 =
            if let program {
                program.withUnsafeFilter { cor_probe_filter6($0, Int32(abi.rawValue), number, padded, &result) }
            } else {
                cor_probe_filter6(nil, Int32(abi.rawValue), number, padded, &result)
            }
        if rc != 0 { throw ProbeError.failed(Glibc.errno) }
        return result
    }

    /// The errno the call got (0 for success); a probe child killed by a signal fails.
    static func errno(_ program: SeccompProgram?, _ name: String, _ args: [Int] = []) throws -> Int32 {
        let result = try run(program, name, args)
        if result.signal != 0 { throw ProbeError.killed(result.signal) }
        return result.err
    }

    /// Whether this kernel runs i386 code through `int $0x80` at all (ia32 emulation).
    static let hasIA32: Bool = {
        guard let result = try? run(nil, number: 20, abi: COR_PROBE_INT80) else { return false }  // i386 getpid
        return result.signal == 0 && result.err == 0 && result.value > 0
    }()
}

enum ProbeError: Error {
    case unknown(String)
    case failed(Int32)
    case killed(Int32)
}

/// A classic-BPF interpreter for seccomp programs, so a test can ask what a filter decides
/// for inputs the kernel here cannot produce (another ABI, a disabled x32) or that would be
/// unsafe to try for real.
struct BPFMachine {
    let program: [sock_filter]

    static let x86_64: UInt32 = 0xC000_003E
    static let i386: UInt32 = 0x4000_0003

    /// The filter's return value for one call: `0x7fff0000` allow, `0x0005xxxx` errno xxxx.
    func run(nr: Int32, arch: UInt32 = x86_64, args: [UInt64] = []) -> UInt32? {
        let padded = args + Array(repeating: 0, count: 6 - args.count)
        func word(_ offset: UInt32) -> UInt32 {
            if offset == 0 { return UInt32(bitPattern: nr) }
            if offset == 4 { return arch }
            if offset < 16 { return 0 }  // instruction pointer
            let index = Int(offset - 16) / 8
            return offset % 8 == 0 ? UInt32(truncatingIfNeeded: padded[index]) : UInt32(padded[index] >> 32)
        }
        var a: UInt32 = 0
        var x: UInt32 = 0
        var scratch = [UInt32](repeating: 0, count: 16)
        var pc = 0
        while pc < program.count {
            let ins = program[pc]
            pc += 1
            let k = ins.k
            let operand = ins.code & 0x08 == 0 ? k : x
            switch ins.code & 0x07 {
            case 0x00:  // LD
                switch ins.code & 0xe0 {
                case 0x20: a = word(k)
                case 0x00: a = k
                case 0x60: a = scratch[Int(k)]
                default: return nil
                }
            case 0x01: x = ins.code & 0xe0 == 0x60 ? scratch[Int(k)] : k  // LDX
            case 0x02: scratch[Int(k)] = a  // ST
            case 0x03: scratch[Int(k)] = x  // STX
            case 0x04:  // ALU
                switch ins.code & 0xf0 {
                case 0x00: a = a &+ operand
                case 0x10: a = a &- operand
                case 0x40: a |= operand
                case 0x50: a &= operand
                case 0x60: a <<= operand
                case 0x70: a >>= operand
                case 0xa0: a ^= operand
                default: return nil
                }
            case 0x05:  // JMP
                let taken: Bool
                switch ins.code & 0xf0 {
                case 0x00:
                    pc += Int(k)
                    continue
                case 0x10: taken = a == operand
                case 0x20: taken = a > operand
                case 0x30: taken = a >= operand
                case 0x40: taken = a & operand != 0
                default: return nil
                }
                pc += Int(taken ? ins.jt : ins.jf)
            case 0x06: return ins.code & 0x18 == 0x10 ? a : k  // RET
            case 0x07: if ins.code & 0xf8 == 0 { x = a } else { a = x }  // TAX / TXA
            default: return nil
            }
        }
        return nil
    }

    static let allow: UInt32 = 0x7fff_0000
    static func errno(_ value: Int32) -> UInt32 { 0x0005_0000 | UInt32(value) }
}
