//go:build !linux

package shmcast

import "time"

// Without Linux futexes a reader never registers as parked; a blocking
// wait sleeps instead, in slices of at most the read-only backoff cap, so
// Close and cancellation are still noticed within about a millisecond.
const futexSupported = false

func futexWaitOn(addr *uint32, val uint32, d time.Duration) {
	time.Sleep(min(d, time.Millisecond))
}

func futexWakeAll(addr *uint32) {}

func futexWakeN(addr *uint32, n int) int { return 0 }
