package shmcast

import (
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/shmcast/shmcast/go-client/internal/segtest"
)

// validSegment returns the bytes of a small segment with a few messages.
func validSegment() []byte {
	w := segtest.NewHeap(4096)
	for i := range 30 {
		w.PublishPattern(i * 20)
	}
	return w.Mem
}

func TestHeaderValidation(t *testing.T) {
	type mut func(w *segtest.Writer) []byte
	set := func(off, v uint64) mut {
		return func(w *segtest.Writer) []byte { w.Store(off, v); return w.Mem }
	}
	lossless := func(slots uint64) mut {
		return func(w *segtest.Writer) []byte {
			w.Store(segtest.OffFlags, segtest.FlagLossless)
			w.Store(segtest.OffReaderSlots, slots)
			return w.Mem
		}
	}
	cases := []struct {
		name  string
		mut   mut
		kind  error
		field string
	}{
		{"empty file", func(w *segtest.Writer) []byte { return nil }, ErrTruncated, "size"},
		{"short file", func(w *segtest.Writer) []byte { return w.Mem[:100] }, ErrTruncated, "size"},
		{"one byte short of a header", func(w *segtest.Writer) []byte { return w.Mem[:4095] }, ErrTruncated, "size"},
		{"header only", func(w *segtest.Writer) []byte { return w.Mem[:4096] }, ErrSizeMismatch, "size"},
		{"ring cut short", func(w *segtest.Writer) []byte { return w.Mem[:len(w.Mem)-8] }, ErrSizeMismatch, "size"},
		{"extra bytes", func(w *segtest.Writer) []byte { return append(w.Mem, 0, 0, 0, 0, 0, 0, 0, 0) }, ErrSizeMismatch, "size"},
		{"zero magic", set(0, 0), ErrNotInitialized, "magic"},
		{"bad magic", set(0, 0x4141414141414141), ErrBadMagic, "magic"},
		{"big-endian magic", set(0, 0x5348434153540000), ErrBadMagic, "magic"},
		{"version 0", set(segtest.OffVersion, 0), ErrUnsupportedVersion, "version"},
		{"version 2", set(segtest.OffVersion, 2), ErrUnsupportedVersion, "version"},
		{"lossless flag without reader_slots", set(segtest.OffFlags, segtest.FlagLossless), ErrInvalidHeader, "reader_slots"},
		{"lossless, 32 reader_slots", lossless(32), ErrInvalidHeader, "reader_slots"},
		{"lossless, 2^63 reader_slots", lossless(1 << 63), ErrInvalidHeader, "reader_slots"},
		{"lossless, bad capacity first", func(w *segtest.Writer) []byte {
			w.Store(segtest.OffCap, 6144)
			return lossless(0)(w)
		}, ErrInvalidHeader, "capacity"},
		{"lossless, then size", func(w *segtest.Writer) []byte { return lossless(0)(w)[:len(w.Mem)-8] }, ErrInvalidHeader, "reader_slots"},
		{"lossless, valid, size last", func(w *segtest.Writer) []byte { return lossless(31)(w)[:len(w.Mem)-8] }, ErrSizeMismatch, "size"},
		{"flag bit 2", set(segtest.OffFlags, 4), ErrUnsupportedFlags, "flags"},
		{"lossless, gap records and bit 2", set(segtest.OffFlags, 7), ErrUnsupportedFlags, "flags"},
		{"high flag", set(segtest.OffFlags, 1<<63), ErrUnsupportedFlags, "flags"},
		{"data_offset 4096", set(segtest.OffDataOff, 4096), ErrInvalidHeader, "data_offset"},
		{"capacity 0", set(segtest.OffCap, 0), ErrInvalidHeader, "capacity"},
		{"capacity 2048", set(segtest.OffCap, 2048), ErrInvalidHeader, "capacity"},
		{"capacity not a power of two", set(segtest.OffCap, 6144), ErrInvalidHeader, "capacity"},
		{"capacity 2^41", set(segtest.OffCap, 1<<41), ErrInvalidHeader, "capacity"},
		{"capacity 2^63", set(segtest.OffCap, 1<<63), ErrInvalidHeader, "capacity"},
		{"capacity larger than file", set(segtest.OffCap, 8192), ErrSizeMismatch, "size"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.mut(segtest.NewHeap(4096))
			check := func(how string, err error) {
				t.Helper()
				var he *HeaderError
				if !errors.Is(err, tc.kind) || !errors.As(err, &he) || he.Field != tc.field {
					t.Fatalf("%s: got %v, want %v on field %s", how, err, tc.kind, tc.field)
				}
				if he.Error() == "" {
					t.Fatal("empty message")
				}
			}
			mem := segtest.NewMem(len(data))
			copy(mem, data)
			_, err := decodeHeader(mem, int64(len(mem)), "mem")
			check("decodeHeader", err)

			path := filepath.Join(t.TempDir(), "seg")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			r, err := OpenPath(path)
			if err == nil {
				r.Close()
			}
			check("OpenPath", err)
		})
	}
}

