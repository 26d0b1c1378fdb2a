// Command shmcast-tail is the Go twin of `shmcast tail` (docs/CLI.md): it
// reads a shmcast segment and prints its messages. With --json and with
// --verify its output is byte-for-byte that of the Rust command, so the two
// can be diffed on the same segment.
//
//	shmcast-tail NAME [--from beginning|oldest|newest|next] [--count N]
//	                  [--timeout SECONDS] [--json] [--verify]
//	                  [--wait spin|yield|backoff|block] [--lossless]
//
// --wait chooses how the reader waits for new messages (default block:
// asleep in the kernel until the producer publishes; see the package's
// WaitStrategy). It changes when messages are noticed, never what is
// printed.
//
// --lossless registers the reader in a reader slot of a lossless segment
// (one created with `shmcast publish --lossless`; the package's
// WithLossless): the producer then waits for it rather than overwrite a
// message it has not read. It fails, with status 1, on a segment that is
// not lossless, one whose slots are all taken, or a file it may not write.
// If the producer evicts it (it held the producer back for longer than the
// segment's max block), a line saying so goes to standard error and
// reading goes on as a lossy reader; standard output is unchanged.
//
// Like `shmcast tail`, it ends by itself once the producer has exited (or
// was killed) and everything it published was read: with status 0 and one
// line on standard error, "shmcast-tail: the producer has exited; no more
// messages will arrive" (or, when a new producer has replaced the segment
// meanwhile, "shmcast-tail: the producer has exited, and a new segment now
// exists under the same name: open it again to follow the new producer");
// or, when --count was given and not reached, with status 1 and
// "shmcast-tail: error: the producer has exited; no more messages will
// arrive: received R and lagged L of N".
//
// Its message buffer starts at 64 KiB (or the segment's maximum payload,
// if smaller) and grows to the longest message read: memory follows the
// messages, never the capacity the header claims.
package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	shmcast "github.com/shmcast/shmcast/go-client"
)

const prog = "shmcast-tail"

func main() {
	// A closed standard output (| head) ends the command quietly with status
	// 0, as it does for the Rust command, instead of killing it with SIGPIPE.
	signal.Ignore(syscall.SIGPIPE)
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type config struct {
	name       string
	from       shmcast.Start
	count      uint64
	countSet   bool
	timeout    time.Duration
	timeoutSet bool
	json       bool
	verify     bool
	wait       shmcast.WaitStrategy
	lossless   bool
}

// run is the whole command; it returns the exit status: 0 on success, 1 on
// an error, 2 on a usage error.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseArgs(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: error: %v\n", prog, err)
		fmt.Fprintf(stderr, "usage: %s NAME [--from beginning|oldest|newest|next] [--count N] [--timeout SECONDS] [--json] [--verify] [--wait spin|yield|backoff|block] [--lossless]\n", prog)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := bufio.NewWriterSize(stdout, 64<<10)
	err = tail(ctx, cfg, out, stderr)
	if ferr := out.Flush(); err == nil {
		err = ferr
	}
	if err != nil && !errors.Is(err, syscall.EPIPE) {
		fmt.Fprintf(stderr, "%s: error: %v\n", prog, err)
		return 1
	}
	return 0
}

func parseArgs(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from", "oldest", "where to start: beginning, oldest, newest or next")
	count := fs.Uint64("count", 0, "stop once received + lagged >= `N`")
	timeout := fs.String("timeout", "", "stop when no message has arrived for `SECONDS`")
	fs.BoolVar(&cfg.json, "json", false, "one JSON object per line")
	fs.BoolVar(&cfg.verify, "verify", false, "check payloads against the generated pattern and print a summary")
	wait := fs.String("wait", "block", "how to wait for messages: spin, yield, backoff or block (asleep until the producer publishes)")
	fs.BoolVar(&cfg.lossless, "lossless", false, "register as a lossless reader: the producer waits rather than overwrite a message not yet read (the segment must be created lossless)")
	// The flag package stops at the first operand; NAME may come first, so
	// parse again after each one.
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
	var err error
	if cfg.from, err = shmcast.ParseStart(*from); err != nil {
		return cfg, fmt.Errorf("invalid --from %q: want beginning, oldest, newest or next", *from)
	}
	if cfg.wait, err = shmcast.ParseWaitStrategy(*wait); err != nil {
		return cfg, fmt.Errorf("invalid --wait %q: want spin, yield, backoff or block", *wait)
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "count":
			cfg.count, cfg.countSet = *count, true
		case "timeout":
			cfg.timeoutSet = true
		}
	})
	if cfg.timeoutSet {
		secs, perr := strconv.ParseFloat(*timeout, 64)
		if perr != nil || secs < 0 || math.IsInf(secs, 0) || math.IsNaN(secs) || secs > 1e9 {
			return cfg, fmt.Errorf("invalid --timeout %q: want a non-negative number of seconds", *timeout)
		}
		cfg.timeout = time.Duration(secs * float64(time.Second))
	}
	return cfg, nil
}

