package shmcast

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shmcast/shmcast/go-client/internal/segtest"
)

// Lossless mode, the reader's side (docs/LAYOUT.md, "Lossless mode"),
// against the fixture's emulation of a gated producer (segtest: refresh,
// gate, producer_blocked and gate_wake, evicting a slot).

// losslessSegment creates a lossless segment file with slots reader slots.
func losslessSegment(t testing.TB, capacity uint64, slots int) (*segtest.Writer, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "seg")
	w, unmap, err := segtest.CreateLossless(path, capacity, slots)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unmap)
	return w, path
}

// openRegistered opens path WithLossless (and opts) and closes the Reader
// when the test ends.
func openRegistered(t testing.TB, path string, opts ...Option) *Reader {
	t.Helper()
	r, err := OpenPath(path, append([]Option{WithLossless()}, opts...)...)
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// slotLock is the lock on slot i as another open file description sees it
// (F_OFD_GETLK): F_WRLCK while a live owner holds it, F_UNLCK when free.
func slotLock(t testing.TB, path string, i int) int16 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	typ, err := segtest.SlotLockType(f, i)
	if err != nil {
		t.Fatal(err)
	}
	return typ
}

// wantSlot checks slot i's state and generation.
func wantSlot(t testing.TB, w *segtest.Writer, i int, state, gen uint64) segtest.SlotView {
	t.Helper()
	v := w.Slot(i)
	if v.State != state || v.Gen != gen {
		t.Fatalf("slot %d: state %d generation %d, want state %d generation %d", i, v.State, v.Gen, state, gen)
	}
	return v
}

func TestLosslessSegmentReadLossy(t *testing.T) {
	w, path := losslessSegment(t, 4096, 3)
	for i := range 50 {
		w.PublishPattern(i * 7 % 300)
	}
	for _, open := range []func() (*Reader, error){
		func() (*Reader, error) { return OpenPath(path, WithStart(Beginning)) },
		func() (*Reader, error) { return openMem(w.Mem, Beginning) },
	} {
		r, err := open()
		if err != nil {
			t.Fatal(err)
		}
		h := r.Header()
		if !h.Lossless() || h.ReaderSlots != 3 || h.MaxBlock() != 0 {
			t.Fatalf("header %+v", h)
		}
		if _, ok := r.Slot(); ok {
			t.Fatal("a Reader opened without WithLossless holds a slot")
		}
		got, missed, err := drain(t, r)
		if err != nil || got+missed != 50 || missed == 0 {
			t.Fatalf("received %d missed %d err %v", got, missed, err)
		}
		r.Close()
	}
	// A lossy reader writes nothing of lossless mode.
	if w.RegGen() != 0 || w.Slot(0) != (segtest.SlotView{}) {
		t.Fatalf("reg_gen %d, slot 0 %+v", w.RegGen(), w.Slot(0))
	}
	if h := mustOpenMem(t, segtest.NewHeap(4096), Oldest).Header(); h.Lossless() || h.ReaderSlots != 0 {
		t.Fatalf("lossy header %+v", h)
	}
}

