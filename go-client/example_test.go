package shmcast_test

// The examples read a segment that a producer (the Rust crate, or
// `shmcast publish prices` from the repository's CLI) has created; they use
// only this package's exported API and can be copied as they are. Those
// that need a live producer have no "Output:" comment: `go test` compiles
// them but does not run them.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	shmcast "github.com/shmcast/shmcast/go-client"
)

// Print every message of the segment "prices" (the file /dev/shm/prices)
// until its producer exits, or until Ctrl-C.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	r, err := shmcast.Open("prices") // a path works too: "/run/app/prices.seg"
	if err != nil {
		log.Print(err) // errors.Is(err, fs.ErrNotExist): no producer has created it
		return
	}
	defer r.Close()

	for m, err := range r.Messages(ctx) {
		var lag *shmcast.LaggedError
		if errors.As(err, &lag) {
			log.Printf("missed %d messages", lag.Missed) // reading goes on
			continue
		}
		if err != nil {
			log.Print(err) // ctx done (Ctrl-C), or a corrupt segment
			return
		}
		fmt.Printf("%d: %s\n", m.Seq, m.Data) // m.Data is reused: copy it to keep it
	}
	fmt.Println("the producer has exited; every message it published was read")
}

// Open a segment that may not exist yet: retry while the producer is still
// creating it, for up to ten seconds.
func ExampleOpen() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var r *shmcast.Reader
	for {
		var err error
		r, err = shmcast.Open("prices", shmcast.WithStart(shmcast.Beginning))
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, shmcast.ErrNotInitialized) {
			log.Print(err) // an invalid name, no permission, not a segment...
			return
		}
		select {
		case <-ctx.Done():
			log.Print("no producer has created prices yet")
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	defer r.Close()
	fmt.Println("reading", r.Path(), "from message", r.NextSeq(), "of a ring of", r.Header().Capacity, "bytes")
}

// Read into a buffer of one's own, giving up after five seconds without a
// message. A producer that exits is the end of the stream, not a failure.
func ExampleReader_Read() {
	r, err := shmcast.Open("prices")
	if err != nil {
		log.Print(err)
		return
	}
	defer r.Close()

	buf := make([]byte, r.MaxPayload()) // always large enough
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		m, err := r.Read(ctx, buf)
		cancel()
		var lag *shmcast.LaggedError
		var gone *shmcast.ProducerGoneError
		switch {
		case err == nil:
			fmt.Printf("%d: %s\n", m.Seq, m.Data) // m.Data aliases buf
		case errors.As(err, &lag):
			log.Printf("missed %d messages", lag.Missed) // reading goes on
		case errors.As(err, &gone):
			fmt.Println("the producer has exited") // gone.Replaced: a new one took the name
			return
		case errors.Is(err, context.DeadlineExceeded):
			fmt.Println("no message for five seconds")
			return
		default:
			log.Print(err) // os.ErrClosed, or a corrupt segment
			return
		}
	}
}

// Follow a producer across restarts. The loop ends when the producer has
// exited; a read after it tells whether a new producer has replaced the
// segment under the same name, which opening the name again follows.
func ExampleReader_Messages() {
	ctx := context.Background()
	for {
		r, err := shmcast.Open("prices", shmcast.WithStart(shmcast.Beginning))
		if err != nil {
			log.Print(err)
			return
		}
		for m, err := range r.Messages(ctx) {
			if errors.Is(err, shmcast.ErrLagged) {
				continue // messages were lost; reading goes on
			}
			if err != nil {
				log.Print(err)
				break
			}
			fmt.Printf("%d: %s\n", m.Seq, m.Data)
		}
		_, err = r.Read(ctx, nil) // at once: the producer is known to be gone
		r.Close()
		var gone *shmcast.ProducerGoneError
		if !errors.As(err, &gone) || !gone.Replaced {
			return // the producer exited for good (or the loop failed)
		}
		fmt.Println("a new producer replaced the segment; following it")
	}
}

// The zero-copy form hands the payload in place, without copying it;
// whatever the callback derives from it counts only if the read returns
// nil. Here: the bytes of the messages retained in the ring right now.
func ExampleReader_TryReadFunc() {
	r, err := shmcast.Open("prices", shmcast.WithStart(shmcast.Oldest))
	if err != nil {
		log.Print(err)
		return
	}
	defer r.Close()

	var total int
	for {
		var n int
		err := r.TryReadFunc(func(seq uint64, payload []byte) { n = len(payload) })
		switch {
		case err == nil:
			total += n
		case errors.Is(err, shmcast.ErrLagged):
			// Overwritten while the callback ran: n is discarded.
		case errors.Is(err, shmcast.ErrNoMessage):
			fmt.Println(total, "bytes retained")
			return
		default:
			log.Print(err)
			return
		}
	}
}

