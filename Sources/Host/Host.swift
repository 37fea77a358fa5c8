import Sandbox

/// Project cache, jobs, policies and file tools: everything but HTTP.
public enum HostModule {
    /// The version of Corral, reported by `corral --version` and `GET /status`.
    public static let version = "0.1.0"
}
