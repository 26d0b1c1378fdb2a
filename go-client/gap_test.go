package shmcast

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"github.com/shmcast/shmcast/go-client/internal/segtest"
)

// Gap records (docs/LAYOUT.md, "Gap records"), as the Rust tests in
// src/ring/gap_tests.rs check them: every way of reading reports a gap with
// its exact count and moves past the sequence numbers it stands for.

func gapSegment(t *testing.T) *segtest.Writer {
	t.Helper()
	w := segtest.NewHeap(4096)
	w.Store(segtest.OffFlags, flagGaps)
	return w
}

// transcript reads until ErrNoMessage: a positive entry per message (its
// sequence number, payload checked), a negative one per loss.
func transcript(t *testing.T, r *Reader, zeroCopy bool) []int64 {
	t.Helper()
	var out []int64
	buf := make([]byte, r.MaxPayload())
	for {
		var seq uint64
		var err error
		if zeroCopy {
			err = r.TryReadFunc(func(s uint64, p []byte) {
				seq = s
				if !bytes.Equal(p, segtest.Pattern(s, len(p))) {
					t.Errorf("payload of %d is corrupt", s)
				}
			})
		} else {
			var m Message
			m, err = r.TryRead(buf)
			seq = m.Seq
			if err == nil && !bytes.Equal(m.Data, segtest.Pattern(m.Seq, len(m.Data))) {
				t.Errorf("payload of %d is corrupt", m.Seq)
			}
		}
		var lag *LaggedError
		switch {
		case err == nil:
			out = append(out, int64(seq))
		case errors.As(err, &lag):
			out = append(out, -int64(lag.Missed))
		case err == ErrNoMessage:
			return out
		default:
			t.Fatalf("unexpected %v", err)
		}
	}
}

func TestGapRecordsAreReportedAsLagged(t *testing.T) {
	for _, zeroCopy := range []bool{false, true} {
		w := gapSegment(t)
		r := mustOpenMem(t, w, Beginning)
		w.PublishPattern(10)
		w.PublishGap(3)
		w.PublishPattern(30)
		w.PublishGap(1)
		w.PublishGap(100)
		w.PublishPattern(0)
		got := transcript(t, r, zeroCopy)
		want := []int64{1, -3, 5, -1, -100, 107}
		if !slices.Equal(got, want) {
			t.Fatalf("zero-copy %v: got %v, want %v", zeroCopy, got, want)
		}
		if r.NextSeq() != 108 {
			t.Fatalf("NextSeq %d, want 108", r.NextSeq())
		}
	}
}

func TestJoiningAtAGapStartsAfterIt(t *testing.T) {
	w := gapSegment(t)
	w.PublishPattern(8)
	w.PublishGap(4) // latest is the gap record: sequence numbers 2..5
	newest := mustOpenMem(t, w, Newest)
	next := mustOpenMem(t, w, Next)
	if newest.NextSeq() != 6 || next.NextSeq() != 6 {
		t.Fatalf("NextSeq newest %d, next %d; want 6", newest.NextSeq(), next.NextSeq())
	}
	w.PublishPattern(8)
	for _, r := range []*Reader{newest, next} {
		if got := transcript(t, r, false); !slices.Equal(got, []int64{6}) {
			t.Fatalf("got %v, want [6]", got)
		}
	}
	oldest := mustOpenMem(t, w, Oldest)
	if got := transcript(t, oldest, false); !slices.Equal(got, []int64{1, -4, 6}) {
		t.Fatalf("oldest: got %v", got)
	}
}

func TestLappedReaderCountsGapsAmongWhatItMissed(t *testing.T) {
	w := gapSegment(t)
	r := mustOpenMem(t, w, Beginning)
	var received, missed uint64
	tally := func() {
		for _, v := range transcript(t, r, false) {
			if v > 0 {
				received++
			} else {
				missed += uint64(-v)
			}
		}
	}
	for i := uint64(0); i < 3000; i++ {
		if i%7 == 3 {
			w.PublishGap(1 + i%5)
		} else {
			w.PublishPattern(int(i*37) % 200)
		}
		if i%400 == 399 {
			tally()
		}
	}
	tally()
	if received+missed != w.NextSeq()-1 {
		t.Fatalf("received %d + missed %d != published %d", received, missed, w.NextSeq()-1)
	}
}

func TestStreamEndsAfterATrailingGap(t *testing.T) {
	w := gapSegment(t)
	r := mustOpenMem(t, w, Beginning)
	w.PublishPattern(8)
	w.PublishGap(9)
	if got := transcript(t, r, false); !slices.Equal(got, []int64{1, -9}) {
		t.Fatalf("got %v", got)
	}
	if err := r.checkEnd(); err != nil {
		t.Fatalf("end after a trailing gap: %v", err)
	}
	short := mustOpenMem(t, w, Beginning)
	buf := make([]byte, 64)
	if _, err := short.TryRead(buf); err != nil {
		t.Fatal(err)
	}
	if err := short.checkEnd(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a reader short of the trailing gap: got %v, want ErrCorrupt", err)
	}
}

func TestGapWordWithoutTheFlagIsAMessage(t *testing.T) {
	w := segtest.NewHeap(4096)
	r := mustOpenMem(t, w, Beginning)
	w.PublishGap(3)
	m, err := r.TryRead(make([]byte, 64))
	if err != nil || m.Seq != 1 || !bytes.Equal(m.Data, []byte{3, 0, 0, 0, 0, 0, 0, 0}) {
		t.Fatalf("got %v %v", m, err)
	}
}
