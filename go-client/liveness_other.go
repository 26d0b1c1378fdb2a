//go:build !linux

package shmcast

import (
	"errors"
	"fmt"
)

// Without Linux OFD locks the producer's liveness cannot be tested: it
// always counts as alive, and blocking reads never report ErrProducerGone.
func lockHeld(fd int) bool { return true }

func replacedName(fd int, path string) bool { return false }

// Reader slots are owned through OFD locks, which only Linux has: a Reader
// cannot register without them.
func tryLockByte(fd int, off uint64) (bool, error) {
	return false, fmt.Errorf("reader slots need Linux open file description locks: %w", errors.ErrUnsupported)
}

func unlockByte(fd int, off uint64) error { return nil }
