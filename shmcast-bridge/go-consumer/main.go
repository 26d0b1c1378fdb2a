// Command go-consumer reads what `shmcast-bridge export` publishes on a NATS
// subject, using nats.go alone: it decodes the bridge's headers, drops
// duplicates and counts every lost source sequence number, as the importer
// does (docs/BRIDGE.md, "Consuming from Go").
//
// Usage:
//
//	go-consumer -nats nats://127.0.0.1:4222 -subject SUBJECT [-count N] [-timeout 30s] [-verify] [-json]
//
// It ends after -count source sequence numbers are delivered or counted lost
// (or on SIGINT/SIGTERM, or after -timeout) and prints one summary line:
// received, lost_upstream, lost_transit, duplicates, heartbeats, stale,
// not_bridge, corrupt. With -verify, payloads are checked against the
// generated pattern of `shmcast publish --count` (docs/LAYOUT.md).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	shmcast "github.com/shmcast/shmcast/go-client"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Totals are the consumer's counters, printed at the end.
type Totals struct {
	Received     uint64 `json:"received"`
	LostUpstream uint64 `json:"lost_upstream"`
	LostTransit  uint64 `json:"lost_transit"`
	Duplicates   uint64 `json:"duplicates"`
	Heartbeats   uint64 `json:"heartbeats"`
	Stale        uint64 `json:"stale"`
	NotBridge    uint64 `json:"not_bridge"`
	Corrupt      uint64 `json:"corrupt"`
	LastSeq      uint64 `json:"last_seq"`
	Incarnations uint64 `json:"incarnations"`
}

// Consumer applies frames of one subject to the per-incarnation trackers.
type Consumer struct {
	Totals
	verify  bool
	current string
	retired map[string]bool
	tracker *Tracker
}

// NewConsumer starts with no source incarnation seen.
func NewConsumer(verify bool) *Consumer {
	return &Consumer{verify: verify, retired: map[string]bool{}}
}

// Handle accounts for one NATS message.
func (c *Consumer) Handle(h nats.Header, data []byte) {
	f, err := ParseFrame(h)
	if err != nil {
		c.NotBridge++
		return
	}
	if c.retired[f.Stream] {
		c.Stale++
		return
	}
	if f.Stream != c.current {
		// A new producer incarnation restarts its sequence numbers at 1.
		if c.current != "" {
			c.retired[c.current] = true
		}
		c.current, c.tracker = f.Stream, NewTracker()
		c.Incarnations++
	}
	s := c.tracker.Step(f)
	c.LostUpstream += s.LostUpstream
	c.LostTransit += s.LostTransit
	switch {
	case f.Heartbeat:
		c.Heartbeats++
	case s.Duplicate:
		c.Duplicates++
	case s.Deliver:
		c.Received++
		if c.verify && !shmcast.VerifyPattern(f.Seq, data) {
			c.Corrupt++
		}
	}
	c.LastSeq = c.tracker.Expected() - 1
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("go-consumer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("nats", nats.DefaultURL, "NATS server URL")
	subject := fs.String("subject", "", "subject the exporter publishes on (required)")
	count := fs.Uint64("count", 0, "stop once source sequence numbers 1..N are delivered or counted lost (0: run until stopped)")
	timeout := fs.Duration("timeout", 0, "give up after this long (0: never)")
	verify := fs.Bool("verify", false, "check payloads against the generated pattern")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *subject == "" {
		fmt.Fprintln(stderr, "go-consumer: -subject is required")
		return 2
	}
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "go-consumer: "+format+"\n", a...) }
	nc, err := nats.Connect(*url,
		nats.Name("shmcast-bridge go-consumer"),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond),
		nats.ConnectHandler(func(*nats.Conn) { logf("connected to %s", *url) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { logf("disconnected: %v; reconnecting", err) }),
		nats.ReconnectHandler(func(*nats.Conn) { logf("reconnected to %s", *url) }),
	)
	if err != nil {
		logf("cannot connect to %s: %v", *url, err)
		return 1
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync(*subject)
	if err != nil {
		logf("cannot subscribe to %s: %v", *subject, err)
		return 1
	}
	// A slow consumer loses messages at the client: counted as transit loss,
	// but better avoided.
	if err := sub.SetPendingLimits(-1, 256<<20); err != nil {
		logf("cannot raise the pending limits: %v", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	c := NewConsumer(*verify)
	status := 0
	for *count == 0 || c.LastSeq < *count {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if *count > 0 {
				logf("stopped at sequence number %d of %d: %v", c.LastSeq, *count, err)
				status = 1
			}
			break
		}
		c.Handle(msg.Header, msg.Data)
	}
	if *asJSON {
		line, _ := json.Marshal(c.Totals)
		fmt.Fprintln(stdout, string(line))
	} else {
		t := c.Totals
		fmt.Fprintf(stdout, "received=%d lost_upstream=%d lost_transit=%d duplicates=%d heartbeats=%d stale=%d not_bridge=%d corrupt=%d\n",
			t.Received, t.LostUpstream, t.LostTransit, t.Duplicates, t.Heartbeats, t.Stale, t.NotBridge, t.Corrupt)
	}
	if c.Corrupt > 0 {
		logf("%d payloads did not match the generated pattern", c.Corrupt)
		status = 1
	}
	return status
}
