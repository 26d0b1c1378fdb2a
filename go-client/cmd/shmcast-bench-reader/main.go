// Command shmcast-bench-reader is the Go peer of the shmcast benchmark
// harness (`shmcast-bench --consumer go`, shmcast-bench/src/spec.rs): it
// reads one shmcast segment in one of the harness's reader roles and prints
// what it measured, speaking the same peer protocol as the Rust peer.
//
//	shmcast-bench-reader SPEC
//
// SPEC is one JSON object, the harness's PeerSpec; this reader takes the
// roles "consume" and "timestamp" over the transport "shm":
//
//	{"role":"consume","transport":"shm","link":{"read":"/seg","wait":"block","lossless":true},
//	 "size":64,"count":1000000,"cpu":1,"timeout_ms":60000}
//
// Unknown fields are refused, so the two peers cannot drift apart silently.
// link.read follows the CLI naming rule (docs/CLI.md): "/demo" or "demo" is
// the shared-memory object /dev/shm/demo, a name with a slash after its
// first character is a file path. The reader retries opening until the
// segment exists and is initialised, starting at Beginning, so received +
// lagged counts every message published since the segment was created. It
// stops once received + lagged >= count. timeout_ms (default 30 s) bounds
// the wait for the segment to appear and, after that, any stretch without a
// new message. cpu pins the reading thread (a failure is reported on
// standard error and the run goes on unpinned).
//
// link.lossless registers the reader in a reader slot of a lossless segment
// (shmcast.WithLossless; docs/LAYOUT.md, "Lossless mode"), so the producer
// waits rather than overwrite a message it has not read. Opening fails if
// the segment is not lossless or has no free slot, rather than read lossy.
//
// The read loop calls TryRead into a preallocated buffer of MaxPayload
// bytes; it does not allocate per message. Without link.wait it never
// sleeps; with "yield", "backoff" or "block" an empty poll is followed by a
// Read with that WaitStrategy, under a context that expires after the
// timeout.
//
// Handshake: the line "ready" on standard output once the segment is open
// (and, with lossless, the reader registered), then one JSON line, the
// harness's PeerReport:
//
//	consume:   {"received":R,"lagged":L,"bad":B,"msgs_per_s":F,"bytes_per_s":F,"checksum":C}
//	timestamp: {"received":R,"lagged":L,"bad":B,"latencies_ns":[...]}
//
// Every message is the harness's payload: the pattern FillPattern(.., 0x5EED)
// of size bytes with its first 8 bytes replaced by a little-endian counter.
// bad counts messages whose length is not size or whose checksum
// (shmcast.Checksum) is not that of the pattern plus the counter: the
// message's sequence number for consume, its stamp for timestamp. checksum
// is the wrapping sum of the checksums of every received message (an
// unsigned 64-bit integer that may exceed 2^53). The consume rate runs from
// the first receive to the last. A timestamp message stamped with a
// CLOCK_REALTIME time yields one sample, time.Now().UnixNano() minus the
// stamp; one stamped 0 is a warm-up message, counted but not measured.
//
// Exit status: 0 on success; 1 on an error, with one line
// "shmcast-bench-reader: error: ..." on standard error; 2 on a bad SPEC.
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"strconv"
	"time"

	shmcast "github.com/shmcast/shmcast/go-client"
)

const (
	prog  = "shmcast-bench-reader"
	usage = "usage: " + prog + " SPEC (one JSON object: the harness's peer specification)"

	defaultTimeout = 30 * time.Second
	// maxCPU is the number of CPUs the affinity mask passed to
	// sched_setaffinity can name.
	maxCPU = 1024
	// idleCheckPolls is how many empty polls pass between two looks at the
	// clock for the timeout, so the spin loop stays a tight loop.
	idleCheckPolls = 1 << 12
	// patternSeed is the seed of the harness's payload pattern.
	patternSeed = 0x5EED
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// spec is the harness's PeerSpec (the fields this reader uses; the others
// it accepts and ignores are listed so that unknown ones can be refused).
type spec struct {
	Role      string `json:"role"`
	Transport string `json:"transport"`
	Link      struct {
		Read     string `json:"read"`
		Wait     string `json:"wait"`
		Lossless bool   `json:"lossless"`
	} `json:"link"`
	Size      int    `json:"size"`
	Count     uint64 `json:"count"`
	CPU       *int   `json:"cpu"`
	TimeoutMS *int64 `json:"timeout_ms"`
	YieldIdle bool   `json:"yield_idle"`
	Parent    *int   `json:"parent"`
}

type config struct {
	name      string
	timestamp bool // role timestamp, else consume
	size      int
	count     uint64
	cpu       int // -1: not pinned
	timeout   time.Duration
	wait      shmcast.WaitStrategy
	lossless  bool
}

// run is the whole command; it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseSpec(args)
	if err != nil {
		fmt.Fprintf(stderr, "%s: error: %v\n%s\n", prog, err, usage)
		return 2
	}
	if err := bench(cfg, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "%s: error: %v\n", prog, err)
		return 1
	}
	return 0
}