func TestRegisterSlots(t *testing.T) {
	w, path := losslessSegment(t, 4096, 2)
	for range 3 {
		w.PublishPattern(10)
	}
	before := uint64(time.Now().UnixNano())
	r0 := openRegistered(t, path, WithStart(Beginning))
	r1 := openRegistered(t, path, WithStart(Next))
	for i, r := range []*Reader{r0, r1} {
		if slot, ok := r.Slot(); !ok || slot != i {
			t.Fatalf("reader %d: slot %d, %v", i, slot, ok)
		}
		v := wantSlot(t, w, i, segtest.Active, 1)
		if v.PID != uint64(os.Getpid()) || v.RegNs < before || v.RegNs > uint64(time.Now().UnixNano()) {
			t.Fatalf("slot %d: %+v", i, v)
		}
		if v.Pos != r.pos || v.Seq != r.seq {
			t.Fatalf("slot %d: pos %d seq %d, reader at %d, %d", i, v.Pos, v.Seq, r.pos, r.seq)
		}
		if typ := slotLock(t, path, i); typ != syscall.F_WRLCK {
			t.Fatalf("slot %d: lock type %d, want F_WRLCK", i, typ)
		}
	}
	if s := w.Slot(0); s.Pos != 0 || s.Seq != 1 {
		t.Fatalf("the beginning reader registered at %d, %d", s.Pos, s.Seq)
	}
	if s := w.Slot(1); s.Seq != 4 {
		t.Fatalf("the next reader registered expecting seq %d, want 4", s.Seq)
	}
	if g := w.RegGen(); g != 2 {
		t.Fatalf("reg_gen %d after two registrations", g)
	}

	// Every slot is taken: an error, never a lossy Reader.
	_, err := OpenPath(path, WithLossless())
	var re *RegisterError
	if !errors.Is(err, ErrNoFreeSlot) || !errors.As(err, &re) || re.Slots != 2 || re.Path != path ||
		!strings.Contains(err.Error(), "all 2 reader slots") {
		t.Fatalf("third registration: %v", err)
	}
	if g := w.RegGen(); g != 2 {
		t.Fatalf("reg_gen %d after a failed registration", g)
	}

	// Close gives the slot back: FREE under the same generation, reg_gen
	// announced, lock released.
	if err := r0.Close(); err != nil {
		t.Fatal(err)
	}
	wantSlot(t, w, 0, segtest.Free, 1)
	if g := w.RegGen(); g != 3 {
		t.Fatalf("reg_gen %d after unregistering", g)
	}
	if typ := slotLock(t, path, 0); typ != syscall.F_UNLCK {
		t.Fatalf("slot 0 lock type %d after Close", typ)
	}
	if _, ok := r0.Slot(); ok {
		t.Fatal("a closed Reader still holds its slot")
	}
	r0.Close() // idempotent: nothing changes
	if g := w.RegGen(); g != 3 {
		t.Fatalf("reg_gen %d after a second Close", g)
	}

	// The freed slot is taken again, under a new generation.
	r2 := openRegistered(t, path, WithStart(Oldest))
	if slot, ok := r2.Slot(); !ok || slot != 0 {
		t.Fatalf("slot %d, %v", slot, ok)
	}
	wantSlot(t, w, 0, segtest.Active, 2)
	wantSlot(t, w, 1, segtest.Active, 1)
	// And the registered readers read as usual.
	if got, missed, err := drain(t, r2); got != 3 || missed != 0 || err != nil {
		t.Fatalf("received %d missed %d err %v", got, missed, err)
	}
}

