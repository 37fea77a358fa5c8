import Host
import Hummingbird

/// The HTTP surface of Corral.
public enum APIModule {
    /// The address `corral serve` binds by default: loopback, so nothing is exposed unasked.
    public static let defaultBind = "127.0.0.1:8080"
}