func tail(ctx context.Context, cfg config, out *bufio.Writer, stderr io.Writer) error {
	opts := []shmcast.Option{shmcast.WithStart(cfg.from), shmcast.WithWait(cfg.wait)}
	if cfg.lossless {
		opts = append(opts, shmcast.WithLossless())
	}
	r, err := shmcast.Open(cfg.name, opts...)
	if err != nil {
		return err
	}
	defer r.Close()

	var received, lagged, corrupt uint64
	buf := make([]byte, min(r.MaxPayload(), initialBuffer))
	line := make([]byte, 0, 256)
	var readErr error
	var gone error // the end of the stream, said once everything else is out
	for !cfg.countSet || received+lagged < cfg.count {
		m, err := r.TryRead(buf)
		if err == shmcast.ErrNoMessage {
			// Flush before waiting, so that a live tail shows what it has.
			if err := out.Flush(); err != nil {
				return err
			}
			// As the Rust command does, the timeout counts from here, the
			// moment there was nothing left to read.
			rctx, cancel := ctx, context.CancelFunc(func() {})
			if cfg.timeoutSet {
				rctx, cancel = context.WithTimeout(ctx, cfg.timeout)
			}
			m, err = r.Read(rctx, buf)
			cancel()
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil && !r.ProducerAlive() {
				// A dead producer is the end of the stream, whichever the
				// read noticed first: one more read says how it ended (or
				// delivers what it committed last), bounded in case a lock
				// holder makes it look alive.
				gctx, cancel := context.WithTimeout(ctx, goneGrace)
				m, err = r.Read(gctx, buf)
				cancel()
			}
		}
		var lag *shmcast.LaggedError
		var short *shmcast.ShortBufferError
		var werr error
		switch {
		case errors.As(err, &short):
			// The message stays unread: read it again into a buffer that
			// holds it.
			buf = make([]byte, short.Need)
			continue
		case err == nil:
			received++
			if cfg.verify && !shmcast.VerifyPattern(m.Seq, m.Data) {
				corrupt++
			}
			switch {
			case cfg.json:
				line = appendJSON(line[:0], m)
				_, werr = out.Write(line)
			case !cfg.verify:
				line = appendHuman(line[:0], m)
				_, werr = out.Write(line)
			}
		case errors.As(err, &lag):
			lagged += lag.Missed
			switch {
			case cfg.json:
				_, werr = fmt.Fprintf(out, "{\"lagged\":%d}\n", lag.Missed)
			case !cfg.verify:
				_, werr = fmt.Fprintf(out, "lagged=%d\n", lag.Missed)
			}
		case errors.Is(err, shmcast.ErrEvicted):
			// Reported once; reading goes on, lossy, with exact lagged
			// counts from here on. Standard output first, so the notice
			// lands after what was read before it.
			werr = out.Flush()
			fmt.Fprintf(stderr, "%s: %s\n", prog, strings.TrimPrefix(err.Error(), "shmcast: "))
		case errors.Is(err, shmcast.ErrProducerGone):
			// As the Rust command: everything published was read and nothing
			// more will come. Falling short of --count is the only failure.
			if cfg.countSet {
				readErr = fmt.Errorf("%s: received %d and lagged %d of %d",
					strings.TrimPrefix(err.Error(), "shmcast: "), received, lagged, cfg.count)
			} else {
				gone = err
			}
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			if cfg.countSet {
				readErr = fmt.Errorf("timed out after %v without a message, with %d of %d messages (received + lagged)",
					cfg.timeout, received+lagged, cfg.count)
			}
		case ctx.Err() != nil: // interrupted
			if cfg.countSet {
				readErr = fmt.Errorf("interrupted with %d of %d messages (received + lagged)", received+lagged, cfg.count)
			}
		default:
			readErr = err
		}
		if werr != nil {
			return werr // standard output is gone: nothing more can be shown
		}
		if err != nil && lag == nil && !errors.Is(err, shmcast.ErrEvicted) {
			break
		}
	}
	if cfg.verify {
		if _, err := fmt.Fprintf(out, "received=%d lagged=%d corrupt=%d\n", received, lagged, corrupt); err != nil {
			return err
		}
		if readErr == nil && corrupt > 0 {
			readErr = fmt.Errorf("%d of %d payloads did not match the generated pattern", corrupt, received)
		}
	}
	if gone != nil {
		if err := out.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "%s: %s\n", prog, strings.TrimPrefix(gone.Error(), "shmcast: "))
	}
	return readErr
}

// goneGrace is how long the command waits, after a --timeout with the
// producer dead, for the read to report it gone (the reader tests liveness
// every 100 ms).
const goneGrace = 500 * time.Millisecond

// initialBuffer is the size the message buffer starts with (or the maximum
// payload, if smaller).
const initialBuffer = 64 << 10

// appendJSON writes {"seq":SEQ,"len":LEN,"data":"BASE64"} and a newline.
func appendJSON(b []byte, m shmcast.Message) []byte {
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, m.Seq, 10)
	b = append(b, `,"len":`...)
	b = strconv.AppendInt(b, int64(len(m.Data)), 10)
	b = append(b, `,"data":"`...)
	b = base64.StdEncoding.AppendEncode(b, m.Data)
	return append(b, "\"}\n"...)
}

// appendHuman writes seq=SEQ len=LEN TEXT, TEXT being the payload when it is
// printable UTF-8 and hex:... otherwise.
func appendHuman(b []byte, m shmcast.Message) []byte {
	b = append(b, "seq="...)
	b = strconv.AppendUint(b, m.Seq, 10)
	b = append(b, " len="...)
	b = strconv.AppendInt(b, int64(len(m.Data)), 10)
	b = append(b, ' ')
	if printable(m.Data) {
		b = append(b, m.Data...)
	} else {
		b = append(b, "hex:"...)
		b = hex.AppendEncode(b, m.Data)
	}
	return append(b, '\n')
}

// printable: valid UTF-8 without control characters (Rust's char::is_control
// is the same Cc category as unicode.IsControl).
func printable(p []byte) bool {
	if !utf8.Valid(p) {
		return false
	}
	for _, c := range string(p) {
		if unicode.IsControl(c) {
			return false
		}
	}
	return true
}
