package shmcast

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/shmcast/shmcast/go-client/internal/segtest"
)

// Fuzz targets for the decoding of everything a reader trusts: the header
// (FuzzSegment: a whole segment file) and the ring with its control words
// (FuzzRing: a valid 4 KiB-ring header around arbitrary ring bytes and
// intent/head/latest). Neither may panic, loop, or deliver a message that
// breaks the reader's own invariants. The seed corpus is in testdata/fuzz;
// regenerate it with SHMCAST_WRITE_FUZZ_SEEDS=1 go test -run TestWriteFuzzSeeds.

func FuzzSegment(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		mem := segtest.NewMem(len(data))
		copy(mem, data)
		hdr, err := decodeHeader(mem, int64(len(mem)), "fuzz")
		if err != nil {
			var he *HeaderError
			if !errors.As(err, &he) || he.Error() == "" {
				t.Fatalf("header error of the wrong type: %v", err)
			}
			return
		}
		if hdr.Capacity > 1<<20 {
			return // a valid header for a bigger file than the input: cannot happen
		}
		readAll(t, mem, hdr)
	})
}

func FuzzRing(f *testing.F) {
	f.Fuzz(func(t *testing.T, ring []byte, intent, head, latest uint64, start uint) {
		w := segtest.NewHeap(4096)
		copy(w.Mem[segtest.DataOffset:], ring)
		w.Store(segtest.OffIntent, intent)
		w.Store(segtest.OffHead, head)
		w.Store(segtest.OffLatest, latest)
		hdr, err := decodeHeader(w.Mem, int64(len(w.Mem)), "fuzz")
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, w.Mem, hdr, Start(start%4))
	})
}

// readAll reads a fuzzed segment from the given starts (all four by
// default) with both read forms and checks the reader's invariants.
func readAll(t *testing.T, mem []byte, hdr Header, starts ...Start) {
	if len(starts) == 0 {
		starts = []Start{Beginning, Oldest, Newest, Next}
	}
	buf := make([]byte, hdr.MaxPayload())
	for _, s := range starts {
		for _, zeroCopy := range []bool{false, true} {
			r, err := newReader(mem, hdr, "fuzz", nil, options{start: s}, nil)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("join %v: unexpected error %v", s, err)
				}
				continue
			}
			for range 64 {
				want := r.NextSeq()
				var got uint64
				var n int
				if zeroCopy {
					err = r.TryReadFunc(func(seq uint64, p []byte) { got, n = seq, len(p) })
				} else {
					var m Message
					m, err = r.TryRead(buf)
					got, n = m.Seq, len(m.Data)
				}
				var lag *LaggedError
				switch {
				case err == nil:
					if got != want || n > r.MaxPayload() || r.NextSeq() != want+1 {
						t.Fatalf("%v: delivered seq %d len %d, expected seq %d", s, got, n, want)
					}
					continue
				case errors.As(err, &lag):
					if lag.Missed == 0 || r.NextSeq() != want+lag.Missed {
						t.Fatalf("%v: lagged %d from %d to %d", s, lag.Missed, want, r.NextSeq())
					}
					continue
				case err == ErrNoMessage, errors.Is(err, ErrCorrupt):
				default:
					t.Fatalf("%v: unexpected error %v", s, err)
				}
				break
			}
		}
	}
}

// TestWriteFuzzSeeds (re)writes the committed seed corpus when
// SHMCAST_WRITE_FUZZ_SEEDS=1; otherwise it checks that the corpus exists.
func TestWriteFuzzSeeds(t *testing.T) {
	seeds := fuzzSeeds()
	if os.Getenv("SHMCAST_WRITE_FUZZ_SEEDS") != "1" {
		for name := range seeds {
			if _, err := os.Stat(filepath.Join("testdata", "fuzz", name)); err != nil {
				t.Errorf("seed corpus file missing: %v", err)
			}
		}
		return
	}
	for name, body := range seeds {
		path := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("go test fuzz v1\n"+body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func fuzzSeeds() map[string]string {
	seeds := map[string]string{}
	segment := func(name string, mem []byte) {
		seeds["FuzzSegment/"+name] = fmt.Sprintf("[]byte(%q)\n", mem)
	}
	ring := func(name string, w *segtest.Writer, start Start) {
		seeds["FuzzRing/"+name] = fmt.Sprintf("[]byte(%q)\nuint64(%d)\nuint64(%d)\nuint64(%d)\nuint(%d)\n",
			w.Mem[segtest.DataOffset:], w.Load(segtest.OffIntent), w.Load(segtest.OffHead),
			w.Load(segtest.OffLatest), start)
	}
	empty := segtest.NewHeap(4096)
	segment("empty", empty.Mem)
	ring("empty", empty, Oldest)

	few := segtest.NewHeap(4096)
	for i := range 5 {
		few.PublishPattern(i * 9)
	}
	segment("few", few.Mem)
	ring("few-beginning", few, Beginning)
	ring("few-next", few, Next)

	wrapped := segtest.NewHeap(4096)
	for i := range 60 {
		wrapped.PublishPattern((i * 97) % 700)
	}
	segment("wrapped", wrapped.Mem)
	ring("wrapped-beginning", wrapped, Beginning)
	ring("wrapped-oldest", wrapped, Oldest)
	ring("wrapped-newest", wrapped, Newest)

	lossless := segtest.InitLossless(segtest.NewMem(segtest.DataOffset+4096), 4096, 2)
	for i := range 5 {
		lossless.PublishPattern(i * 9)
	}
	segment("lossless", lossless.Mem)

	bad := segtest.NewHeap(4096)
	bad.PublishPattern(10)
	bad.Store(segtest.OffFlags, 4) // bit 0 is lossless mode, bit 1 gap records; bit 2 is unknown
	segment("flags", bad.Mem)

	gaps := segtest.NewHeap(4096)
	gaps.Store(segtest.OffFlags, flagGaps)
	for i := range 30 {
		if i%4 == 1 {
			gaps.PublishGap(uint64(1 + i%3))
		} else {
			gaps.PublishPattern(i * 7)
		}
	}
	segment("gaps", gaps.Mem)
	segment("truncated", few.Mem[:5000])
	return seeds
}
