package shmcast

import (
	"bytes"
	"testing"

	"github.com/shmcast/shmcast/go-client/internal/segtest"
)

func TestSplitMix64Reference(t *testing.T) {
	// First outputs of SplitMix64 seeded with 0 (reference implementation).
	var s uint64
	if a, b := splitmix64(&s), splitmix64(&s); a != 0xE220A8397B1DCDAF || b != 0x6E789E6AA1B965F4 {
		t.Fatalf("got %#x %#x", a, b)
	}
}

func TestPattern(t *testing.T) {
	for seq := uint64(1); seq < 50; seq++ {
		for n := range 40 {
			p := Pattern(seq, n)
			if !bytes.Equal(p, segtest.Pattern(seq, n)) || !VerifyPattern(seq, p) {
				t.Fatalf("seq %d len %d", seq, n)
			}
			if n > 0 {
				p[n-1] ^= 1
				if VerifyPattern(seq, p) {
					t.Fatalf("seq %d len %d: flipped bit not detected", seq, n)
				}
			}
			if n > 1 && VerifyPattern(seq+1, Pattern(seq, n)) {
				t.Fatalf("seq %d len %d verifies as seq %d", seq, n, seq+1)
			}
		}
	}
	for seq := uint64(1); seq < 1000; seq++ {
		if n := PatternLen(seq, 3, 17); n < 3 || n > 17 {
			t.Fatalf("PatternLen(%d) = %d", seq, n)
		}
	}
	if PatternLen(1, 4, 4) != 4 {
		t.Fatal("fixed length")
	}
	if allocs := testing.AllocsPerRun(100, func() { VerifyPattern(7, make([]byte, 0)) }); allocs != 0 {
		t.Fatalf("VerifyPattern allocates %v", allocs)
	}
}

// TestChecksumMatchesRust pins Checksum to the same vectors as the Rust
// crate's pattern::checksum test, so both languages compute one checksum.
func TestChecksumMatchesRust(t *testing.T) {
	ff := make([]byte, 16)
	for i := range ff {
		ff[i] = 0xFF
	}
	for _, c := range []struct {
		in   []byte
		want uint64
	}{
		{nil, 0},
		{[]byte{1, 0, 0, 0, 0, 0, 0, 0, 2, 3}, 6},
		{ff, ^uint64(0) - 1}, // two words of 2^64-1, wrapping
	} {
		if got := Checksum(c.in); got != c.want {
			t.Errorf("Checksum(%v) = %d, want %d", c.in, got, c.want)
		}
	}
}
