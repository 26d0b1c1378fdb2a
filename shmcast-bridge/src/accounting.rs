//! The importer's bookkeeping of one source incarnation's sequence numbers: every source
//! sequence number ends up delivered once or in exactly one loss bucket (docs/BRIDGE.md,
//! "Loss accounting").

use crate::wire::Frame;

/// What to do with one incoming frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Sequence numbers skipped just before this frame (to record as a gap locally).
    pub gap: u64,
    /// Of `gap`, how many the exporter said it did not send.
    pub lost_upstream: u64,
    /// Of `gap`, how many were sent but never arrived.
    pub lost_transit: u64,
    /// Whether the frame's payload is to be delivered (a data message, not seen before).
    pub deliver: bool,
    /// Whether the frame was a data message seen before (dropped).
    pub duplicate: bool,
}

/// The next sequence number expected from one source incarnation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    expected: u64,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker { expected: 1 }
    }
}

impl Tracker {
    /// The next source sequence number not yet delivered or counted.
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// Accounts for `frame` (of this tracker's stream).
    ///
    /// A data frame at `seq` with `lost` covers `seq - lost ..= seq - 1` as not sent and `seq`
    /// as delivered; a heartbeat at `seq` covers `seq - lost + 1 ..= seq` as not sent and
    /// everything before as sent. Only the part at or after `expected` is new: the rest was
    /// delivered or counted already (a restarted exporter sends again from the ring's start).
    pub fn step(&mut self, frame: &Frame) -> Step {
        let mut step = Step {
            gap: 0,
            lost_upstream: 0,
            lost_transit: 0,
            deliver: false,
            duplicate: false,
        };
        // The last sequence number the frame settles and where its not-sent range ends.
        let last_skipped = if frame.heartbeat {
            frame.seq
        } else {
            frame.seq.saturating_sub(1)
        };
        if last_skipped + 1 > self.expected {
            step.gap = last_skipped + 1 - self.expected;
            step.lost_upstream = frame.lost.min(step.gap);
            step.lost_transit = step.gap - step.lost_upstream;
            self.expected = last_skipped + 1;
        }
        if !frame.heartbeat {
            if frame.seq == self.expected {
                step.deliver = true;
                self.expected += 1;
            } else {
                step.duplicate = true;
            }
        }
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(seq: u64, lost: u64) -> Frame {
        Frame {
            stream: "s".into(),
            seq,
            lost,
            heartbeat: false,
        }
    }

    fn beat(seq: u64, lost: u64) -> Frame {
        Frame {
            stream: "s".into(),
            seq,
            lost,
            heartbeat: true,
        }
    }

    /// Runs frames through a tracker and returns (delivered, upstream, transit, duplicates).
    fn run(frames: &[Frame]) -> (Vec<u64>, u64, u64, u64) {
        let mut t = Tracker::default();
        let (mut delivered, mut up, mut tr, mut dup) = (Vec::new(), 0, 0, 0);
        for f in frames {
            let s = t.step(f);
            assert_eq!(s.gap, s.lost_upstream + s.lost_transit);
            up += s.lost_upstream;
            tr += s.lost_transit;
            if s.deliver {
                delivered.push(f.seq);
            }
            if s.duplicate {
                dup += 1;
            }
        }
        (delivered, up, tr, dup)
    }

    #[test]
    fn in_order_stream_is_delivered_whole() {
        assert_eq!(
            run(&[data(1, 0), data(2, 0), data(3, 0)]),
            (vec![1, 2, 3], 0, 0, 0)
        );
    }

    #[test]
    fn a_late_start_is_upstream_loss_and_a_hole_is_transit_loss() {
        // Exporter joined at 5 (lost 4 before it); 7 vanished on the way.
        let got = run(&[data(5, 4), data(6, 0), data(8, 0)]);
        assert_eq!(got, (vec![5, 6, 8], 4, 1, 0));
    }

    #[test]
    fn exporter_lag_plus_transit_loss_split_exactly() {
        // 3..=9 missing at the importer; the exporter said it lagged over 7..=9 (lost 3 before 10).
        let got = run(&[data(1, 0), data(2, 0), data(10, 3)]);
        assert_eq!(got, (vec![1, 2, 10], 3, 4, 0));
    }

    #[test]
    fn a_restarted_exporter_resends_as_duplicates_and_fills_what_was_missing() {
        // The first exporter got 1..=4 through, 5 was lost in transit when it died; the second
        // starts at the ring's oldest (2; it says 1 is lost) and sends 2..=6 again.
        let frames = [
            data(1, 0),
            data(2, 0),
            data(3, 0),
            data(4, 0),
            data(2, 1),
            data(3, 0),
            data(4, 0),
            data(5, 0),
            data(6, 0),
        ];
        assert_eq!(run(&frames), (vec![1, 2, 3, 4, 5, 6], 0, 0, 3));
    }

    #[test]
    fn heartbeats_settle_the_tail() {
        // 3 and 4 vanished in transit; the exporter dropped 5 (oversize): the heartbeat says 5
        // is the last accounted, 1 of them not sent.
        let got = run(&[data(1, 0), data(2, 0), beat(5, 1), beat(5, 1), beat(1, 0)]);
        assert_eq!(got, (vec![1, 2], 1, 2, 0));
    }

    #[test]
    fn a_heartbeat_at_zero_settles_nothing() {
        assert_eq!(run(&[beat(0, 0), data(1, 0)]), (vec![1], 0, 0, 0));
    }
}