func parseSpec(args []string) (config, error) {
	cfg := config{cpu: -1, timeout: defaultTimeout, wait: shmcast.WaitSpin}
	if len(args) != 1 {
		return cfg, fmt.Errorf("expected one SPEC argument, got %d", len(args))
	}
	var s spec
	dec := json.NewDecoder(bytes.NewReader([]byte(args[0])))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return cfg, fmt.Errorf("invalid SPEC: %v", err)
	}
	switch s.Role {
	case "consume":
	case "timestamp":
		cfg.timestamp = true
	default:
		return cfg, fmt.Errorf("invalid role %q: this reader takes consume or timestamp", s.Role)
	}
	if s.Transport != "shm" {
		return cfg, fmt.Errorf("invalid transport %q: this reader reads shm", s.Transport)
	}
	if s.Link.Read == "" {
		return cfg, errors.New("link.read (the segment) is required")
	}
	if s.Size < 8 {
		return cfg, fmt.Errorf("invalid size %d: want at least 8", s.Size)
	}
	if s.Count == 0 {
		return cfg, errors.New("count must be positive")
	}
	if s.CPU != nil {
		if *s.CPU < 0 || *s.CPU >= maxCPU {
			return cfg, fmt.Errorf("invalid cpu %d: want a CPU number from 0 to %d", *s.CPU, maxCPU-1)
		}
		cfg.cpu = *s.CPU
	}
	if s.TimeoutMS != nil {
		if *s.TimeoutMS < 0 || *s.TimeoutMS > 1e12 {
			return cfg, fmt.Errorf("invalid timeout_ms %d", *s.TimeoutMS)
		}
		cfg.timeout = time.Duration(*s.TimeoutMS) * time.Millisecond
	}
	if s.Link.Wait != "" {
		w, err := shmcast.ParseWaitStrategy(s.Link.Wait)
		if err != nil {
			return cfg, fmt.Errorf("invalid link.wait %q: want spin, yield, backoff or block", s.Link.Wait)
		}
		cfg.wait = w
	}
	cfg.name, cfg.size, cfg.count, cfg.lossless = s.Link.Read, s.Size, s.Count, s.Link.Lossless
	return cfg, nil
}