func TestOpenPathValid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seg")
	if err := os.WriteFile(path, validSegment(), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := OpenPath(path, WithStart(Beginning))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h := r.Header()
	if h.Capacity != 4096 || h.Version != 1 || h.DataOffset != 8192 || h.Epoch != 1 || r.MaxPayload() != 1008 || r.Path() != path {
		t.Fatalf("header %+v", h)
	}
	got, missed, err := drain(t, r)
	if err != nil || got+missed != 30 {
		t.Fatalf("received %d missed %d err %v", got, missed, err)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open("shmcast-go-test-does-not-exist"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing shm object: %v", err)
	}
	if _, err := OpenPath(filepath.Join(t.TempDir(), "nope")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := OpenPath(t.TempDir()); err == nil {
		t.Fatal("opened a directory")
	}
	if os.Geteuid() != 0 { // root may read anything
		path := filepath.Join(t.TempDir(), "seg")
		if err := os.WriteFile(path, validSegment(), 0); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenPath(path); !errors.Is(err, fs.ErrPermission) {
			t.Fatalf("unreadable file: %v", err)
		}
	}
}

// TestHostileRing corrupts control words and records of a valid segment:
// each case must end in an error wrapping ErrCorrupt (or a lap), never a
// panic, an out-of-range access or a spin.
func TestHostileRing(t *testing.T) {
	type tc struct {
		name  string
		start Start
		mut   func(w *segtest.Writer, first, last uint64) // positions of the first and latest records
	}
	cases := []tc{
		{"length beyond max payload", Beginning, func(w *segtest.Writer, first, _ uint64) {
			w.Store(w.RingOff(first+8), 5000)
		}},
		{"length 2^32-1", Beginning, func(w *segtest.Writer, first, _ uint64) {
			w.Store(w.RingOff(first+8), 0xFFFF_FFFF)
		}},
		{"record runs past the end of the ring", Newest, func(w *segtest.Writer, _, last uint64) {
			w.Store(w.RingOff(last+8), uint64(4096-(last&4095))-8)
		}},
		{"padding at ring offset 0", Beginning, func(w *segtest.Writer, first, _ uint64) {
			w.Store(w.RingOff(first), 1|segtest.Pad)
		}},
		{"commit word at the last word of the ring", Beginning, func(w *segtest.Writer, _, _ uint64) {
			w.Store(segtest.OffIntent, 1<<20)
			w.Store(segtest.OffHead, 1<<20-8)
			w.Store(w.RingOff(1<<20-8), 1000)
		}},
		{"head not a multiple of 8", Beginning, func(w *segtest.Writer, _, _ uint64) {
			w.Store(segtest.OffIntent, 1<<30)
			w.Store(segtest.OffHead, 1<<30-4001)
		}},
		{"head far behind intent", Beginning, func(w *segtest.Writer, _, _ uint64) {
			w.Store(segtest.OffIntent, 1<<30)
		}},
		{"intent at the top of the range", Beginning, func(w *segtest.Writer, _, _ uint64) {
			w.Store(segtest.OffIntent, ^uint64(0))
			w.Store(segtest.OffHead, ^uint64(0)-4095)
		}},
		{"head record older than the reader", Oldest, func(w *segtest.Writer, first, _ uint64) {
			w.Store(segtest.OffIntent, 1<<20)
			w.Store(segtest.OffHead, 1<<20-4096)
			w.Store(w.RingOff(1<<20-4096), 0) // seq 0
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := segtest.NewHeap(4096)
			var first, last uint64
			for i := range 10 {
				_, pos := w.PublishPattern(20 + i)
				if i == 0 {
					first = pos
				}
				last = pos
			}
			r := mustOpenMem(t, w, c.start)
			c.mut(w, first, last)
			_, _, err := drain(t, r)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want ErrCorrupt", err)
			}
			var ce *CorruptError
			if !errors.As(err, &ce) || ce.Reason == "" {
				t.Fatalf("no CorruptError details: %v", err)
			}
		})
	}
}

func TestHostileJoin(t *testing.T) {
	for name, mut := range map[string]func(w *segtest.Writer){
		"latest unaligned":      func(w *segtest.Writer) { w.Store(segtest.OffLatest, 12) },
		"latest at padding":     func(w *segtest.Writer) { w.Store(w.RingOff(w.Load(segtest.OffLatest)), 3|segtest.Pad) },
		"latest at empty":       func(w *segtest.Writer) { w.Store(w.RingOff(w.Load(segtest.OffLatest)), 0) },
		"latest length too big": func(w *segtest.Writer) { w.Store(w.RingOff(w.Load(segtest.OffLatest)+8), 4000) },
		"latest at last word": func(w *segtest.Writer) {
			w.Store(segtest.OffLatest, 4088)
			w.Store(w.RingOff(4088), 7)
		},
		"head unaligned": func(w *segtest.Writer) { w.Store(segtest.OffHead, 3) },
		"head at zero":   func(w *segtest.Writer) { w.Store(segtest.OffHead, 4000) },
	} {
		w := segtest.NewHeap(4096)
		for range 5 {
			w.PublishPattern(8)
		}
		mut(w)
		fails := 0
		for _, s := range []Start{Oldest, Newest, Next} {
			r, err := openMem(w.Mem, s)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%s, %v: got %v, want ErrCorrupt", name, s, err)
				}
				fails++
				continue
			}
			drain(t, r) // may fail or not; must not panic
		}
		if fails == 0 {
			t.Errorf("%s: every start accepted the segment", name)
		}
	}
}

