import Foundation
import Sandbox
import Synchronization

/// Token buckets, one per principal. Keys are token names, so the table is as small as the
/// tokens file and never grows with traffic.
final class RateLimiter: Sendable {
    struct Decision: Equatable {
        var allowed: Bool
        var limit: Int
        var remaining: Int
        /// Seconds until the bucket is full again.
        var resetSeconds: Int
        /// Seconds until one request is allowed again (when refused).
        var retryAfter: Int
    }

    private struct Bucket {
        var tokens: Double
        var updated: ContinuousClock.Instant
    }

    private let buckets = Mutex<[String: Bucket]>([:])

    func take(_ key: String, limit: RateLimit, now: ContinuousClock.Instant = .now) -> Decision? {
        guard limit.perSecond > 0, limit.burst > 0 else { return nil }
        let capacity = Double(limit.burst)
        return buckets.withLock { buckets in
            var bucket = buckets[key] ?? Bucket(tokens: capacity, updated: now)
            let elapsed = now - bucket.updated
            bucket.tokens = min(capacity, bucket.tokens + elapsed.timeInterval * limit.perSecond)
            bucket.updated = now
            let allowed = bucket.tokens >= 1
            if allowed { bucket.tokens -= 1 }
            buckets[key] = bucket
            let reset = Int(((capacity - bucket.tokens) / limit.perSecond).rounded(.up))
            let retry = allowed ? 0 : max(1, Int(((1 - bucket.tokens) / limit.perSecond).rounded(.up)))
            return Decision(
                allowed: allowed, limit: limit.burst, remaining: Int(bucket.tokens.rounded(.down)), resetSeconds: reset,
                retryAfter: retry)
        }
    }
}