func TestRegisterNotLossless(t *testing.T) {
	_, path := segtest.Temp(t, 4096)
	_, err := OpenPath(path, WithLossless())
	var re *RegisterError
	if !errors.Is(err, ErrNotLossless) || !errors.As(err, &re) || re.Slots != 0 ||
		!strings.Contains(err.Error(), "not a lossless segment") {
		t.Fatalf("got %v", err)
	}
	// A file that is not a segment at all is a header error, first.
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, make([]byte, 8192+4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPath(bad, WithLossless()); !errors.Is(err, ErrNotInitialized) {
		t.Fatalf("uninitialised file: %v", err)
	}
	// A missing one is the operating system's error.
	if _, err := OpenPath(filepath.Join(t.TempDir(), "none"), WithLossless()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

// TestRegisterNeedsWriteAccess: a lossless segment the process may only
// read cannot be registered on, and says so with a permission error, while
// a lossy Reader of the same file still opens. Root may write anything,
// so as root the check runs in a child process of the test binary as
// nobody.
func TestRegisterNeedsWriteAccess(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		t.Skip("helper process")
	}
	w, path := losslessSegment(t, 4096, 2)
	w.PublishPattern(10)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	var out string
	if os.Geteuid() != 0 {
		if err := os.Chmod(path, 0o444); err != nil {
			t.Fatal(err)
		}
		out = openAndReport(path)
	} else {
		out = runAsNobody(t, path)
	}
	want := "lossless: permission=true register=true | lossy: ok slot=false"
	if !strings.HasPrefix(out, want) {
		t.Fatalf("got %q, want %q", out, want)
	}
	if w.RegGen() != 0 || w.Slot(0).State != segtest.Free {
		t.Fatalf("a refused registration wrote the slots: reg_gen %d, slot 0 %+v", w.RegGen(), w.Slot(0))
	}
}

// openAndReport tries to register on path and then to open it lossy, and
// describes what happened (for TestRegisterNeedsWriteAccess).
func openAndReport(path string) string {
	var b strings.Builder
	r, err := OpenPath(path, WithLossless())
	if err == nil {
		r.Close()
		b.WriteString("lossless: registered")
	} else {
		var re *RegisterError
		fmt.Fprintf(&b, "lossless: permission=%v register=%v", errors.Is(err, fs.ErrPermission), errors.As(err, &re))
	}
	r, err = OpenPath(path, WithStart(Beginning))
	if err != nil {
		fmt.Fprintf(&b, " | lossy: %v", err)
	} else {
		_, ok := r.Slot()
		fmt.Fprintf(&b, " | lossy: ok slot=%v", ok)
		r.Close()
	}
	return b.String()
}

const helperEnv = "SHMCAST_TEST_HELPER"

// TestLosslessHelperProcess is not a test: it is the child process of the
// tests that need one, selected by SHMCAST_TEST_HELPER.
//   - "report": openAndReport(SHMCAST_TEST_SEGMENT), printed.
//   - "hold": register on the segment, print "slot N", and wait to be
//     killed.
func TestLosslessHelperProcess(t *testing.T) {
	path := os.Getenv("SHMCAST_TEST_SEGMENT")
	switch os.Getenv(helperEnv) {
	case "":
		t.Skip("only a helper process")
	case "report":
		fmt.Println(openAndReport(path))
	case "hold":
		r, err := OpenPath(path, WithLossless())
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		slot, _ := r.Slot()
		fmt.Println("slot", slot)
		time.Sleep(time.Minute) // killed long before
		os.Exit(2)
	}
}

// helper starts the test binary as a helper process.
func helper(t *testing.T, mode, path string, attr *syscall.SysProcAttr, bin string) *exec.Cmd {
	t.Helper()
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "-test.run=^TestLosslessHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, "SHMCAST_TEST_SEGMENT="+path)
	cmd.SysProcAttr = attr
	cmd.Stderr = os.Stderr
	return cmd
}

// runAsNobody runs openAndReport(path) in a child process as user and
// group 65534, from a copy of the test binary that user may execute.
func runAsNobody(t *testing.T, path string) string {
	dir := filepath.Dir(path)
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "helper.test")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := helper(t, "report", path, &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}},
	}, bin)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Skipf("cannot run a child process as nobody: %v", err)
		}
		t.Fatalf("helper: %v: %s", err, out)
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}

