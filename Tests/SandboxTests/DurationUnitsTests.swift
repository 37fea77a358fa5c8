import Foundation
import Sandbox
import Testing

/// The one conversion of `Duration` into C's units: time-outs round up (a 500 ms limit once
/// became "no limit" when truncated to whole seconds), and nothing traps on a huge value.
@Suite struct DurationUnitsTests {
    @Test func timeOutsRoundUpSoAShortLimitStaysALimit() {
        #expect(Duration.milliseconds(500).millisecondsRoundedUp == 500)
        #expect(Duration.microseconds(1).millisecondsRoundedUp == 1)
        #expect(Duration.nanoseconds(1_000_001).millisecondsRoundedUp == 2)
        #expect(Duration.zero.millisecondsRoundedUp == 0)
        #expect(Duration.milliseconds(1500).secondsRoundedUp == 2)
        #expect(Duration.milliseconds(1).secondsRoundedUp == 1)
        #expect(Duration.zero.secondsRoundedUp == 1)
        let t = Duration.nanoseconds(1_500_000_001).timeval
        #expect(t.tv_sec == 1 && t.tv_usec == 500_001)
        let short = Duration.nanoseconds(1).timeval
        #expect(short.tv_sec == 0 && short.tv_usec == 1)
    }

    @Test func plainConversionsTruncateAndHugeValuesSaturate() {
        #expect(Duration.milliseconds(1999).milliseconds == 1999)
        #expect(Duration.nanoseconds(1_999_999).milliseconds == 1)
        #expect(Duration.seconds(3).nanoseconds == 3_000_000_000)
        #expect(Duration.milliseconds(250).timeInterval == 0.25)
        let huge = Duration.seconds(Int64.max)
        #expect(huge.nanoseconds == .max)
        #expect(huge.milliseconds == .max)
        #expect(huge.millisecondsRoundedUp == .max)
        #expect((Duration.zero - huge).nanoseconds == .min)
    }
}
