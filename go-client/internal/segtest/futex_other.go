//go:build !linux

package segtest

import (
	"errors"
	"os"
	"time"
)

// futexWake does nothing without Linux futexes; readers there poll.
func futexWake(addr *uint32) {}

// lockFile does nothing without Linux OFD locks.
func lockFile(f *os.File) error { return nil }

// futexWait sleeps for d without Linux futexes.
func futexWait(addr *uint32, val uint32, d time.Duration) { time.Sleep(d) }

// SlotLockType cannot test a lock without Linux OFD locks.
func SlotLockType(f *os.File, i int) (int16, error) { return 0, errors.ErrUnsupported }
