//go:build !linux || !(amd64 || arm64)

package shmcast

// Without membarrier a reader cannot park on a segment whose producer relies
// on it (wake_barrier = 1); it waits with timeouts instead.
func membarrierAvailable() bool { return false }

func membarrierGlobal() bool { return false }
