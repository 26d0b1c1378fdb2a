package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	shmcast "github.com/shmcast/shmcast/go-client"
	"github.com/shmcast/shmcast/go-client/internal/segtest"
)

// specFor is the harness's PeerSpec for role on the segment at path, with
// extra link fields (wait, lossless).
func specFor(t *testing.T, role, path string, size int, count uint64, link map[string]any) string {
	t.Helper()
	l := map[string]any{"read": path}
	for k, v := range link {
		l[k] = v
	}
	b, err := json.Marshal(map[string]any{
		"role": role, "transport": "shm", "link": l, "size": size, "count": count, "timeout_ms": 10000,
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func runReader(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

type report struct {
	Received    uint64   `json:"received"`
	Lagged      uint64   `json:"lagged"`
	Bad         uint64   `json:"bad"`
	MsgsPerS    float64  `json:"msgs_per_s"`
	BytesPerS   float64  `json:"bytes_per_s"`
	Checksum    uint64   `json:"checksum"`
	LatenciesNS []uint64 `json:"latencies_ns"`
}

// parse checks that out is the handshake, "ready" then one JSON line with
// only the report's fields, and decodes the report.
func parse(t *testing.T, out string) report {
	t.Helper()
	line, ok := strings.CutPrefix(out, "ready\n")
	if !ok || strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") {
		t.Fatalf("output %q is not \"ready\" and one line", out)
	}
	var r report
	dec := json.NewDecoder(strings.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("decode %q: %v", line, err)
	}
	return r
}

// payload is the harness's message of size bytes stamped with counter: the
// pattern of seed 0x5EED with the counter in its first 8 bytes (as Rust's
// payload.rs builds it, written out again here).
func payload(size int, counter uint64) []byte {
	p := shmcast.Pattern(0x5EED, size)
	binary.LittleEndian.PutUint64(p, counter)
	return p
}

// wantSum is the checksum of p, computed byte by byte (an independent
// formulation of "sum of the little-endian words plus the tail bytes").
func wantSum(p []byte) uint64 {
	var s uint64
	full := len(p) &^ 7
	for i, b := range p {
		if i < full {
			s += uint64(b) << (8 * (i % 8))
		} else {
			s += uint64(b)
		}
	}
	return s
}

// publish publishes n messages of size bytes, each stamped with its
// sequence number, and returns the sum of their checksums.
func publish(w *segtest.Writer, n, size int) uint64 {
	var sum uint64
	for range n {
		p := payload(size, w.NextSeq())
		w.Publish(p)
		sum += wantSum(p)
	}
	return sum
}

func TestConsume(t *testing.T) {
	for _, size := range []int{8, 13, 64, 1000} {
		w, path := segtest.Temp(t, 1<<16)
		sum := publish(w, 50, size)
		code, out, errOut := runReader(specFor(t, "consume", path, size, 50, nil))
		if code != 0 || errOut != "" {
			t.Fatalf("size %d: code %d, stderr %q", size, code, errOut)
		}
		r := parse(t, out)
		if r.Received != 50 || r.Lagged != 0 || r.Bad != 0 || r.Checksum != sum || r.MsgsPerS <= 0 {
			t.Fatalf("size %d: got %+v, want 50 received, none lagged or bad, checksum %d, a positive rate", size, r, sum)
		}
		if ratio := r.BytesPerS / r.MsgsPerS; ratio < float64(size)*0.99 || ratio > float64(size)*1.01 {
			t.Fatalf("size %d: bytes_per_s / msgs_per_s = %f", size, ratio)
		}
	}
}

// TestBadPayloads: a message of another length, one stamped with another
// counter than its sequence number, and one with a flipped byte each count
// as bad; the others do not.
func TestBadPayloads(t *testing.T) {
	w, path := segtest.Temp(t, 1<<16)
	w.Publish(payload(64, 1))
	w.Publish(payload(63, 2))
	w.Publish(payload(64, 7))
	flipped := payload(64, 4)
	flipped[40] ^= 1
	w.Publish(flipped)
	w.Publish(payload(64, 5))
	code, out, errOut := runReader(specFor(t, "consume", path, 64, 5, nil))
	if code != 0 {
		t.Fatalf("code %d, stderr %q", code, errOut)
	}
	if r := parse(t, out); r.Received != 5 || r.Bad != 3 {
		t.Fatalf("got %+v, want 5 received, 3 bad", r)
	}
}

// TestWaitStrategies: with every link.wait, a reader that has to wait for
// a producer publishing in spells, pausing in between, reports the same
// counts and checksum.
func TestWaitStrategies(t *testing.T) {
	for _, wait := range []string{"spin", "yield", "backoff", "block"} {
		w, path := segtest.Temp(t, 1<<16)
		var sum uint64
		for i := range 60 {
			sum += wantSum(payload(100, uint64(i+1)))
		}
		go func() {
			for i := range 60 {
				if i%20 == 0 {
					time.Sleep(20 * time.Millisecond) // long enough to park
				}
				w.Publish(payload(100, uint64(i+1)))
			}
		}()
		code, out, errOut := runReader(specFor(t, "consume", path, 100, 60, map[string]any{"wait": wait}))
		if code != 0 || errOut != "" {
			t.Fatalf("wait %s: code %d, stderr %q", wait, code, errOut)
		}
		if r := parse(t, out); r.Received != 60 || r.Lagged != 0 || r.Bad != 0 || r.Checksum != sum {
			t.Fatalf("wait %s: got %+v, want 60 received, checksum %d", wait, r, sum)
		}
		if wait == "block" && w.Wakes() == 0 {
			t.Errorf("wait block: the reader was never woken from a park")
		}
	}
}

func TestLaggedCounts(t *testing.T) {
	w, path := segtest.Temp(t, 4096)
	sums := map[uint64]uint64{}
	for range 100 {
		p := payload(300, w.NextSeq())
		seq, _ := w.Publish(p)
		sums[seq] = wantSum(p)
	}
	code, out, errOut := runReader(specFor(t, "consume", path, 300, 100, nil))
	if code != 0 {
		t.Fatalf("code %d, stderr %q", code, errOut)
	}
	r := parse(t, out)
	// Reading from Beginning: the first read reports everything overwritten,
	// then every retained message (the last `received` ones) is delivered.
	var want uint64
	for seq := r.Lagged + 1; seq <= 100; seq++ {
		want += sums[seq]
	}
	if r.Lagged == 0 || r.Received+r.Lagged != 100 || r.Bad != 0 || r.Checksum != want {
		t.Fatalf("got %+v, want lagged > 0, received + lagged = 100, checksum %d", r, want)
	}
}

// TestLossless: with link.lossless the reader registers in a reader slot
// of a lossless segment before it says ready, so a producer that publishes
// far more than the ring holds, as fast as the gate lets it, never laps it;
// the slot is given back at the end.
func TestLossless(t *testing.T) {
	for _, wait := range []string{"spin", "block"} {
		path := filepath.Join(t.TempDir(), "seg")
		w, unmap, err := segtest.CreateLossless(path, 4096, 2)
		if err != nil {
			t.Fatal(err)
		}
		const count, size = 400, 300 // 30 laps of a 4 KiB ring
		type outcome struct {
			code           int
			stdout, stderr string
		}
		done := make(chan outcome, 1)
		go func() {
			code, out, errOut := runReader(specFor(t, "consume", path, size, count,
				map[string]any{"wait": wait, "lossless": true}))
			done <- outcome{code, out, errOut}
		}()
		deadline := time.Now().Add(10 * time.Second)
		for w.Slot(0).State != segtest.Active {
			if time.Now().After(deadline) {
				t.Fatalf("wait %s: the reader did not register", wait)
			}
			time.Sleep(time.Millisecond)
		}
		var sum uint64
		for range count {
			p := payload(size, w.NextSeq())
			if _, _, _, err := w.PublishWait(p, time.Millisecond, 10*time.Second); err != nil {
				t.Fatalf("wait %s: %v", wait, err)
			}
			sum += wantSum(p)
		}
		o := <-done
		slot := w.Slot(0)
		unmap()
		if o.code != 0 || o.stderr != "" {
			t.Fatalf("wait %s: code %d, stderr %q", wait, o.code, o.stderr)
		}
		if r := parse(t, o.stdout); r.Received != count || r.Lagged != 0 || r.Bad != 0 || r.Checksum != sum {
			t.Fatalf("wait %s: got %+v, want %d received, 0 lagged, checksum %d", wait, r, count, sum)
		}
		if slot.State != segtest.Free {
			t.Errorf("wait %s: slot 0 is %+v after the reader closed, want it free", wait, slot)
		}
	}
}

// TestTimestamp: messages stamped 0 are warm-up (counted, checked, not
// measured); each stamped one gives a sample of now minus its stamp.
func TestTimestamp(t *testing.T) {
	w, path := segtest.Temp(t, 1<<16)
	for range 5 {
		w.Publish(payload(64, 0))
	}
	for range 20 {
		w.Publish(payload(64, uint64(time.Now().UnixNano())))
	}
	w.Publish(payload(32, uint64(time.Now().UnixNano()))) // the wrong length: bad
	code, out, errOut := runReader(specFor(t, "timestamp", path, 64, 26, nil))
	if code != 0 || errOut != "" {
		t.Fatalf("code %d, stderr %q", code, errOut)
	}
	r := parse(t, out)
	if r.Received != 26 || r.Lagged != 0 || r.Bad != 1 || len(r.LatenciesNS) != 21 {
		t.Fatalf("got %+v, want 26 received, 1 bad, 21 samples", r)
	}
	for _, l := range r.LatenciesNS {
		if l == 0 || l > uint64(time.Minute) {
			t.Fatalf("sample %d ns", l)
		}
	}
}

// TestWaitsForSegment starts the reader before the segment exists; the
// segment is then created and filled while the reader spins on it.
func TestWaitsForSegment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seg")
	type res struct {
		code        int
		out, errOut string
	}
	done := make(chan res, 1)
	spec := specFor(t, "consume", path, 64, 1000, nil)
	go func() {
		code, out, errOut := runReader(spec)
		done <- res{code, out, errOut}
	}()
	time.Sleep(50 * time.Millisecond)
	w, unmap, err := segtest.Create(path, 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	defer unmap()
	sum := publish(w, 1000, 64)
	got := <-done
	if got.code != 0 {
		t.Fatalf("code %d, stderr %q", got.code, got.errOut)
	}
	r := parse(t, got.out)
	if r.Received+r.Lagged != 1000 || r.Bad != 0 || (r.Lagged == 0 && r.Checksum != sum) {
		t.Fatalf("got %+v, want received + lagged = 1000 (checksum %d if nothing lagged)", r, sum)
	}
}

func TestErrors(t *testing.T) {
	w, path := segtest.Temp(t, 4096)
	w.Publish(payload(64, 1))
	w.Publish([]byte{1, 2, 3, 4})
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.WriteFile(bad, append([]byte("NOTSHMCA"), make([]byte, 8192+4096-8)...), 0o600); err != nil {
		t.Fatal(err)
	}
	good := func(edit func(m map[string]any)) string {
		m := map[string]any{"role": "consume", "transport": "shm", "link": map[string]any{"read": "x"}, "size": 64, "count": 1}
		edit(m)
		b, _ := json.Marshal(m)
		return string(b)
	}
	timeout50 := func(role, p string, count uint64, link map[string]any) string {
		s := specFor(t, role, p, 64, count, link)
		return strings.Replace(s, `"timeout_ms":10000`, `"timeout_ms":50`, 1)
	}
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{}, 2, "expected one SPEC argument, got 0"},
		{[]string{"{}", "{}"}, 2, "expected one SPEC argument, got 2"},
		{[]string{"consume"}, 2, "invalid SPEC"},
		{[]string{good(func(m map[string]any) { m["bogus"] = 1 })}, 2, `unknown field "bogus"`},
		{[]string{good(func(m map[string]any) { m["role"] = "pong" })}, 2, `invalid role "pong"`},
		{[]string{good(func(m map[string]any) { m["transport"] = "pipe" })}, 2, `invalid transport "pipe"`},
		{[]string{good(func(m map[string]any) { m["link"] = map[string]any{} })}, 2, "link.read"},
		{[]string{good(func(m map[string]any) { m["link"] = map[string]any{"read": "x", "fd": 3} })}, 2, `unknown field "fd"`},
		{[]string{good(func(m map[string]any) { m["size"] = 4 })}, 2, "invalid size 4"},
		{[]string{good(func(m map[string]any) { m["count"] = 0 })}, 2, "count must be positive"},
		{[]string{good(func(m map[string]any) { m["cpu"] = 1024 })}, 2, "invalid cpu 1024"},
		{[]string{good(func(m map[string]any) { m["timeout_ms"] = -1 })}, 2, "invalid timeout_ms"},
		{[]string{good(func(m map[string]any) { m["link"] = map[string]any{"read": "x", "wait": "sleep"} })}, 2, "invalid link.wait"},
		// lossless needs a lossless segment: no falling back to reading lossy.
		{[]string{specFor(t, "consume", path, 64, 2, map[string]any{"lossless": true})}, 1, "it is not a lossless segment"},
		{[]string{timeout50("consume", "./no/such/segment", 1, nil)}, 1, "timed out after 50ms waiting for the segment"},
		{[]string{specFor(t, "consume", bad, 64, 1, nil)}, 1, "bad magic"},
		// Two messages, then nothing: the idle timeout ends the run.
		{[]string{timeout50("consume", path, 3, nil)}, 1, "timed out after 50ms without a message, with 2 of 3 messages"},
		{[]string{timeout50("consume", path, 3, map[string]any{"wait": "block"})}, 1, "timed out after 50ms without a message, with 2 of 3 messages"},
		// A timestamp needs 8 bytes.
		{[]string{specFor(t, "timestamp", path, 64, 2, nil)}, 1, "too short for the 8-byte timestamp"},
	} {
		code, out, errOut := runReader(c.args...)
		if code != c.code || !strings.HasPrefix(errOut, prog+": error: ") || !strings.Contains(errOut, c.msg) {
			t.Errorf("%q: code %d (want %d), stderr %q (want %q)", c.args, code, c.code, errOut, c.msg)
		}
		// Nothing on standard output but, once the segment was open, the handshake.
		if out != "" && out != "ready\n" || c.code == 2 && out != "" {
			t.Errorf("%q: stdout %q", c.args, out)
		}
		if lines := strings.Count(errOut, "\n"); lines != c.code { // the error, then the usage line for a bad SPEC
			t.Errorf("%q: stderr has %d lines, want %d: %q", c.args, lines, c.code, errOut)
		}
	}
}

// TestBinary builds the command and runs it as a separate process, pinned
// to CPU 0, in both roles, against segments written by the test writer
// after the process has started.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a binary")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to build the command")
	}
	bin := filepath.Join(t.TempDir(), prog)
	if out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Run("lossless", func(t *testing.T) { binaryLossless(t, bin) })
	for _, role := range []string{"timestamp", "consume"} {
		t.Run(role, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "seg")
			const count = 2000
			spec := strings.Replace(specFor(t, role, path, 64, count, nil), `"size"`, `"cpu":0,"size"`, 1)
			cmd := exec.Command(bin, spec)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond) // usually before the segment exists
			w, unmap, err := segtest.Create(path, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			defer unmap()
			var sum uint64
			for i := range count {
				stamp := w.NextSeq()
				if role == "timestamp" {
					stamp = uint64(time.Now().UnixNano())
				}
				p := payload(64, stamp)
				w.Publish(p)
				sum += wantSum(p)
				if i%100 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("%v, stderr %q", err, stderr.String())
			}
			// Nothing but, where CPU 0 is outside this process's cpuset, the
			// pinning warning.
			if e := stderr.String(); e != "" && !strings.HasPrefix(e, prog+": warning: cannot pin to CPU 0") {
				t.Errorf("stderr %q", e)
			}
			r := parse(t, stdout.String())
			// A 1 MiB ring holds all 2000 messages: nothing can be lost.
			if r.Received != count || r.Lagged != 0 || r.Bad != 0 {
				t.Fatalf("got %+v, want %d received, none lagged or bad", r, count)
			}
			if role == "timestamp" && len(r.LatenciesNS) != count {
				t.Fatalf("%d samples, want %d", len(r.LatenciesNS), count)
			}
			if role == "consume" && (r.Checksum != sum || r.MsgsPerS <= 0 || r.BytesPerS <= 0) {
				t.Fatalf("got %+v, want checksum %d and positive rates", r, sum)
			}
		})
	}
}

