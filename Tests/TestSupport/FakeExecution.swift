import Host
import Sandbox
import Synchronization

/// A job execution a test ends by hand (``end(exitCode:status:)``), for runners of fake jobs in
/// the job system's and the cluster's tests.
public final class FakeExecution: JobExecution, @unchecked Sendable {
    public let onOutput: @Sendable (Sandbox.OutputStream, [UInt8]) -> Void
    private let state = Mutex<(JobResult?, [CheckedContinuation<JobResult, Never>])>((nil, []))

    public init(onOutput: @escaping @Sendable (Sandbox.OutputStream, [UInt8]) -> Void) { self.onOutput = onOutput }

    public func end(exitCode: Int32, status: JobResult.Status) {
        let result = JobResult(
            status: status, exitCode: exitCode, signal: nil, timedOut: false, oomKilled: false, durationMs: 1,
            cpuMs: 0, peakMemoryBytes: 0, stdout: "", stderr: "", truncated: false, omittedBytes: 0, logPath: nil)
        let waiters = state.withLock { s in
            s.0 = s.0 ?? result
            defer { s.1 = [] }
            return s.1
        }
        for w in waiters { w.resume(returning: result) }
    }

    public func wait() async -> JobResult {
        await withCheckedContinuation { c in
            let done = state.withLock { s -> JobResult? in
                if let r = s.0 { return r }
                s.1.append(c)
                return nil
            }
            if let done { c.resume(returning: done) }
        }
    }

    public func cancel() async -> JobResult {
        end(exitCode: 143, status: .cancelled)
        return await wait()
    }
}
