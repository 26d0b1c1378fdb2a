package shmcast

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/shmcast/shmcast/go-client/internal/segtest"
)

func TestProgressAndLagFollowTheProducerWithoutReading(t *testing.T) {
	w := segtest.NewHeap(4096)
	r := mustOpenMem(t, w, Oldest)
	if p := r.Progress(); p != (Progress{NextSeq: 1}) {
		t.Fatalf("before any publish: %+v", p)
	}
	for i := 0; i < 5; i++ {
		w.PublishPattern(40)
	}
	p := r.Progress()
	if p.NextSeq != 6 || p.OldestSeq != 1 || p.Lag != 5 {
		t.Fatalf("after 5 publishes: %+v", p)
	}
	buf := make([]byte, r.MaxPayload())
	if _, err := r.TryRead(buf); err != nil {
		t.Fatal(err)
	}
	if lag := r.Lag(); lag != 4 {
		t.Fatalf("lag after one read = %d, want 4", lag)
	}
	// Lapped: the oldest retained moves on, and the lag still counts what
	// was overwritten (a read reports it as a LaggedError).
	for i := 0; i < 200; i++ {
		w.PublishPattern(40)
	}
	p = r.Progress()
	if p.NextSeq != 206 || p.OldestSeq <= 2 || p.Lag != 204 {
		t.Fatalf("after a lap: %+v", p)
	}
	if _, err := r.TryRead(buf); err == nil {
		t.Fatal("a lapped reader read without a LaggedError")
	}
	if got := r.Lag(); got != 206-r.NextSeq() {
		t.Fatalf("lag %d, reader at %d", got, r.NextSeq())
	}
}

func TestStatRatesAndRegisteredReaders(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seg")
	w, unmap, err := segtest.CreateLossless(path, 1<<16, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer unmap()
	reg, err := OpenPath(path, WithLossless(), WithStart(Next))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	r, err := OpenPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	before := r.Stat()
	for i := 0; i < 10; i++ {
		if _, _, _, err := w.PublishWait(make([]byte, 100), time.Millisecond, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(10 * time.Millisecond)
	now := r.Stat()
	if !now.ProducerAlive || now.NextSeq != 11 || now.OldestSeq != 1 {
		t.Fatalf("stat: %+v", now)
	}
	rates := now.Since(before)
	if rates.RetainedMsgs != 10 || rates.MsgsPerSec <= 0 || rates.RetainedFor <= 0 {
		t.Fatalf("rates: %+v", rates)
	}
	// Ten records of 16 + 104 bytes, the newest one's start: nine of them.
	if got := now.Position - before.Position; got != 9*120 {
		t.Fatalf("position moved %d bytes, want %d", got, 9*120)
	}
	if len(now.Readers) != 1 || now.Readers[0].Evicted || now.Readers[0].LagMessages != 10 {
		t.Fatalf("readers: %+v", now.Readers)
	}
	if slot, _ := reg.Slot(); now.Readers[0].Slot != slot {
		t.Fatalf("slot %d, registered reader holds %d", now.Readers[0].Slot, slot)
	}
	if now.WakeThrottled || now.Evictions != 0 {
		t.Fatalf("stat: %+v", now)
	}
	r.Close()
	if s := r.Stat(); s.NextSeq != 0 || s.Taken.IsZero() {
		t.Fatalf("after Close: %+v", s)
	}
}
