import Foundation

/// Paths of this checkout that tests use.
public enum TestPaths {
    /// The repository root (three levels above this file).
    public static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// Built rootfs images: `CORRAL_ROOTFS_DIR`, or rootfs/out of this checkout (`make test`
    /// builds the minimal image there).
    public static var rootfsDirectory: String {
        ProcessInfo.processInfo.environment["CORRAL_ROOTFS_DIR"]
            ?? repository.appendingPathComponent("rootfs/out").path
    }

    /// The minimal image most tests run on.
    public static var minimalRootfs: String { rootfsDirectory + "/minimal" }
}
