//! Scheduled rules: `rate(N unit)` and EventBridge's 6-field `cron(...)`, fired once per
//! period, surviving restarts.
//!
//! - `rate(N minute|minutes|hour|hours|day|days)`: N >= 1, singular unit exactly when N = 1 (as
//!   AWS). Periods are counted from the rule's creation: firing k is at `created + k * period`.
//! - `cron(minutes hours day-of-month month day-of-week year)`, UTC: one of day-of-month and
//!   day-of-week must be `?`; day-of-week 1-7 is SUN-SAT or `SUN`..`SAT`; `L`, `W` and `#` as
//!   AWS. The first five fields are evaluated by `croner` (Quartz weekday numbering); the year
//!   field (`*`, years, ranges `a-b`, lists) is checked here.
//! - The last scheduled time fired is kept in `events.sched` (key = rule ARN, a
//!   [`crate::model::SchedRecord`]), written in the same batch as the firing's deliveries with an
//!   `Expect` on its previous version, so a firing is neither lost nor doubled by a crash or by
//!   two schedulers. After downtime that spans several periods, the rule fires once (for the
//!   latest missed time), not once per missed period.
//! - The event is `{"source":"aws.events","detail-type":"Scheduled Event","resources":[rule
//!   ARN],"detail":{}}` with `time` = the scheduled time.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sluice_core::AwsError;
use sluice_store::{Batch, StoreError};
use tokio::sync::watch;

use crate::model::{NS_SCHED, RuleRecord, SchedRecord};
use crate::{Core, internal};

/// A parsed schedule expression.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A fixed period, ms.
    Rate(i64),
    /// A cron expression and its allowed years (`None` = any).
    Cron(Box<croner::Cron>, Option<Vec<(i32, i32)>>),
}

fn invalid(expr: &str, why: &str) -> AwsError {
    AwsError::validation(format!(
        "Parameter ScheduleExpression is not valid: {expr:?} ({why})."
    ))
}

/// Parses a schedule expression as PutRule does.
pub fn parse(expr: &str) -> Result<Schedule, AwsError> {
    let e = expr.trim();
    if let Some(inner) = e.strip_prefix("rate(").and_then(|s| s.strip_suffix(')')) {
        let mut it = inner.split_whitespace();
        let (Some(n), Some(unit), None) = (it.next(), it.next(), it.next()) else {
            return Err(invalid(expr, "expected rate(value unit)"));
        };
        let n: i64 = n
            .parse()
            .ok()
            .filter(|n| *n >= 1 && *n <= 1_000_000)
            .ok_or_else(|| invalid(expr, "the value must be a positive whole number"))?;
        let (ms, singular) = match unit {
            "minute" => (60_000, true),
            "minutes" => (60_000, false),
            "hour" => (3_600_000, true),
            "hours" => (3_600_000, false),
            "day" => (86_400_000, true),
            "days" => (86_400_000, false),
            _ => {
                return Err(invalid(
                    expr,
                    "the unit must be minute(s), hour(s) or day(s)",
                ));
            }
        };
        if singular != (n == 1) {
            return Err(invalid(
                expr,
                "use the singular unit for 1 and the plural for other values",
            ));
        }
        return Ok(Schedule::Rate(n * ms));
    }
    if let Some(inner) = e.strip_prefix("cron(").and_then(|s| s.strip_suffix(')')) {
        let f: Vec<&str> = inner.split_whitespace().collect();
        if f.len() != 6 {
            return Err(invalid(expr, "cron expressions have six fields"));
        }
        if (f[2] == "?") == (f[4] == "?") {
            return Err(invalid(
                expr,
                "exactly one of day-of-month and day-of-week must be ?",
            ));
        }
        let years = parse_years(f[5]).ok_or_else(|| invalid(expr, "invalid year field"))?;
        let five = f[..5].join(" ");
        let cron = croner::Cron::new(&five)
            .with_alternative_weekdays()
            .parse()
            .map_err(|e| invalid(expr, &e.to_string()))?;
        return Ok(Schedule::Cron(Box::new(cron), years));
    }
    Err(invalid(expr, "expected rate(...) or cron(...)"))
}

