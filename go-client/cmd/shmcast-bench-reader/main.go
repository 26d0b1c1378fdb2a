// Command shmcast-bench-reader is the Go consumer of `shmcast bench
// --consumer go`: it opens a segment, busy-spins on it until it has
// accounted for N messages, and prints one JSON line with what it measured.
//
//	shmcast-bench-reader NAME --mode latency|throughput --count N
//	                          [--cpu K] [--timeout SECONDS]
//	                          [--wait spin|yield|backoff|block] [--lossless]
//
// NAME follows the CLI naming rule (docs/CLI.md): "/demo" or "demo" is the
// shared-memory object /dev/shm/demo, a name with a slash after its first
// character is a file path. The reader retries opening until the segment
// exists and is initialised, then starts at Beginning, so received + lagged
// counts every message published since the segment was created. It stops
// once received + lagged >= N. --timeout (default 30 s) bounds the wait for
// the segment to appear and, after that, any stretch without a new message.
// --cpu K pins the reading thread to CPU K (a failure is reported on
// standard error and the run goes on unpinned).
//
// --lossless registers the reader in a reader slot of a lossless segment
// (shmcast.WithLossless; docs/LAYOUT.md, "Lossless mode"), so the producer
// waits rather than overwrite a message it has not read. Opening fails if
// the segment is not lossless or has no free slot, rather than read lossy;
// an eviction (shmcast.ErrEvicted) ends the run with an error. The output
// is the same; "lagged" is then 0 unless something went wrong.
//
// The read loop calls TryRead into a preallocated buffer of MaxPayload
// bytes; it never sleeps and does not allocate per message. That is
// "--wait spin", the default. With --wait yield, backoff or block, an empty
// poll is followed by a Read with that WaitStrategy (block: asleep in the
// kernel until the producer publishes), under a context that expires after
// --timeout; the output is the same.
//
// Latency mode: the first 8 bytes of each message are the producer's
// CLOCK_REALTIME in nanoseconds (little-endian uint64), taken just before
// publishing. Each received message yields one sample, time.Now().UnixNano()
// minus that stamp, stored in a preallocated slice (8 bytes per message);
// the percentiles are nearest-rank over the sorted samples. Output:
//
//	{"received":R,"lagged":L,"p50_ns":P,"p99_ns":P,"p999_ns":P,"max_ns":P}
//
// Throughput mode: every byte of every message is summed (wrapping uint64
// sum of its little-endian 8-byte words, plus each tail byte as a uint64;
// summed over all received messages), and the time runs from the first
// receive to the last. msgs_per_s = received / seconds, bytes_per_s =
// received payload bytes / seconds (0 when fewer than two messages were
// received). Output:
//
//	{"received":R,"lagged":L,"msgs_per_s":F,"bytes_per_s":F,"checksum":C}
//
// checksum is an unsigned 64-bit integer and may exceed 2^53: parse it as
// u64, not as a float.
//
// Exit status: 0 on success (the JSON line is the only output on standard
// output); 1 on an error, with one line "shmcast-bench-reader: error: ..."
// on standard error and nothing on standard output; 2 on a usage error.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"time"

	shmcast "github.com/shmcast/shmcast/go-client"
)

const (
	prog  = "shmcast-bench-reader"
	usage = "usage: " + prog + " NAME --mode latency|throughput --count N [--cpu K] [--timeout SECONDS] [--wait spin|yield|backoff|block] [--lossless]"

	defaultTimeout = 30 * time.Second
	// maxCPU is the number of CPUs the affinity mask passed to
	// sched_setaffinity can name.
	maxCPU = 1024
	// idleCheckPolls is how many empty polls pass between two looks at the
	// clock for --timeout, so the spin loop stays a tight loop.
	idleCheckPolls = 1 << 12
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type mode int

const (
	latency mode = iota
	throughput
)

type config struct {
	name     string
	mode     mode
	count    uint64
	cpu      int // -1: not pinned
	timeout  time.Duration
	wait     shmcast.WaitStrategy
	lossless bool // register in a reader slot (WithLossless)
}

// run is the whole command; it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseArgs(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stdout, usage)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: error: %v\n%s\n", prog, err, usage)
		return 2
	}
	line, err := bench(cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "%s: error: %v\n", prog, err)
		return 1
	}
	if _, err := io.WriteString(stdout, line); err != nil {
		fmt.Fprintf(stderr, "%s: error: %v\n", prog, err)
		return 1
	}
	return 0
}

