//go:build !linux

package segtest

// futexWake does nothing without Linux futexes; readers there poll.
func futexWake(addr *uint32) {}
