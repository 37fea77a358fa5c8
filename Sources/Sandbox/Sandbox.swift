import CShim

/// The Linux primitives Corral isolates jobs with.
public enum SandboxModule {
    /// The ABI version of the post-fork C shim this module was built against.
    public static var shimVersion: Int { Int(cor_shim_version()) }
}
