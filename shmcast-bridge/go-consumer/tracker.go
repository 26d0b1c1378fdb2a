package main

// Step says what to do with one frame; the importer's accounting.rs computes
// the same.
type Step struct {
	// Gap is how many sequence numbers were skipped just before the frame.
	Gap uint64
	// LostUpstream is the part of Gap the exporter said it did not send.
	LostUpstream uint64
	// LostTransit is the part of Gap that was sent but did not arrive.
	LostTransit uint64
	// Deliver is set for a data message seen for the first time.
	Deliver bool
	// Duplicate is set for a data message seen before.
	Duplicate bool
}

// Tracker follows one source incarnation: the next sequence number expected.
type Tracker struct {
	expected uint64
}

// NewTracker expects sequence number 1.
func NewTracker() *Tracker { return &Tracker{expected: 1} }

// Expected is the next source sequence number not yet delivered or counted.
func (t *Tracker) Expected() uint64 { return t.expected }

// Step accounts for f. Only the part of the frame's range at or after the
// expected sequence number is new; the rest was settled already (a restarted
// exporter sends again from the ring's oldest message).
func (t *Tracker) Step(f Frame) Step {
	var s Step
	lastSkipped := f.Seq
	if !f.Heartbeat && lastSkipped > 0 {
		lastSkipped--
	}
	if lastSkipped+1 > t.expected {
		s.Gap = lastSkipped + 1 - t.expected
		s.LostUpstream = min(f.Lost, s.Gap)
		s.LostTransit = s.Gap - s.LostUpstream
		t.expected = lastSkipped + 1
	}
	if !f.Heartbeat {
		if f.Seq == t.expected {
			s.Deliver = true
			t.expected++
		} else {
			s.Duplicate = true
		}
	}
	return s
}
