//go:build !linux

package shmcast

// Without Linux OFD locks the producer's liveness cannot be tested: it
// always counts as alive, and blocking reads never report ErrProducerGone.
func lockHeld(fd int) bool { return true }

func replacedName(fd int, path string) bool { return false }
