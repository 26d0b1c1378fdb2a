package shmcast

import (
	"testing"

	"github.com/shmcast/shmcast/go-client/internal/segtest"
)

// openMem opens a Reader over a heap segment (no mapping, nothing to
// unmap). Tests that run a writer concurrently use mapped files instead
// (fileSegment), because the race detector would flag the deliberate
// seqlock race on heap memory but ignores memory outside the Go heap.
func openMem(mem []byte, start Start) (*Reader, error) {
	hdr, err := decodeHeader(mem, int64(len(mem)), "mem")
	if err != nil {
		return nil, err
	}
	return newReader(mem, hdr, "mem", nil, options{start: start}, mem[headerSize:dataOffset])
}

func mustOpenMem(t testing.TB, w *segtest.Writer, start Start) *Reader {
	t.Helper()
	r, err := openMem(w.Mem, start)
	if err != nil {
		t.Fatalf("open %v: %v", start, err)
	}
	return r
}

// drain reads with TryRead until ErrNoMessage, checking every payload
// against the generated pattern, and returns received, missed and the last
// error other than ErrNoMessage.
func drain(t testing.TB, r *Reader) (received, missed uint64, err error) {
	t.Helper()
	buf := make([]byte, r.MaxPayload())
	want := r.NextSeq()
	for {
		m, err := r.TryRead(buf)
		switch e := err.(type) {
		case nil:
			if m.Seq != want {
				t.Fatalf("got seq %d, want %d", m.Seq, want)
			}
			if !VerifyPattern(m.Seq, m.Data) {
				t.Fatalf("seq %d: payload of %d bytes does not match the pattern", m.Seq, len(m.Data))
			}
			received++
			want++
		case *LaggedError:
			missed += e.Missed
			want += e.Missed
		default:
			if err == ErrNoMessage {
				return received, missed, nil
			}
			return received, missed, err
		}
	}
}
