//! Per-call settings the SDKs send as headers: `Connect-Timeout-Ms` (where `0` means no
//! limit, as E2B's envd reads it) and `Keepalive-Ping-Interval` (seconds).

use std::time::Duration;

use connectrpc::RequestContext;
use tokio::time::Instant;

/// The call's timeout; `None` without the header or with `0`.
#[must_use]
pub fn timeout(ctx: &RequestContext) -> Option<Duration> {
    let millis: u64 = ctx
        .header("connect-timeout-ms")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (millis > 0).then(|| Duration::from_millis(millis))
}

/// When the call's timeout runs out, measured from now.
#[must_use]
pub fn deadline(ctx: &RequestContext) -> Option<Instant> {
    timeout(ctx).map(|timeout| Instant::now() + timeout)
}

/// The keepalive interval the client asked for, else `default`.
#[must_use]
pub fn keepalive(ctx: &RequestContext, default: Duration) -> Duration {
    ctx.header("keepalive-ping-interval")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .filter(|seconds| *seconds > 0)
        .map_or(default, Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(headers: &[(&'static str, &'static str)]) -> RequestContext {
        let mut map = axum::http::HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, axum::http::HeaderValue::from_static(value));
        }
        RequestContext::new(map)
    }

    #[test]
    fn test_zero_or_missing_timeout_means_no_limit() {
        assert_eq!(timeout(&ctx(&[])), None);
        assert_eq!(timeout(&ctx(&[("connect-timeout-ms", "0")])), None);
        assert_eq!(
            timeout(&ctx(&[("connect-timeout-ms", "1500")])),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn test_keepalive_falls_back_to_the_default() {
        let default = Duration::from_secs(90);
        assert_eq!(keepalive(&ctx(&[]), default), default);
        assert_eq!(
            keepalive(&ctx(&[("keepalive-ping-interval", "50")]), default),
            Duration::from_secs(50)
        );
        assert_eq!(
            keepalive(&ctx(&[("keepalive-ping-interval", "x")]), default),
            default
        );
    }
}