// open opens the segment at Beginning, retrying while it does not exist yet
// or is still being created (empty or short file, magic not yet stored).
func open(cfg config) (*shmcast.Reader, error) {
	deadline := time.Now().Add(cfg.timeout)
	for {
		opts := []shmcast.Option{shmcast.WithStart(shmcast.Beginning), shmcast.WithWait(cfg.wait)}
		if cfg.lossless {
			opts = append(opts, shmcast.WithLossless())
		}
		r, err := shmcast.Open(cfg.name, opts...)
		if err == nil {
			return r, nil
		}
		transient := errors.Is(err, fs.ErrNotExist) || errors.Is(err, shmcast.ErrNotInitialized) ||
			errors.Is(err, shmcast.ErrTruncated)
		if !transient {
			return nil, err
		}
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("timed out after %v waiting for the segment: %w", cfg.timeout, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// base is the checksum of the harness's payload of size bytes with a zero
// counter: message k's checksum is base + k.
func base(size int) uint64 {
	p := shmcast.Pattern(patternSeed, size)
	clear(p[:8])
	return shmcast.Checksum(p)
}

// bench runs the measurement, printing "ready" and then the report.
func bench(cfg config, stdout, stderr io.Writer) error {
	// The read loop runs on this goroutine, and the goroutine on this thread,
	// which is the one cfg.cpu pins.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if cfg.cpu >= 0 {
		if err := pinToCPU(cfg.cpu); err != nil {
			fmt.Fprintf(stderr, "%s: warning: cannot pin to CPU %d, running unpinned: %v\n", prog, cfg.cpu, err)
		}
	}

	r, err := open(cfg)
	if err != nil {
		return err
	}
	defer r.Close()
	buf := make([]byte, r.MaxPayload())
	sumBase := base(cfg.size)

	var samples []uint64
	if cfg.timestamp {
		// One sample per message at most. Every page is touched now, so no
		// page fault lands in the measured loop.
		samples = make([]uint64, cfg.count)
		for i := range samples {
			samples[i] = 1
		}
		samples = samples[:0]
	}
	if _, err := io.WriteString(stdout, "ready\n"); err != nil {
		return err
	}

	var (
		received, lagged, bad, bytes, sum uint64
		first, last                       time.Time
		polls                             uint64
		seen                              uint64       // received + lagged at the last clock check
		idleSince                         = time.Now() // when seen last changed
	)
	for received+lagged < cfg.count {
		m, err := r.TryRead(buf)
		if err == shmcast.ErrNoMessage && cfg.wait != shmcast.WaitSpin {
			// The idle stretch counts from here, as the timeout says.
			ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
			m, err = r.Read(ctx, buf)
			cancel()
			if errors.Is(err, context.DeadlineExceeded) {
				return fmt.Errorf("timed out after %v without a message, with %d of %d messages (received %d + lagged %d)",
					cfg.timeout, received+lagged, cfg.count, received, lagged)
			}
		}
		if err == nil {
			received++
			if cfg.timestamp {
				now := uint64(time.Now().UnixNano())
				if len(m.Data) < 8 {
					return fmt.Errorf("message %d has %d bytes, too short for the 8-byte timestamp", m.Seq, len(m.Data))
				}
				stamp := binary.LittleEndian.Uint64(m.Data)
				if stamp != 0 {
					samples = append(samples, now-stamp)
				}
				if len(m.Data) != cfg.size || shmcast.Checksum(m.Data) != sumBase+stamp {
					bad++
				}
				continue
			}
			c := shmcast.Checksum(m.Data)
			if len(m.Data) != cfg.size || c != sumBase+m.Seq {
				bad++
			}
			sum += c
			bytes += uint64(len(m.Data))
			if received == 1 {
				first = time.Now()
			}
			if received+lagged >= cfg.count {
				last = time.Now()
			}
			continue
		}
		var lag *shmcast.LaggedError
		switch {
		case err == shmcast.ErrNoMessage:
			polls++
			if polls%idleCheckPolls != 0 {
				continue
			}
			now := time.Now()
			if n := received + lagged; n != seen {
				seen, idleSince = n, now
			} else if now.Sub(idleSince) > cfg.timeout {
				return fmt.Errorf("timed out after %v without a message, with %d of %d messages (received %d + lagged %d)",
					cfg.timeout, n, cfg.count, received, lagged)
			}
		case errors.As(err, &lag):
			lagged += lag.Missed
		default:
			return err
		}
	}
	// A lap at the very end leaves last unset: the last receive was earlier.
	if !cfg.timestamp && received > 0 && last.IsZero() {
		last = time.Now()
	}

	line := fmt.Sprintf(`{"received":%d,"lagged":%d,"bad":%d`, received, lagged, bad)
	if cfg.timestamp {
		lat, err := json.Marshal(samples)
		if err != nil {
			return err
		}
		line += `,"latencies_ns":` + string(lat) + "}\n"
	} else {
		var msgsPerS, bytesPerS float64
		if secs := last.Sub(first).Seconds(); received > 1 && secs > 0 {
			msgsPerS = float64(received) / secs
			bytesPerS = float64(bytes) / secs
		}
		line += fmt.Sprintf(`,"msgs_per_s":%s,"bytes_per_s":%s,"checksum":%d}`+"\n",
			jsonFloat(msgsPerS), jsonFloat(bytesPerS), sum)
	}
	_, err = io.WriteString(stdout, line)
	return err
}

func jsonFloat(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) }