// TestKilledRegisteredReaderReleasesSlotLock: a registered reader in
// another process that is killed (kill -9, no Close) leaves its slot lock
// free, which is how the producer learns that it is dead; its slot stays
// ACTIVE until the producer frees it, and a new reader can take the lock.
func TestKilledRegisteredReaderReleasesSlotLock(t *testing.T) {
	if os.Getenv(helperEnv) != "" {
		t.Skip("helper process")
	}
	w, path := losslessSegment(t, 4096, 1)
	w.PublishPattern(10)
	cmd := helper(t, "hold", path, nil, "")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.ENOEXEC) { // an emulated test binary
			t.Skipf("cannot run the test binary as a child process: %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "slot 0\n" {
		t.Fatalf("helper said %q, %v", line, err)
	}
	v := wantSlot(t, w, 0, segtest.Active, 1)
	if v.PID != uint64(cmd.Process.Pid) {
		t.Fatalf("slot pid %d, helper is %d", v.PID, cmd.Process.Pid)
	}
	if typ := slotLock(t, path, 0); typ != syscall.F_WRLCK {
		t.Fatalf("lock type %d while the helper lives", typ)
	}
	if _, err := OpenPath(path, WithLossless()); !errors.Is(err, ErrNoFreeSlot) {
		t.Fatalf("registering while the helper holds the only slot: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if typ := slotLock(t, path, 0); typ != syscall.F_UNLCK {
		t.Fatalf("lock type %d after the helper was killed", typ)
	}
	wantSlot(t, w, 0, segtest.Active, 1) // the producer frees it, not the kernel
	// The lock is free, so a new reader takes the slot, under a new generation.
	r := openRegistered(t, path)
	if slot, ok := r.Slot(); !ok || slot != 0 {
		t.Fatalf("slot %d, %v", slot, ok)
	}
	wantSlot(t, w, 0, segtest.Active, 2)
}

// TestProgressPublished: a registered reader stores its progress to its
// slot once every capacity/8 bytes consumed, not after every message, and
// all of it whenever it finds no new message.
func TestProgressPublished(t *testing.T) {
	const capacity = 64 << 10
	const batch = capacity / 8
	for _, zeroCopy := range []bool{false, true} {
		t.Run(fmt.Sprintf("zeroCopy=%v", zeroCopy), func(t *testing.T) {
			w, path := losslessSegment(t, capacity, 1)
			r := openRegistered(t, path, WithStart(Beginning))
			buf := make([]byte, r.MaxPayload())
			read := func() error {
				if zeroCopy {
					return r.TryReadFunc(func(uint64, []byte) {})
				}
				_, err := r.TryRead(buf)
				return err
			}
			published, stores := uint64(0), 0
			for round := range 3 {
				for i := range 250 {
					w.PublishPattern((round*250 + i) * 13 % 200)
				}
				for {
					err := read()
					if err == ErrNoMessage {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					// Published exactly when a batch was consumed.
					if r.pos-published >= batch {
						published = r.pos
						stores++
					}
					if v := w.Slot(0); v.Pos != published {
						t.Fatalf("reader at %d: slot pos %d, want %d", r.pos, v.Pos, published)
					}
				}
				// Nothing new: everything read is published.
				if v := w.Slot(0); v.Pos != r.pos || v.Seq != r.seq {
					t.Fatalf("idle: slot at %d, %d; reader at %d, %d", v.Pos, v.Seq, r.pos, r.seq)
				}
				published = r.pos
			}
			if stores < 3 {
				t.Fatalf("only %d batch stores over %d bytes", stores, r.pos)
			}
			wantSlot(t, w, 0, segtest.Active, 1)
		})
	}
}

// TestProducerBlockedIsWoken: a registered reader that publishes progress
// while producer_blocked is set increments gate_wake (and wakes it); one
// that has nothing new to publish, or finds producer_blocked clear, does
// not.
func TestProducerBlockedIsWoken(t *testing.T) {
	w, path := losslessSegment(t, 64<<10, 1)
	r := openRegistered(t, path, WithStart(Beginning))
	buf := make([]byte, r.MaxPayload())
	step := func(blocked uint32, publish int, wantWakes uint32) {
		t.Helper()
		w.SetProducerBlocked(blocked)
		for range publish {
			w.PublishPattern(50)
		}
		before := w.GateWake()
		for {
			if _, err := r.TryRead(buf); err == ErrNoMessage {
				break
			} else if err != nil {
				t.Fatal(err)
			}
		}
		r.TryRead(buf) // and again: nothing left to publish
		if got := w.GateWake() - before; got != wantWakes {
			t.Fatalf("blocked=%d, %d messages: gate_wake advanced by %d, want %d", blocked, publish, got, wantWakes)
		}
	}
	step(1, 10, 1) // less than a batch: one store, when idle
	step(0, 10, 0)
	step(1, 0, 0)
	step(1, 300, 3) // 300 * 72 bytes: two batches of 8 KiB, then idle
	w.SetProducerBlocked(1)
	before := w.GateWake()
	r.Close()
	if w.GateWake() != before+1 {
		t.Fatal("unregistering did not wake a blocked producer")
	}
}

// TestBlockedProducerResumes: the fixture producer, held back by a
// registered reader that does not read, sleeps on gate_wake for up to a
// minute per nap; the reader's progress must wake it each time, so the
// whole stream passes in seconds, and the reader misses nothing.
func TestBlockedProducerResumes(t *testing.T) {
	const total = 3000
	w, path := losslessSegment(t, 4096, 1)
	r := openRegistered(t, path, WithStart(Beginning))
	done := make(chan error, 1)
	go func() {
		for i := range total {
			if _, _, err := w.PublishPatternWait(i*37%400, time.Minute, time.Minute); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	start := time.Now()
	buf := make([]byte, r.MaxPayload())
	for want := uint64(1); want <= total; {
		m, err := r.TryRead(buf)
		switch {
		case err == ErrNoMessage:
			time.Sleep(100 * time.Microsecond)
		case err != nil:
			t.Fatalf("at %d: %v", want, err)
		case m.Seq != want || !VerifyPattern(m.Seq, m.Data):
			t.Fatalf("got seq %d (%d bytes), want %d", m.Seq, len(m.Data), want)
		default:
			want++
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("took %v: the producer was not woken", d)
	}
	if w.Blocked() < 10 {
		t.Fatalf("the producer was held back only %d times", w.Blocked())
	}
	t.Logf("%d messages, the producer held back %d times, %v", total, w.Blocked(), time.Since(start))
}

// TestEvicted: a reader the producer evicted reports ErrEvicted once, at
// its next progress store, gives its slot back (FREE under its
// generation, reg_gen announced, lock released) and reads on as a lossy
// reader with exact lap accounting.
func TestEvicted(t *testing.T) {
	type setup func(t *testing.T, w *segtest.Writer, r *Reader) (published uint64)
	cases := []struct {
		name   string
		run    setup
		errors []string // what the reads return before messages flow again
	}{
		{"lapped", func(t *testing.T, w *segtest.Writer, r *Reader) uint64 {
			// Held back until the ring is full, then evicted and lapped.
			n := uint64(0)
			for {
				if _, _, ok := w.TryPublish(segtest.Pattern(w.NextSeq(), 100)); !ok {
					break
				}
				n++
			}
			if !w.Evict(0) {
				t.Fatal("evict")
			}
			for range 100 {
				w.PublishPattern(100)
			}
			return n + 100
		}, []string{"evicted", "lagged"}},
		{"at a batch", func(t *testing.T, w *segtest.Writer, r *Reader) uint64 {
			// Evicted while reading, found at the next batch store, after
			// the message that completed the batch was delivered.
			for range 10 {
				w.PublishPattern(100)
			}
			if _, err := r.TryRead(make([]byte, 100)); err != nil {
				t.Fatal(err)
			}
			w.Evict(0)
			for range 100 { // 12 000 bytes: more than a batch, less than a lap
				w.PublishPattern(100)
			}
			return 110
		}, []string{"message", "evicted", "message"}},
		{"when idle", func(t *testing.T, w *segtest.Writer, r *Reader) uint64 {
			for range 5 {
				w.PublishPattern(100)
			}
			w.Evict(0)
			return 5
		}, []string{"message", "evicted"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w, path := losslessSegment(t, 64<<10, 1)
			r := openRegistered(t, path, WithStart(Beginning))
			published := tc.run(t, w, r)
			already := r.NextSeq() - 1
			var got []string
			var received, missed uint64
			evictions := 0
			buf := make([]byte, r.MaxPayload())
			for {
				m, err := r.TryRead(buf)
				var lag *LaggedError
				switch {
				case err == ErrNoMessage:
				case errors.Is(err, ErrEvicted):
					evictions++
					got = append(got, "evicted")
					if _, ok := r.Slot(); ok {
						t.Fatal("still holds a slot after ErrEvicted")
					}
					continue
				case errors.As(err, &lag):
					missed += lag.Missed
					got = append(got, "lagged")
					continue
				case err != nil:
					t.Fatal(err)
				default:
					if !VerifyPattern(m.Seq, m.Data) {
						t.Fatalf("seq %d: bad payload", m.Seq)
					}
					received++
					if len(got) == 0 || got[len(got)-1] != "message" {
						got = append(got, "message")
					}
					continue
				}
				break
			}
			if evictions != 1 || received+missed+already != published {
				t.Fatalf("evicted %d times; received %d + missed %d + %d before, of %d", evictions, received, missed, already, published)
			}
			if strings.Join(got[:len(tc.errors)], ",") != strings.Join(tc.errors, ",") {
				t.Fatalf("reads returned %v, want %v first", got, tc.errors)
			}
			wantSlot(t, w, 0, segtest.Free, 1)
			if g, e := w.RegGen(), w.Load(segtest.OffEvictions); g != 3 || e != 1 {
				t.Fatalf("reg_gen %d (want 1 + eviction + unregistering), evictions %d", g, e)
			}
			if typ := slotLock(t, path, 0); typ != syscall.F_UNLCK {
				t.Fatalf("lock type %d after the eviction", typ)
			}
			// Lossy from now on: the producer no longer waits for it, and
			// a lap is an ordinary lap.
			for range 1000 {
				if _, _, ok := w.TryPublish(segtest.Pattern(w.NextSeq(), 100)); !ok {
					t.Fatal("the producer is held back by an evicted reader")
				}
			}
			if _, err := r.TryRead(buf); !errors.Is(err, ErrLagged) {
				t.Fatalf("after the eviction: %v, want a lap", err)
			}
			// Close frees nothing more.
			r.Close()
			wantSlot(t, w, 0, segtest.Free, 1)
			if g := w.RegGen(); g != 3 {
				t.Fatalf("reg_gen %d after closing an evicted reader", g)
			}
			// The slot can be taken again.
			r2 := openRegistered(t, path)
			if slot, ok := r2.Slot(); !ok || slot != 0 {
				t.Fatalf("re-registering: slot %d, %v", slot, ok)
			}
		})
	}
}

// TestSlotTakenOver: a slot whose state a third party overwrote (another
// generation) is no longer the reader's: it reports ErrEvicted, and gives
// back only its lock, leaving the state alone.
func TestSlotTakenOver(t *testing.T) {
	w, path := losslessSegment(t, 4096, 1)
	r := openRegistered(t, path, WithStart(Beginning))
	w.PublishPattern(10)
	w.Store(segtest.SlotOff(0), 7<<2|segtest.Active)
	buf := make([]byte, 64)
	if _, err := r.TryRead(buf); err != nil {
		t.Fatal(err)
	}
	if _, err := r.TryRead(buf); err != ErrEvicted {
		t.Fatalf("got %v, want ErrEvicted", err)
	}
	if _, err := r.TryRead(buf); err != ErrNoMessage {
		t.Fatalf("got %v after the eviction", err)
	}
	wantSlot(t, w, 0, segtest.Active, 7)
	if g := w.RegGen(); g != 1 {
		t.Fatalf("reg_gen %d", g)
	}
	if typ := slotLock(t, path, 0); typ != syscall.F_UNLCK {
		t.Fatalf("lock type %d", typ)
	}
}

// TestMessagesYieldsEvicted: the iterator yields ErrEvicted as an item and
// goes on, to the end of the stream.
func TestMessagesYieldsEvicted(t *testing.T) {
	w, path := losslessSegment(t, 4096, 1)
	r := openRegistered(t, path, WithStart(Beginning), WithWait(WaitBackoff))
	for range 5 {
		w.PublishPattern(20)
	}
	w.Evict(0)
	for range 5 {
		w.PublishPattern(20)
	}
	w.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var items []string
	for m, err := range r.Messages(ctx) {
		switch {
		case err == nil:
			items = append(items, strconv.FormatUint(m.Seq, 10))
		case errors.Is(err, ErrEvicted):
			items = append(items, "evicted")
		default:
			t.Fatalf("after %v: %v", items, err)
		}
	}
	if got := strings.Join(items, " "); got != "1 2 3 4 5 6 7 8 9 10 evicted" {
		t.Fatalf("yielded %s", got)
	}
}

// TestRegisterSkipsUnprotected: a reader that joins behind what the gate
// in force protects (registering, step 6) moves forward to the first record
// at or after gate_limit - capacity: from Oldest silently, from Beginning
// with the skipped messages reported as a lap first.
func TestRegisterSkipsUnprotected(t *testing.T) {
	for _, start := range []Start{Beginning, Oldest, Newest, Next} {
		t.Run(start.String(), func(t *testing.T) {
			w, path := losslessSegment(t, 4096, 1)
			positions := map[uint64]uint64{} // seq -> position
			const published = 300
			for i := range published {
				seq, pos := w.PublishPattern(i * 53 % 500)
				positions[seq] = pos
			}
			gate := w.GateLimit()
			floor := gate - 4096
			if w.Load(segtest.OffHead)+4096 >= gate {
				t.Fatalf("the fixture's oldest record is protected already (head %d, gate %d)", w.Load(segtest.OffHead), gate)
			}
			r := openRegistered(t, path, WithStart(start))
			if v := w.Slot(0); v.Pos != r.pos || v.Seq != r.seq {
				t.Fatalf("slot at %d, %d; reader at %d, %d", v.Pos, v.Seq, r.pos, r.seq)
			}
			// The first message at or after floor (one whose padding record
			// starts before floor included).
			first := uint64(0)
			for seq := uint64(1); seq <= published; seq++ {
				if positions[seq] >= floor {
					first = seq
					break
				}
			}
			received, missed, err := drain(t, r)
			if err != nil {
				t.Fatal(err)
			}
			switch start {
			case Beginning:
				if missed != first-1 || received+missed != published {
					t.Fatalf("missed %d, want %d; received %d", missed, first-1, received)
				}
			case Oldest:
				if missed != 0 || received != published-first+1 {
					t.Fatalf("received %d missed %d, want %d from seq %d", received, missed, published-first+1, first)
				}
			case Newest:
				if received != 1 || missed != 0 {
					t.Fatalf("received %d missed %d", received, missed)
				}
			case Next:
				if received != 0 || missed != 0 {
					t.Fatalf("received %d missed %d", received, missed)
				}
			}
		})
	}
}

// TestLosslessStream: readers of every form and strategy, registered,
// receive every message of a stream through a 4 KiB ring from a producer
// that they hold back thousands of times, while a lossy reader of the
// same segment is lapped. The producer naps for up to a minute when held
// back, so a reader that failed to wake it would stall the test.
func TestLosslessStream(t *testing.T) {
	total := uint64(20000)
	if testing.Short() {
		total = 3000
	}
	w, path := losslessSegment(t, 4096, 4)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type result struct {
		name             string
		received, missed uint64
		err              error
	}
	results := make(chan result, 4)
	check := func(res *result, seq uint64, p []byte) {
		if res.err == nil && (seq != res.received+res.missed+1 || !VerifyPattern(seq, p) || len(p) != PatternLen(seq, 1, 1000)) {
			res.err = fmt.Errorf("seq %d (%d bytes) after %d received, %d missed", seq, len(p), res.received, res.missed)
		}
		res.received++
	}
	readers := []struct {
		name string
		opts []Option
		read func(r *Reader, res *result)
	}{
		{"Read/block", []Option{WithLossless(), longPark}, func(r *Reader, res *result) {
			buf := make([]byte, r.MaxPayload())
			for res.err == nil {
				m, err := r.Read(ctx, buf)
				if err != nil {
					if !errors.Is(err, ErrProducerGone) {
						res.err = err
					}
					return
				}
				check(res, m.Seq, m.Data)
			}
		}},
		{"ReadFunc/spin", []Option{WithLossless(), WithWait(WaitSpin)}, func(r *Reader, res *result) {
			for res.err == nil {
				err := r.ReadFunc(ctx, func(seq uint64, p []byte) { check(res, seq, p) })
				if err != nil {
					if !errors.Is(err, ErrProducerGone) {
						res.err = err
					}
					return
				}
			}
		}},
		{"Messages/backoff", []Option{WithLossless(), WithWait(WaitBackoff)}, func(r *Reader, res *result) {
			for m, err := range r.Messages(ctx) {
				if err != nil {
					res.err = err
					return
				}
				check(res, m.Seq, m.Data)
			}
		}},
		{"lossy Messages/block", nil, func(r *Reader, res *result) {
			for m, err := range r.Messages(ctx) {
				var lag *LaggedError
				if errors.As(err, &lag) {
					res.missed += lag.Missed
					continue
				}
				if err != nil {
					res.err = err
					return
				}
				check(res, m.Seq, m.Data)
			}
		}},
	}
	var wg sync.WaitGroup
	for _, rd := range readers {
		r, err := OpenPath(path, append([]Option{WithStart(Beginning)}, rd.opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			res := result{name: rd.name}
			rd.read(r, &res)
			results <- res
		}()
	}
	start := time.Now()
	for i := range total {
		if _, _, err := w.PublishPatternWait(PatternLen(i+1, 1, 1000), time.Minute, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	w.Kill()
	wg.Wait()
	close(results)
	for res := range results {
		if res.err != nil {
			t.Errorf("%s: %v", res.name, res.err)
		}
		if res.received+res.missed != total || (!strings.HasPrefix(res.name, "lossy") && res.missed != 0) {
			t.Errorf("%s: received %d, missed %d, of %d", res.name, res.received, res.missed, total)
		}
		t.Logf("%s: received %d, missed %d", res.name, res.received, res.missed)
	}
	if w.Blocked() < total/100 {
		t.Errorf("the producer was held back only %d times", w.Blocked())
	}
	t.Logf("%d messages in %v, the producer held back %d times", total, elapsed, w.Blocked())
	for i := range 4 {
		if v := w.Slot(i); v.State != segtest.Free {
			t.Errorf("slot %d not freed after Close: %+v", i, v)
		}
	}
}

// TestRegisteredReadAllocs: progress stores, the wake-up of a blocked
// producer and idle polls of a registered Reader allocate nothing.
func TestRegisteredReadAllocs(t *testing.T) {
	w, path := losslessSegment(t, 64<<10, 1)
	r := openRegistered(t, path, WithStart(Beginning))
	w.SetProducerBlocked(1) // every store also wakes
	buf := make([]byte, r.MaxPayload())
	var sink uint64
	fn := func(seq uint64, p []byte) { sink += seq }
	for name, read := range map[string]func(){
		"TryRead":     func() { r.TryRead(buf) },
		"TryReadFunc": func() { r.TryReadFunc(fn) },
	} {
		const runs = 100
		for range runs / 2 { // 50 KiB: six batches, then idle polls
			w.PublishPattern(1000)
		}
		if allocs := testing.AllocsPerRun(runs, read); allocs != 0 {
			t.Errorf("%s: %v allocations per read, want 0", name, allocs)
		}
	}
	if w.GateWake() < 4 {
		t.Fatalf("gate_wake %d: the test did not store progress", w.GateWake())
	}
	if _, ok := r.Slot(); !ok {
		t.Fatal("lost the slot")
	}
}

// TestRegisterSkipStopsAfterPadding: the first record at or after the
// floor may be a message whose padding record starts before the floor;
// the registrant moves to that message and delivers it, rather than
// passing over it with the padding.
func TestRegisterSkipStopsAfterPadding(t *testing.T) {
	w, path := losslessSegment(t, 4096, 1)
	var target, targetPos uint64
	for w.NextSeq() < 12 {
		prevEnd := w.Tail()
		seq, pos := w.PublishPattern(1000) // 1016 bytes: three a lap, then padding
		if pos%4096 == 0 && pos > prevEnd && target == 0 && pos > 4096 {
			target, targetPos = seq, pos
		}
	}
	if target == 0 {
		t.Fatal("no message after a padding record")
	}
	head := w.Load(segtest.OffHead)
	if head >= targetPos-8 {
		t.Fatalf("head %d is not before the padding of %d", head, targetPos)
	}
	// The gate in force protects exactly from the message on: its padding
	// record, before it, is not protected.
	w.Store(segtest.OffGateLimit, targetPos+4096)
	r := openRegistered(t, path, WithStart(Oldest))
	buf := make([]byte, r.MaxPayload())
	m, err := r.TryRead(buf)
	if err != nil || m.Seq != target {
		t.Fatalf("first read: seq %d, %v; want seq %d", m.Seq, err, target)
	}
}
