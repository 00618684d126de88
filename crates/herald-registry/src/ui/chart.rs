//! The 24-hour health picture of a webhook, drawn on the server as SVG:
//! one bar per hour, delivered attempts below and failed ones above.

use crate::service::HourlyHealth;

/// Drawing area, in SVG user units; the page scales it to its width.
pub const WIDTH: u32 = 720;
pub const HEIGHT: u32 = 160;
/// Room at the bottom for the hour labels.
const AXIS: u32 = 20;
const GAP: u32 = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bar {
    pub x: u32,
    pub width: u32,
    pub delivered_y: u32,
    pub delivered_height: u32,
    pub failed_y: u32,
    pub failed_height: u32,
    /// What a pointer over the bar shows.
    pub title: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub x: u32,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chart {
    pub bars: Vec<Bar>,
    pub labels: Vec<Label>,
    /// The attempts the tallest bar stands for.
    pub max: u64,
    pub delivered: u64,
    pub failed: u64,
    pub width: u32,
    pub height: u32,
    /// The baseline's height.
    pub base: u32,
    /// Hour by hour, for a table beside the picture.
    pub hours: Vec<HourlyHealth>,
}

impl Chart {
    pub fn new(hours: &[HourlyHealth]) -> Self {
        let plot = HEIGHT - AXIS;
        let max = hours
            .iter()
            .map(|h| h.delivered + h.failed)
            .max()
            .unwrap_or(0);
        let slot = WIDTH / u32::try_from(hours.len().max(1)).unwrap_or(1);
        let scale = |count: u64| -> u32 {
            if max == 0 || count == 0 {
                return 0;
            }
            // At least one unit, so that a single failure stays visible.
            let height = count.saturating_mul(u64::from(plot)) / max;
            u32::try_from(height).unwrap_or(plot).clamp(1, plot)
        };
        let mut bars = Vec::with_capacity(hours.len());
        let mut labels = Vec::new();
        for (i, hour) in hours.iter().enumerate() {
            let x = u32::try_from(i).unwrap_or(0) * slot;
            let delivered_height = scale(hour.delivered);
            let failed_height = scale(hour.failed).min(plot - delivered_height);
            let start = hour.hour.format("%H:%M");
            let end = (hour.hour + chrono::TimeDelta::hours(1)).format("%H:%M");
            bars.push(Bar {
                x: x + GAP / 2,
                width: slot - GAP,
                delivered_y: plot - delivered_height,
                delivered_height,
                failed_y: plot - delivered_height - failed_height,
                failed_height,
                title: format!(
                    "{start}–{end} UTC: {} delivered, {} failed",
                    hour.delivered, hour.failed
                ),
            });
            if i % 6 == 0 {
                labels.push(Label {
                    x: x + GAP / 2,
                    text: start.to_string(),
                });
            }
        }
        Self {
            bars,
            labels,
            max,
            delivered: hours.iter().map(|h| h.delivered).sum(),
            failed: hours.iter().map(|h| h.failed).sum(),
            width: WIDTH,
            height: HEIGHT,
            base: plot,
            hours: hours.to_vec(),
        }
    }

    /// One sentence for screen readers and the figure's caption.
    pub fn summary(&self) -> String {
        let attempts = |count: u64| match count {
            1 => "1 attempt".to_owned(),
            _ => format!("{count} attempts"),
        };
        if self.delivered + self.failed == 0 {
            "No attempts in the last 24 hours.".to_owned()
        } else {
            format!(
                "Last 24 hours: {} delivered, {} failed; the busiest hour had {}.",
                attempts(self.delivered),
                self.failed,
                attempts(self.max)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::{DateTime, TimeDelta, Utc};

    use super::*;

    fn hours(counts: &[(u64, u64)]) -> Vec<HourlyHealth> {
        let start: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
        counts
            .iter()
            .enumerate()
            .map(|(i, &(delivered, failed))| HourlyHealth {
                hour: start + TimeDelta::hours(i64::try_from(i).unwrap()),
                delivered,
                failed,
            })
            .collect()
    }

    #[test]
    fn bars_scale_to_the_busiest_hour_and_stack_failures_on_top() {
        let mut counts = vec![(0, 0); 24];
        counts[0] = (100, 40);
        counts[1] = (1, 0);
        counts[23] = (0, 1);
        let chart = Chart::new(&hours(&counts));
        assert_eq!(chart.bars.len(), 24);
        assert_eq!(chart.max, 140);
        assert_eq!((chart.delivered, chart.failed), (101, 41));
        let plot = HEIGHT - AXIS;
        let busiest = &chart.bars[0];
        assert_eq!(busiest.delivered_height + busiest.failed_height, plot);
        assert_eq!(
            busiest.failed_y + busiest.failed_height,
            busiest.delivered_y
        );
        assert_eq!(busiest.delivered_y + busiest.delivered_height, plot);
        // One attempt is still a visible sliver.
        assert_eq!(chart.bars[1].delivered_height, 1);
        assert_eq!(chart.bars[23].failed_height, 1);
        assert_eq!(
            chart.bars[2].delivered_height + chart.bars[2].failed_height,
            0
        );
        assert_eq!(
            chart.bars[0].title,
            "00:00–01:00 UTC: 100 delivered, 40 failed"
        );
        let labels: Vec<&str> = chart.labels.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(labels, ["00:00", "06:00", "12:00", "18:00"]);
        assert!(chart.bars.iter().all(|b| b.x + b.width <= WIDTH));
    }

    #[test]
    fn an_idle_day_says_so() {
        let chart = Chart::new(&hours(&[(0, 0); 24]));
        assert_eq!(chart.max, 0);
        assert_eq!(chart.summary(), "No attempts in the last 24 hours.");
        assert!(chart.bars.iter().all(|b| b.delivered_height == 0));
    }

    #[test]
    fn the_summary_counts_attempts_in_words() {
        let mut counts = [(0, 0); 24];
        counts[23] = (1, 0);
        assert_eq!(
            Chart::new(&hours(&counts)).summary(),
            "Last 24 hours: 1 attempt delivered, 0 failed; the busiest hour had 1 attempt."
        );
        counts[22] = (2, 3);
        assert_eq!(
            Chart::new(&hours(&counts)).summary(),
            "Last 24 hours: 3 attempts delivered, 3 failed; the busiest hour had 5 attempts."
        );
    }
}
