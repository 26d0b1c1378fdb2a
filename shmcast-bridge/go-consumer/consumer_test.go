package main

import (
	"errors"
	"testing"

	"github.com/nats-io/nats.go"
	shmcast "github.com/shmcast/shmcast/go-client"
)

func data(seq, lost uint64) Frame { return Frame{Stream: "s", Seq: seq, Lost: lost} }
func beat(seq, lost uint64) Frame { return Frame{Stream: "s", Seq: seq, Lost: lost, Heartbeat: true} }

// The same cases as the importer's accounting.rs tests.
func TestTrackerSettlesEverySequenceNumberOnce(t *testing.T) {
	cases := []struct {
		name                    string
		frames                  []Frame
		delivered               []uint64
		upstream, transit, dups uint64
	}{
		{"in order", []Frame{data(1, 0), data(2, 0), data(3, 0)}, []uint64{1, 2, 3}, 0, 0, 0},
		{"late start and a hole", []Frame{data(5, 4), data(6, 0), data(8, 0)}, []uint64{5, 6, 8}, 4, 1, 0},
		{"lag plus transit", []Frame{data(1, 0), data(2, 0), data(10, 3)}, []uint64{1, 2, 10}, 3, 4, 0},
		{"restarted exporter", []Frame{data(1, 0), data(2, 0), data(3, 0), data(4, 0), data(2, 1), data(3, 0), data(4, 0), data(5, 0), data(6, 0)},
			[]uint64{1, 2, 3, 4, 5, 6}, 0, 0, 3},
		{"heartbeats settle the tail", []Frame{data(1, 0), data(2, 0), beat(5, 1), beat(5, 1), beat(1, 0)}, []uint64{1, 2}, 1, 2, 0},
		{"heartbeat at zero", []Frame{beat(0, 0), data(1, 0)}, []uint64{1}, 0, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewTracker()
			var got []uint64
			var up, tr2, dups uint64
			for _, f := range tc.frames {
				s := tr.Step(f)
				if s.Gap != s.LostUpstream+s.LostTransit {
					t.Fatalf("gap %d != %d + %d", s.Gap, s.LostUpstream, s.LostTransit)
				}
				up += s.LostUpstream
				tr2 += s.LostTransit
				if s.Deliver {
					got = append(got, f.Seq)
				}
				if s.Duplicate {
					dups++
				}
			}
			if len(got) != len(tc.delivered) {
				t.Fatalf("delivered %v, want %v", got, tc.delivered)
			}
			for i := range got {
				if got[i] != tc.delivered[i] {
					t.Fatalf("delivered %v, want %v", got, tc.delivered)
				}
			}
			if up != tc.upstream || tr2 != tc.transit || dups != tc.dups {
				t.Fatalf("upstream %d transit %d duplicates %d, want %d %d %d", up, tr2, dups, tc.upstream, tc.transit, tc.dups)
			}
		})
	}
}

func header(kv ...string) nats.Header {
	h := nats.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func TestParseFrameRefusesForeignMessages(t *testing.T) {
	for _, h := range []nats.Header{
		nil,
		header(headerSeq, "1"),
		header(headerStream, "s", headerSeq, "x"),
		header(headerStream, "s", headerSeq, "0"),
		header(headerStream, "s", headerSeq, "2", headerLost, "3"),
	} {
		if _, err := ParseFrame(h); !errors.Is(err, ErrNotAFrame) {
			t.Errorf("%v: err %v, want ErrNotAFrame", h, err)
		}
	}
	f, err := ParseFrame(header(headerStream, "s", headerSeq, "9", headerLost, "2", headerHeartbeat, "1"))
	if err != nil || f != beat(9, 2) {
		t.Fatalf("got %+v, %v", f, err)
	}
}

func TestConsumerVerifiesPayloadsAndFollowsIncarnations(t *testing.T) {
	c := NewConsumer(true)
	payload := func(seq uint64) []byte {
		b := make([]byte, 64)
		shmcast.FillPattern(b, seq)
		return b
	}
	c.Handle(header(headerStream, "a", headerSeq, "1"), payload(1))
	c.Handle(header(headerStream, "a", headerSeq, "2"), payload(3)) // wrong payload
	c.Handle(header(headerStream, "b", headerSeq, "1"), payload(1)) // a new producer
	c.Handle(header(headerStream, "a", headerSeq, "3"), payload(3)) // late, from the old one
	c.Handle(nats.Header{}, nil)
	want := Totals{Received: 3, Corrupt: 1, Stale: 1, NotBridge: 1, LastSeq: 1, Incarnations: 2}
	if c.Totals != want {
		t.Fatalf("got %+v, want %+v", c.Totals, want)
	}
}
