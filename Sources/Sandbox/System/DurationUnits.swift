import Foundation
import Glibc

/// The one place a `Duration` becomes the units C and Foundation take. Every conversion
/// saturates instead of trapping (a `Duration` can hold more than an `Int64` of
/// nanoseconds), and the ones used as time-outs round up, so a 500 ms limit never becomes 0,
/// which most C calls read as "no limit".
extension Duration {
    /// Whole milliseconds, rounded toward zero; saturating.
    public var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds.multipliedClamped(by: 1000).addingClamped(attoseconds / 1_000_000_000_000_000)
    }

    /// Milliseconds rounded up: a positive time-out stays positive.
    public var millisecondsRoundedUp: Int64 {
        components.attoseconds % 1_000_000_000_000_000 > 0 ? milliseconds.addingClamped(1) : milliseconds
    }

    /// Whole nanoseconds, rounded toward zero; saturating.
    public var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds.multipliedClamped(by: 1_000_000_000).addingClamped(attoseconds / 1_000_000_000)
    }

    /// Seconds as a `TimeInterval`.
    public var timeInterval: TimeInterval {
        let (seconds, attoseconds) = components
        return TimeInterval(seconds) + TimeInterval(attoseconds) / 1e18
    }

    /// As a `timeval` (microseconds rounded up, so a short time-out is not 0).
    public var timeval: Glibc.timeval {
        let micros = max(0, (self + .nanoseconds(999)).nanoseconds / 1000)
        return Glibc.timeval(tv_sec: Int(micros / 1_000_000), tv_usec: Int(micros % 1_000_000))
    }

    /// Whole seconds rounded up, at least 1: for protocols that count time-outs in seconds.
    public var secondsRoundedUp: Int64 {
        let (seconds, attoseconds) = components
        return max(1, attoseconds > 0 ? seconds.addingClamped(1) : seconds)
    }
}

extension Int64 {
    fileprivate func multipliedClamped(by factor: Int64) -> Int64 {
        let (product, overflow) = multipliedReportingOverflow(by: factor)
        return overflow ? (self < 0 ? .min : .max) : product
    }

    fileprivate func addingClamped(_ other: Int64) -> Int64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? (other < 0 ? .min : .max) : sum
    }
}
