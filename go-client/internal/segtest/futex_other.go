//go:build !linux

package segtest

import "os"

// futexWake does nothing without Linux futexes; readers there poll.
func futexWake(addr *uint32) {}

// lockFile does nothing without Linux OFD locks.
func lockFile(f *os.File) error { return nil }