// binaryLossless runs the built command registered on a lossless segment
// and stops it (SIGSTOP) once it has said ready: the producer must then be
// held back within one ring, and once the reader goes on (SIGCONT) every
// message arrives.
func binaryLossless(t *testing.T, bin string) {
	path := filepath.Join(t.TempDir(), "seg")
	w, unmap, err := segtest.CreateLossless(path, 1<<14, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer unmap()
	const count, size = 2000, 200 // about 26 laps of a 16 KiB ring
	cmd := exec.Command(bin, specFor(t, "consume", path, size, count, map[string]any{"lossless": true}))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill() //nolint:errcheck // a no-op once it has exited
	// The handshake: registered once it says ready.
	ready := make([]byte, len("ready\n"))
	if _, err := stdout.Read(ready); err != nil || string(ready) != "ready\n" {
		t.Fatalf("read %q, %v; stderr %q", ready, err, stderr.String())
	}
	if s := w.Slot(0); s.State != segtest.Active {
		t.Fatalf("ready, but slot 0 is %+v", s)
	}
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// The signal is delivered asynchronously: wait until the reader is stopped.
	stat := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/stat"
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(stat)
		if err != nil {
			t.Fatal(err)
		}
		// "PID (COMM) STATE ...": the state follows the last ')'.
		if f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:])); len(f) > 0 && f[0] == "T" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reader did not stop: %q", b)
		}
		time.Sleep(time.Millisecond)
	}
	var sum uint64
	published := 0
	for ; published < count; published++ {
		p := payload(size, w.NextSeq())
		if _, _, ok := w.TryPublish(p); !ok {
			break
		}
		sum += wantSum(p)
	}
	if published == count || uint64(published*size) > 2*w.Capacity {
		t.Fatalf("a stopped registered reader let the producer publish %d messages of %d bytes into a %d-byte ring", published, size, w.Capacity)
	}
	if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	for ; published < count; published++ {
		p := payload(size, w.NextSeq())
		if _, _, _, err := w.PublishWait(p, time.Millisecond, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		sum += wantSum(p)
	}
	rest, err := io.ReadAll(stdout)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v, stderr %q", err, stderr.String())
	}
	if e := stderr.String(); e != "" {
		t.Errorf("stderr %q", e)
	}
	if r := parse(t, "ready\n"+string(rest)); r.Received != count || r.Lagged != 0 || r.Bad != 0 || r.Checksum != sum {
		t.Fatalf("got %+v, want %d received, 0 lagged, checksum %d", r, count, sum)
	}
	if s := w.Slot(0); s.State != segtest.Free {
		t.Errorf("slot 0 is %+v after the reader exited, want it free", s)
	}
}
