import Glibc

/// A job's whole output, stdout and stderr interleaved as read, in a file in the workspace
/// once it passes a threshold: an answer holds at most a window of the output, and what
/// falls out of that window must still be somewhere a model can read it.
///
/// Below the threshold no file is made (the answer holds everything), and the bytes wait
/// in memory, so the file starts with the first byte when it is made. Not thread-safe: the
/// job's state lock guards it.
final class OutputLog {
    private let threshold: Int
    private let open: () -> Int32?
    private var pending: [UInt8] = []
    private var fd: Int32 = -1
    /// The file was made.
    private var made = false
    /// The file could not be made, or a write to it failed (the workspace is full): it
    /// does not hold the whole output.
    private var broken = false

    /// `open` makes the file (``LogFile/create(workspace:relativePath:uid:gid:)``) once
    /// the output passes `threshold` bytes; it returns nil when the file cannot be made.
    init(threshold: Int, open: @escaping () -> Int32?) {
        self.threshold = max(threshold, 0)
        self.open = open
    }

    func append(_ bytes: UnsafeRawBufferPointer) {
        if bytes.isEmpty || broken { return }
        if made {
            write(bytes)
            return
        }
        pending += bytes
        guard pending.count > threshold else { return }
        let held = pending
        pending = []
        guard let opened = open() else {
            broken = true
            return
        }
        fd = opened
        made = true
        held.withUnsafeBytes { write($0) }
    }

    /// Whether the file was made and holds every byte the job printed.
    var isWhole: Bool { made && !broken }

    /// Closes the file: the job has printed its last byte.
    func finish() {
        pending = []
        closeFile()
    }

    private func write(_ bytes: UnsafeRawBufferPointer) {
        guard fd >= 0, let base = bytes.baseAddress else { return }
        var offset = 0
        while offset < bytes.count {
            let n = retryingInterrupted { Glibc.write(fd, base + offset, bytes.count - offset) }
            if n <= 0 {
                // ENOSPC or EDQUOT: the log counts against the workspace's cap. What is
                // written stays, but the file no longer holds the whole output.
                broken = true
                closeFile()
                return
            }
            offset += n
        }
    }

    private func closeFile() {
        if fd >= 0 {
            close(fd)
            fd = -1
        }
    }
}
