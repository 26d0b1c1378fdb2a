package shmcast_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	shmcast "github.com/shmcast/shmcast/go-client"
	"github.com/shmcast/shmcast/go-client/internal/segtest"
)

// In production the Rust producer creates the segment, usually in /dev/shm,
// and a reader calls shmcast.Open("name"). To be self-contained, this
// example creates a small segment file with the package's test fixture
// (a minimal producer that only its own tests can import) and publishes
// three messages into it.
func Example() {
	dir, err := os.MkdirTemp("", "shmcast-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "demo.seg")
	producer, unmap, err := segtest.Create(path, 4096)
	if err != nil {
		log.Fatal(err)
	}
	defer unmap()
	for _, s := range []string{"hello", "shared", "memory"} {
		producer.Publish([]byte(s))
	}

	r, err := shmcast.OpenPath(path, shmcast.WithStart(shmcast.Oldest))
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	buf := make([]byte, r.MaxPayload())
	for {
		m, err := r.Read(ctx, buf)
		var lag *shmcast.LaggedError
		switch {
		case errors.As(err, &lag):
			fmt.Println("missed", lag.Missed)
			continue
		case errors.Is(err, context.DeadlineExceeded):
			fmt.Println("no more messages")
			return
		case err != nil:
			log.Fatal(err)
		}
		fmt.Printf("%d: %s\n", m.Seq, m.Data)
	}
	// Output:
	// 1: hello
	// 2: shared
	// 3: memory
	// no more messages
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
	fmt.Println(errors.Is(err, os.ErrNotExist))
	// Output:
	// true true
	// true
}

// The zero-copy form hands the payload in place; whatever the callback
// derives from it counts only if the read returns nil.
func ExampleReader_TryReadFunc() {
	dir, _ := os.MkdirTemp("", "shmcast-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "seg")
	producer, unmap, err := segtest.Create(path, 4096)
	if err != nil {
		log.Fatal(err)
	}
	defer unmap()
	producer.Publish([]byte("zero-copy"))

	r, err := shmcast.OpenPath(path)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	var n int
	err = r.TryReadFunc(func(seq uint64, payload []byte) { n = len(payload) })
	fmt.Println(n, err)
	// Output: 9 <nil>
}

// A blocking read with the default WaitBlock sleeps in the kernel until the
// producer publishes; the producer's wake-up ends the wait. A strategy can
// be chosen by name, as the commands' --wait flags do.
func ExampleWithWait() {
	dir, _ := os.MkdirTemp("", "shmcast-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "seg")
	producer, unmap, err := segtest.Create(path, 4096)
	if err != nil {
		log.Fatal(err)
	}
	defer unmap()

	wait, err := shmcast.ParseWaitStrategy("block")
	if err != nil {
		log.Fatal(err)
	}
	r, err := shmcast.OpenPath(path, shmcast.WithWait(wait))
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	fmt.Println(r.WaitStrategy(), "can park:", r.CanPark()) // the file is writable

	go func() {
		time.Sleep(20 * time.Millisecond) // the reader is asleep by now
		producer.Publish([]byte("wake up"))
	}()
	m, err := r.Read(context.Background(), make([]byte, r.MaxPayload()))
	fmt.Printf("%d: %s %v\n", m.Seq, m.Data, err)
	// Output:
	// block can park: true
	// 1: wake up <nil>
}
