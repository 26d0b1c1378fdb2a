package shmcast

import "encoding/binary"

// The generated test payloads of docs/LAYOUT.md, "Generated test payloads":
// a deterministic function of (seq, len), so any reader can check what the
// CLI's `publish --count` produced.

const golden = 0x9E3779B97F4A7C15

func splitmix64(state *uint64) uint64 {
	*state += golden
	z := *state
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// FillPattern fills dst with the generated payload of message seq whose
// length is len(dst): the test payload of docs/LAYOUT.md, "Generated test
// payloads", that `shmcast publish --count` sends, so that a reader can
// check every byte it received (VerifyPattern).
func FillPattern(dst []byte, seq uint64) {
	state := seq ^ uint64(len(dst))<<40
	i := 0
	for ; i+8 <= len(dst); i += 8 {
		binary.LittleEndian.PutUint64(dst[i:], splitmix64(&state))
	}
	if i < len(dst) {
		z := splitmix64(&state)
		for ; i < len(dst); i++ {
			dst[i] = byte(z)
			z >>= 8
		}
	}
}

// Pattern returns the generated payload of message seq with n bytes.
func Pattern(seq uint64, n int) []byte {
	b := make([]byte, n)
	FillPattern(b, seq)
	return b
}

// VerifyPattern reports whether payload is the generated payload of message
// seq. It does not allocate.
func VerifyPattern(seq uint64, payload []byte) bool {
	state := seq ^ uint64(len(payload))<<40
	i := 0
	for ; i+8 <= len(payload); i += 8 {
		if binary.LittleEndian.Uint64(payload[i:]) != splitmix64(&state) {
			return false
		}
	}
	if i < len(payload) {
		z := splitmix64(&state)
		for ; i < len(payload); i++ {
			if payload[i] != byte(z) {
				return false
			}
			z >>= 8
		}
	}
	return true
}

// PatternLen is the payload length `shmcast publish --size MIN-MAX` gives
// message seq: MIN + splitmix64_first(seq) % (MAX - MIN + 1), where
// splitmix64_first(seq) is the first SplitMix64 output from state seq.
func PatternLen(seq uint64, minLen, maxLen int) int {
	state := seq
	span := uint64(maxLen-minLen) + 1
	return minLen + int(splitmix64(&state)%span)
}

// Checksum is the checksum the benchmarks use, the same as the Rust crate's
// pattern::checksum: the wrapping sum of p's little-endian 64-bit words plus
// each byte of a final partial word. It reads every byte. Four accumulators
// keep four loads in flight (Go does not vectorise this loop); the sum is the
// same whatever the grouping.
func Checksum(p []byte) uint64 {
	var s0, s1, s2, s3 uint64
	for len(p) >= 32 {
		s0 += binary.LittleEndian.Uint64(p[0:8])
		s1 += binary.LittleEndian.Uint64(p[8:16])
		s2 += binary.LittleEndian.Uint64(p[16:24])
		s3 += binary.LittleEndian.Uint64(p[24:32])
		p = p[32:]
	}
	for len(p) >= 8 {
		s0 += binary.LittleEndian.Uint64(p[0:8])
		p = p[8:]
	}
	for _, b := range p {
		s1 += uint64(b)
	}
	return s0 + s1 + s2 + s3
}