// Choose the wait strategy from a command-line flag, as the commands'
// --wait flags do.
func ExampleWithWait() {
	waitFlag := flag.String("wait", "block", "spin, yield, backoff or block")
	flag.Parse()
	wait, err := shmcast.ParseWaitStrategy(*waitFlag)
	if err != nil {
		log.Print(err)
		return
	}
	r, err := shmcast.Open("prices", shmcast.WithWait(wait))
	if err != nil {
		log.Print(err)
		return
	}
	defer r.Close()
	// With WaitBlock, a read sleeps in the kernel until the producer
	// publishes; it needs write access to the file to be woken at once.
	fmt.Println(r.WaitStrategy(), "can park:", r.CanPark())
}

func ExampleParseWaitStrategy() {
	for _, name := range []string{"block", "spin", "yield", "backoff", "sleep"} {
		s, err := shmcast.ParseWaitStrategy(name)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println(s, s == shmcast.WaitBlock)
	}
	// Output:
	// block true
	// spin false
	// yield false
	// backoff false
	// shmcast: unknown wait strategy "sleep" (want spin, yield, backoff or block)
}

// Which file a segment name refers to: the rule of the Rust library and the
// shmcast CLI.
func ExampleSegmentPath() {
	for _, name := range []string{"demo", "/demo", "/run/app/seg", "./seg", "dir/seg", "demo/", "/", "a\x00b"} {
		path, err := shmcast.SegmentPath(name)
		if errors.Is(err, shmcast.ErrInvalidName) {
			fmt.Printf("%-14q invalid: %v\n", name, err)
			continue
		}
		fmt.Printf("%-14q %s\n", name, path)
	}
	// Output:
	// "demo"         /dev/shm/demo
	// "/demo"        /dev/shm/demo
	// "/run/app/seg" /run/app/seg
	// "./seg"        ./seg
	// "dir/seg"      dir/seg
	// "demo/"        demo/
	// "/"            invalid: shmcast: invalid segment name "/": the name is empty
	// "a\x00b"       invalid: shmcast: invalid segment name "a\x00b": the name contains a NUL byte
}

// Errors from opening say what is wrong with the segment.
func ExampleOpenPath_errors() {
	path := filepath.Join(os.TempDir(), "shmcast-example-not-a-segment")
	os.WriteFile(path, make([]byte, 100), 0o600)
	defer os.Remove(path)

	_, err := shmcast.OpenPath(path)
	var he *shmcast.HeaderError
	fmt.Println(errors.Is(err, shmcast.ErrTruncated), errors.As(err, &he) && he.Got == 100)

	_, err = shmcast.Open("shmcast-example-does-not-exist")
	fmt.Println(errors.Is(err, fs.ErrNotExist))

	_, err = shmcast.Open("..")
	var ne *shmcast.NameError
	fmt.Println(errors.Is(err, shmcast.ErrInvalidName), errors.As(err, &ne) && ne.Reason != "")
	// Output:
	// true true
	// true
	// true true
}

// Register as a lossless reader of the segment "orders", created lossless
// by its producer (shmcast publish orders --lossless): the producer waits
// for this reader rather than overwrite a message it has not read.
func ExampleWithLossless() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	r, err := shmcast.Open("orders", shmcast.WithLossless(), shmcast.WithStart(shmcast.Beginning))
	switch {
	case errors.Is(err, shmcast.ErrNotLossless):
		log.Print("the producer did not create the segment lossless") // open it lossy instead
		return
	case errors.Is(err, shmcast.ErrNoFreeSlot):
		log.Print("every reader slot is taken")
		return
	case err != nil:
		log.Print(err) // fs.ErrPermission: registering needs write access
		return
	}
	defer r.Close() // gives the slot back at once
	slot, _ := r.Slot()
	log.Printf("registered in slot %d", slot)

	for m, err := range r.Messages(ctx) {
		var lag *shmcast.LaggedError
		switch {
		case errors.Is(err, shmcast.ErrEvicted):
			// We held the producer back for longer than its max block:
			// from here on we are a lossy reader.
			log.Print(err)
			continue
		case errors.As(err, &lag):
			log.Printf("missed %d messages after the eviction", lag.Missed)
			continue
		case err != nil:
			log.Print(err)
			return
		}
		fmt.Printf("%d: %s\n", m.Seq, m.Data)
	}
}