fn parse_years(f: &str) -> Option<Option<Vec<(i32, i32)>>> {
    if f == "*" || f == "?" {
        return Some(None);
    }
    let mut out = Vec::new();
    for part in f.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
            None => {
                let y: i32 = part.parse().ok()?;
                (y, y)
            }
        };
        if !(1970..=2199).contains(&a) || b < a || b > 2199 {
            return None;
        }
        out.push((a, b));
    }
    Some(Some(out))
}

impl Schedule {
    /// The latest scheduled time in `(after, now]`, if any.
    pub fn latest_due(&self, anchor_ms: i64, after_ms: i64, now_ms: i64) -> Option<i64> {
        match self {
            Schedule::Rate(p) => {
                if now_ms < anchor_ms + p {
                    return None;
                }
                let k = (now_ms - anchor_ms) / p;
                let t = anchor_ms + k * p;
                (t > after_ms).then_some(t)
            }
            Schedule::Cron(..) => {
                let mut t = self.next_after(after_ms)?;
                if t > now_ms {
                    return None;
                }
                // Skip to the latest occurrence not after now (bounded walk).
                for _ in 0..10_000 {
                    match self.next_after(t) {
                        Some(n) if n <= now_ms => t = n,
                        _ => break,
                    }
                }
                Some(t)
            }
        }
    }

    /// The first scheduled time strictly after `after_ms` (cron only).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let Schedule::Cron(c, years) = self else {
            return None;
        };
        let mut from: DateTime<Utc> = Utc.timestamp_millis_opt(after_ms).single()?;
        for _ in 0..1000 {
            let n = c.find_next_occurrence(&from, false).ok()?;
            let y = chrono::Datelike::year(&n);
            match years {
                Some(ys) if !ys.iter().any(|(a, b)| (*a..=*b).contains(&y)) => {
                    if ys.iter().all(|(_, b)| *b < y) {
                        return None;
                    }
                    from = n;
                }
                _ => return Some(n.timestamp_millis()),
            }
        }
        None
    }
}

/// Fires every scheduled rule that is due. Returns how many fired.
pub async fn tick(core: &Arc<Core>) -> Result<usize, AwsError> {
    let rules: Vec<Arc<RuleRecord>> = core
        .rules
        .read()
        .values()
        .filter(|r| r.enabled() && r.schedule.is_some())
        .cloned()
        .collect();
    let mut fired = 0;
    for rule in rules {
        let Some(expr) = &rule.schedule else { continue };
        let Ok(sched) = parse(expr) else { continue };
        let key = rule.arn.as_bytes().to_vec();
        let prev = core.store.get(NS_SCHED, &key).await.map_err(internal)?;
        let last = match &prev {
            Some(v) => {
                serde_json::from_slice::<SchedRecord>(&v.value)
                    .map_err(internal)?
                    .last_fire_ms
            }
            None => rule.created_ms,
        };
        let now = core.clock.now_millis();
        let Some(at) = sched.latest_due(rule.created_ms, last, now) else {
            continue;
        };
        let event_id = uuid::Uuid::new_v4().to_string();
        let event = core.envelope(
            &event_id,
            "Scheduled Event",
            "aws.events",
            at,
            std::slice::from_ref(&rule.arn),
            "{}",
        );
        let deliveries = core.deliveries_for(&rule, &event_id, &event, now, 0);
        let batch = Batch::new()
            .expect(NS_SCHED, key.clone(), prev.as_ref().map(|v| v.version))
            .put(
                NS_SCHED,
                key,
                serde_json::to_vec(&SchedRecord {
                    v: 1,
                    last_fire_ms: at,
                })
                .map_err(internal)?,
            );
        let from = core.clock.now_millis();
        let batch = core.enqueue(batch, &deliveries)?;
        match core.store.apply(batch).await {
            Ok(_) => {
                fired += 1;
                core.metrics
                    .scheduled_firings
                    .fetch_add(1, Ordering::Relaxed);
                if !deliveries.is_empty() {
                    core.metrics.triggered_rules.fetch_add(1, Ordering::Relaxed);
                    core.due_written(from);
                }
            }
            Err(StoreError::Conflict) => {}
            Err(e) => return Err(internal(e)),
        }
    }
    Ok(fired)
}