// TestRandomMutations flips random words of valid segments and reads them
// from every start: anything but a panic or a hang is acceptable.
func TestRandomMutations(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	iterations := 3000
	if testing.Short() || raceEnabled {
		iterations = 300
	}
	buf := make([]byte, 4096)
	for range iterations {
		w := segtest.NewHeap(4096)
		for range rng.IntN(200) {
			w.PublishPattern(rng.IntN(1009))
		}
		for range 1 + rng.IntN(4) {
			off := uint64(rng.IntN(len(w.Mem)/8)) * 8
			if rng.IntN(2) == 0 {
				off = uint64(0x80 + 8*rng.IntN(32)) // the control words
			}
			var v uint64
			switch rng.IntN(4) {
			case 0:
				v = rng.Uint64()
			case 1:
				v = w.Load(off) ^ 1<<rng.IntN(64)
			case 2:
				v = w.Load(off) + uint64(rng.IntN(16)) - 8
			case 3:
				v = uint64(rng.IntN(20000))
			}
			w.Store(off, v)
		}
		for _, s := range []Start{Beginning, Oldest, Newest, Next} {
			r, err := openMem(w.Mem, s)
			if err != nil {
				continue
			}
			for range 300 {
				if _, err := r.TryRead(buf); err != nil && !errors.Is(err, ErrLagged) {
					break
				}
			}
		}
	}
}
