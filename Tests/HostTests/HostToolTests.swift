import Foundation
import Synchronization
import Testing

@testable import Host

/// The host's own tools (mkfs) run with posix_spawn: a failure names the status and the
/// tool's standard error, and running them leaves no descriptor behind on the calling thread
/// (Foundation's Process left a run loop's epoll, eventfd and timerfd on each pool thread).
struct HostToolTests {
    @Test func aFailingToolReportsItsStatusAndStandardError() throws {
        do {
            try HostTool.run("mkfs.ext4", ["-q", "/nonexistent-corral-dir/image"])
            Issue.record("mkfs.ext4 of a missing path succeeded")
        } catch {
            guard case .volume(let message) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(
                message.hasPrefix("mkfs.ext4 -q /nonexistent-corral-dir/image failed with status 1: "), "\(message)")
            #expect(message.contains("/nonexistent-corral-dir/image"))
        }
    }

    @Test func aMissingToolIsNamed() {
        #expect(
            throws: CacheError.volume(
                "no-such-tool-corral is not installed (looked in /usr/sbin, /sbin, /usr/bin, /bin)")
        ) {
            try HostTool.run("no-such-tool-corral", [])
        }
    }

    @Test func runningToolsLeavesNoDescriptorOnTheThread() throws {
        let image = NSTemporaryDirectory() + "/corral-hosttool-\(UUID().uuidString).img"
        defer { unlink(image) }
        #expect(FileManager.default.createFile(atPath: image, contents: Data(count: 4 << 20)))
        let before = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count
        // The tool runs on a thread that stays alive while the descriptors are counted, as a
        // pool thread does.
        let ran = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let failure = Mutex<String?>(nil)
        let thread = Thread {
            do { try HostTool.run("mkfs.ext4", ["-q", "-F", image]) } catch { failure.withLock { $0 = "\(error)" } }
            ran.signal()
            release.wait()
        }
        thread.start()
        ran.wait()
        let during = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count
        release.signal()
        #expect(failure.withLock { $0 } == nil)
        #expect(during == before)
    }
}