pub(crate) async fn schedule_loop(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        if let Err(e) = tick(&core).await {
            tracing::warn!(error = %e, "scheduled rules tick failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn rate_expressions() {
        assert!(matches!(
            parse("rate(1 minute)").unwrap(),
            Schedule::Rate(60_000)
        ));
        assert!(matches!(
            parse("rate(5 minutes)").unwrap(),
            Schedule::Rate(300_000)
        ));
        assert!(matches!(
            parse("rate(2 days)").unwrap(),
            Schedule::Rate(172_800_000)
        ));
        for bad in [
            "rate(1 minutes)",
            "rate(5 minute)",
            "rate(0 minutes)",
            "rate(-1 minutes)",
            "rate(5 weeks)",
            "rate(5)",
            "rate 5 minutes",
            "every 5 minutes",
        ] {
            assert_eq!(parse(bad).unwrap_err().code, "ValidationException", "{bad}");
        }
    }

    #[test]
    fn rate_fires_once_per_period_and_once_after_downtime() {
        let s = parse("rate(5 minutes)").unwrap();
        let c = 1_000_000;
        assert_eq!(s.latest_due(c, c, c + 4 * MIN), None);
        assert_eq!(s.latest_due(c, c, c + 5 * MIN), Some(c + 5 * MIN));
        assert_eq!(s.latest_due(c, c + 5 * MIN, c + 6 * MIN), None);
        // 23 minutes of downtime: one firing, for the latest period.
        assert_eq!(
            s.latest_due(c, c + 5 * MIN, c + 28 * MIN),
            Some(c + 25 * MIN)
        );
    }

    #[test]
    fn cron_expressions() {
        for bad in [
            "cron(0 12 * * * *)",
            "cron(0 12 ? * ? *)",
            "cron(0 12 * *)",
            "cron(0 25 * * ? *)",
            "cron(0 12 * * ? 1800)",
            "cron(0 12 * * ? 2030-2020)",
        ] {
            assert_eq!(parse(bad).unwrap_err().code, "ValidationException", "{bad}");
        }
        // 2024-01-01T00:00:00Z is a Monday.
        let jan1 = 1_704_067_200_000i64;
        let s = parse("cron(15 10 * * ? *)").unwrap();
        assert_eq!(s.next_after(jan1), Some(jan1 + (10 * 60 + 15) * MIN));
        // Day-of-week 6 is Friday in EventBridge numbering (1 = Sunday).
        let fri = parse("cron(0 8 ? * 6 *)").unwrap();
        assert_eq!(
            fri.next_after(jan1),
            Some(jan1 + 4 * 1440 * MIN + 8 * 60 * MIN)
        );
        let fri_name = parse("cron(0 8 ? * FRI *)").unwrap();
        assert_eq!(fri_name.next_after(jan1), fri.next_after(jan1));
        // Year restriction.
        let y = parse("cron(0 0 1 1 ? 2026)").unwrap();
        assert_eq!(y.next_after(jan1), Some(1_767_225_600_000));
        let past = parse("cron(0 0 1 1 ? 2020)").unwrap();
        assert_eq!(past.next_after(jan1), None);
    }

    #[test]
    fn cron_latest_due_collapses_missed_firings() {
        let jan1 = 1_704_067_200_000i64;
        let hourly = parse("cron(0 * * * ? *)").unwrap();
        assert_eq!(hourly.latest_due(0, jan1, jan1 + 30 * MIN), None);
        assert_eq!(
            hourly.latest_due(0, jan1, jan1 + 5 * 60 * MIN + 10 * MIN),
            Some(jan1 + 5 * 60 * MIN)
        );
    }
}
