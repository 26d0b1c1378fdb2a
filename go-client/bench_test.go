package shmcast

import (
	"testing"
	"unsafe"

	"github.com/shmcast/shmcast/go-client/internal/segtest"
)

// The read benchmarks run on a mapped file with a 1 MiB ring filled by the
// test writer and no concurrent producer, so they measure the reader's own
// cost per message (header loads, copy, re-check), not contention. When the
// reader reaches the end it rewinds to the oldest message, outside the timer.
var benchSizes = []struct {
	name string
	n    int
}{{"64B", 64}, {"1KiB", 1024}, {"4KiB", 4096}}

func benchReader(b *testing.B, size int) *Reader {
	w, path := segtest.Temp(b, 1<<20)
	for w.Tail() < 3<<20 { // a few laps, so every record is a wrapped one
		w.PublishPattern(size)
	}
	r, err := OpenPath(path, WithStart(Oldest))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	return r
}

func rewind(b *testing.B, r *Reader) {
	b.StopTimer()
	if err := r.join(Oldest); err != nil {
		b.Fatal(err)
	}
	b.StartTimer()
}

func BenchmarkReadCopy(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			r := benchReader(b, s.n)
			buf := make([]byte, r.MaxPayload())
			b.SetBytes(int64(s.n))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.TryRead(buf); err != nil {
					if err != ErrNoMessage {
						b.Fatal(err)
					}
					rewind(b, r)
				}
			}
		})
	}
}

// The zero-copy callback touches the first and last byte of the payload (so
// both ends of the record are loaded) but does no per-byte work: the figure
// is the protocol's cost without the copy. The copying benchmark moves
// every byte.
func BenchmarkReadZeroCopy(b *testing.B) {
	for _, s := range benchSizes {
		b.Run(s.name, func(b *testing.B) {
			r := benchReader(b, s.n)
			var sum uint64
			fn := func(seq uint64, p []byte) {
				sum += uint64(p[0]) + uint64(p[len(p)-1])
			}
			b.SetBytes(int64(s.n))
			b.ReportAllocs()
			for b.Loop() {
				if err := r.TryReadFunc(fn); err != nil {
					if err != ErrNoMessage {
						b.Fatal(err)
					}
					rewind(b, r)
				}
			}
			_ = sum
		})
	}
}

// BenchmarkCopyStrategy compares the two correct ways to copy a payload out
// of the mapping, each with its validation (fence + atomic load of intent):
// one atomic load per word, or memmove then loadFence. The result decides
// copyPayload (reader.go).
func BenchmarkCopyStrategy(b *testing.B) {
	w, _ := segtest.Temp(b, 1<<20)
	src := w.Mem[segtest.DataOffset:]
	intent := (*uint64)(unsafe.Pointer(&w.Mem[segtest.OffIntent]))
	for _, s := range benchSizes {
		dst := make([]byte, s.n)
		b.Run("atomic/"+s.name, func(b *testing.B) {
			b.SetBytes(int64(s.n))
			off := 0
			for b.Loop() {
				copyWordsAtomic(dst, unsafe.Pointer(&src[off]))
				sinkU64 = loadWordPtr(intent)
				off = (off + 4096 + 64) & (1<<20 - 1 - 8191)
			}
		})
		b.Run("plain/"+s.name, func(b *testing.B) {
			b.SetBytes(int64(s.n))
			off := 0
			for b.Loop() {
				copyPlain(dst, src[off:off+s.n])
				loadFence()
				sinkU64 = loadWordPtr(intent)
				off = (off + 4096 + 64) & (1<<20 - 1 - 8191)
			}
		})
	}
}

var sinkU64 uint64

func loadWordPtr(p *uint64) uint64 { return loadWord(unsafe.Slice((*byte)(unsafe.Pointer(p)), 8), 0) }
