import Foundation
import Sandbox
import Testing

@testable import Host

/// The window one answer holds of a stream, and the channel's window of the interleaved
/// output: cut where a model can read them, and every byte left out counted.
@Suite struct OutputWindowUnitTests {
    @Test func aStreamWithinTheWindowIsKeptAsItIs() {
        let text = String(repeating: "x", count: 1000)
        #expect(OutputWindow.clip(text, omitted: 0, logPath: nil, limit: 1000) == (text, 0))
        // A marker the cap already put in does not count against the window.
        let capped = "ab" + OutputCapture.marker(omitted: 7, logPath: "/workspace/l.log") + "cd"
        #expect(OutputWindow.clip(capped, omitted: 7, logPath: "/workspace/l.log", limit: 8) == (capped, 7))
    }

    @Test func aLongStreamKeepsItsFirstAndLastHalvesAndCountsTheRest() {
        let text = (0..<1000).map { "line \($0)\n" }.joined()
        let (clipped, left) = OutputWindow.clip(text, omitted: 0, logPath: "/workspace/x.log", limit: 1000)
        let bytes = Array(text.utf8)
        #expect(left == bytes.count - 1000)
        #expect(
            clipped
                == String(decoding: bytes[..<500], as: UTF8.self)
                + "\n[... \(bytes.count - 1000) bytes omitted (full output in /workspace/x.log) ...]\n"
                + String(decoding: bytes[(bytes.count - 500)...], as: UTF8.self))
    }

    /// A stream the policy's cap already cut (its head, a marker, its tail): the window's
    /// cut drops that marker with the middle and counts both cuts as one.
    @Test func aStreamTheCapCutIsCutAgainWithOneCount() {
        let head = String(repeating: "h", count: 2000)
        let tail = String(repeating: "t", count: 2000)
        let capped = head + OutputCapture.marker(omitted: 50_000, logPath: nil) + tail
        let (clipped, left) = OutputWindow.clip(capped, omitted: 50_000, logPath: nil, limit: 1000)
        #expect(left == 50_000 + 3000)
        #expect(
            clipped == String(repeating: "h", count: 500) + "\n[... 53000 bytes omitted ...]\n"
                + String(repeating: "t", count: 500))
    }

    @Test func cutsFallOnCharacterBoundaries() {
        // "é" is two bytes: a cut at an odd byte would split one.
        let text = "a" + String(repeating: "é", count: 2000)
        let (clipped, left) = OutputWindow.clip(text, omitted: 0, logPath: nil, limit: 1001)
        #expect(!clipped.contains("\u{FFFD}"))
        let kept = Array(clipped.utf8).count - "\n[... \(left) bytes omitted ...]\n".utf8.count
        #expect(kept + left == text.utf8.count)
        #expect(clipped.hasPrefix("a" + String(repeating: "é", count: 249) + "\n[..."))
    }

    @Test func theNotesSayHowManyBytesOnWhichSideAndHowToReadThem() {
        #expect(
            OutputWindow.note(shown: 100, skipped: 900, total: 1000, follow: false, source: .log("/workspace/l.log"))
                == "900 bytes of output before this point are left out; this shows the last 100 of 1000 bytes. All of it is in /workspace/l.log: read it with read_file (offset and limit count lines) or search it with grep; `head -c 900 /workspace/l.log | tail -n 50` prints the 50 lines before this."
        )
        #expect(
            OutputWindow.note(shown: 100, skipped: 900, total: 1000, follow: true, source: .writing(nil))
                == "900 bytes of output after this point are left out; this shows 100 of 1000 bytes. The job is writing all of it to its log in /workspace/.corral/logs (log_path names it once the job ends): read it there with read_file (offset and limit count lines) or search it with grep."
        )
        #expect(
            OutputWindow.fieldsNote(stdout: 5, stderr: 6, source: .nowhere)
                == "`stdout` and `stderr` leave out 5 and 6 bytes from the middle of their streams (each field holds at most the first and last 512 KiB of its stream, or less under a smaller output cap of the project's policy). The host did not keep them: to read a long output whole, run the command again with its output sent to a file in the workspace (command > /workspace/out.log 2>&1) and read that with read_file or grep."
        )
        #expect(OutputWindow.fieldsNote(stdout: 0, stderr: 0, source: .nowhere) == nil)
    }

    /// Once output was dropped, a read from before it starts at the first whole line kept,
    /// and the bytes of the cut line count as skipped; a drop that ended a line cuts none.
    @Test func theChannelStartsAWindowAtAWholeLine() {
        let channel = JobChannel(capacity: 10)
        channel.append(Array("012345\n789\nabc\n".utf8))
        // Kept: "5\n789\nabc\n", the "5" the end of a cut line.
        let (text, cursor, skipped) = channel.read(since: 0)
        #expect(text == "789\nabc\n")
        #expect(cursor == 15)
        #expect(skipped == 7)
        #expect(channel.read(since: 12) == ("bc\n", 15, 0))

        let whole = JobChannel(capacity: 10)
        whole.append(Array("0123\n5678\nabcd\n".utf8.prefix(5)))
        whole.append(Array("5678\nabcd\n".utf8))
        #expect(whole.read(since: 0) == ("5678\nabcd\n", 15, 5))
    }
}