func parseArgs(args []string) (config, error) {
	cfg := config{cpu: -1, timeout: defaultTimeout, wait: shmcast.WaitSpin}
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	// Errors are reported by run, in the one-line format; -h prints usage.
	fs.SetOutput(io.Discard)
	modeFlag := fs.String("mode", "", "`latency` or throughput")
	count := fs.String("count", "", "stop once received + lagged >= `N`")
	cpu := fs.String("cpu", "", "pin the reading thread to CPU `K`")
	timeout := fs.String("timeout", "", "give up after `SECONDS` without the segment or a new message (default 30)")
	wait := fs.String("wait", "spin", "how to wait for a message: spin, yield, backoff or block")
	fs.BoolVar(&cfg.lossless, "lossless", false, "register as a lossless reader (the segment must be lossless)")
	// The flag package stops at the first operand; NAME may come first, so
	// parse again after each one (as shmcast-tail does).
	var operands []string
	for {
		if err := fs.Parse(args); err != nil {
			return cfg, err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		operands = append(operands, args[0])
		args = args[1:]
	}
	if len(operands) != 1 {
		return cfg, fmt.Errorf("expected exactly one segment NAME, got %d", len(operands))
	}
	cfg.name = operands[0]
	switch *modeFlag {
	case "latency":
		cfg.mode = latency
	case "throughput":
		cfg.mode = throughput
	case "":
		return cfg, errors.New("--mode is required")
	default:
		return cfg, fmt.Errorf("invalid --mode %q: want latency or throughput", *modeFlag)
	}
	if *count == "" {
		return cfg, errors.New("--count is required")
	}
	n, err := strconv.ParseUint(*count, 10, 64)
	if err != nil || n == 0 {
		return cfg, fmt.Errorf("invalid --count %q: want a positive integer", *count)
	}
	cfg.count = n
	if *cpu != "" {
		k, err := strconv.Atoi(*cpu)
		if err != nil || k < 0 || k >= maxCPU {
			return cfg, fmt.Errorf("invalid --cpu %q: want a CPU number from 0 to %d", *cpu, maxCPU-1)
		}
		cfg.cpu = k
	}
	if cfg.wait, err = shmcast.ParseWaitStrategy(*wait); err != nil {
		return cfg, fmt.Errorf("invalid --wait %q: want spin, yield, backoff or block", *wait)
	}
	if *timeout != "" {
		secs, err := strconv.ParseFloat(*timeout, 64)
		if err != nil || secs < 0 || math.IsInf(secs, 0) || math.IsNaN(secs) || secs > 1e9 {
			return cfg, fmt.Errorf("invalid --timeout %q: want a non-negative number of seconds", *timeout)
		}
		cfg.timeout = time.Duration(secs * float64(time.Second))
	}
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

// bench runs the measurement and returns the JSON line to print.
func bench(cfg config, stderr io.Writer) (string, error) {
	// The read loop runs on this goroutine, and the goroutine on this thread,
	// which is the one --cpu pins.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if cfg.cpu >= 0 {
		if err := pinToCPU(cfg.cpu); err != nil {
			fmt.Fprintf(stderr, "%s: warning: cannot pin to CPU %d, running unpinned: %v\n", prog, cfg.cpu, err)
		}
	}

	r, err := open(cfg)
	if err != nil {
		return "", err
	}
	defer r.Close()
	buf := make([]byte, r.MaxPayload())

	var samples []int64
	if cfg.mode == latency {
		// One sample per message at most. Every page is touched now, so no
		// page fault lands in the measured loop.
		samples = make([]int64, cfg.count)
		for i := range samples {
			samples[i] = 1
		}
		samples = samples[:0]
	}

	var (
		received, lagged, bytes, sum uint64
		first, last                  time.Time
		polls                        uint64
		seen                         uint64       // received + lagged at the last clock check
		idleSince                    = time.Now() // when seen last changed
	)
	for received+lagged < cfg.count {
		m, err := r.TryRead(buf)
		if err == shmcast.ErrNoMessage && cfg.wait != shmcast.WaitSpin {
			// The idle stretch counts from here, as --timeout says.
			ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
			m, err = r.Read(ctx, buf)
			cancel()
			if errors.Is(err, context.DeadlineExceeded) {
				return "", fmt.Errorf("timed out after %v without a message, with %d of %d messages (received %d + lagged %d)",
					cfg.timeout, received+lagged, cfg.count, received, lagged)
			}
		}
		if err == nil {
			received++
			if cfg.mode == latency {
				now := time.Now().UnixNano()
				if len(m.Data) < 8 {
					return "", fmt.Errorf("message %d has %d bytes, too short for the 8-byte timestamp of latency mode", m.Seq, len(m.Data))
				}
				samples = append(samples, now-int64(binary.LittleEndian.Uint64(m.Data)))
				continue
			}
			sum += shmcast.Checksum(m.Data)
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
				return "", fmt.Errorf("timed out after %v without a message, with %d of %d messages (received %d + lagged %d)",
					cfg.timeout, n, cfg.count, received, lagged)
			}
		case errors.As(err, &lag):
			lagged += lag.Missed
		default:
			return "", err
		}
	}
	// A lap at the very end leaves last unset: the last receive was earlier.
	if cfg.mode == throughput && received > 0 && last.IsZero() {
		last = time.Now()
	}

	if cfg.mode == latency {
		slices.Sort(samples)
		return fmt.Sprintf("{\"received\":%d,\"lagged\":%d,\"p50_ns\":%d,\"p99_ns\":%d,\"p999_ns\":%d,\"max_ns\":%d}\n",
			received, lagged, percentile(samples, 0.50), percentile(samples, 0.99),
			percentile(samples, 0.999), percentile(samples, 1)), nil
	}
	var msgsPerS, bytesPerS float64
	if secs := last.Sub(first).Seconds(); received > 1 && secs > 0 {
		msgsPerS = float64(received) / secs
		bytesPerS = float64(bytes) / secs
	}
	return fmt.Sprintf("{\"received\":%d,\"lagged\":%d,\"msgs_per_s\":%s,\"bytes_per_s\":%s,\"checksum\":%d}\n",
		received, lagged, jsonFloat(msgsPerS), jsonFloat(bytesPerS), sum), nil
}

// percentile is the nearest-rank q-quantile of sorted (0 when empty).
func percentile(sorted []int64, q float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func jsonFloat(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) }
