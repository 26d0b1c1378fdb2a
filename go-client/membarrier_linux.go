//go:build linux && (amd64 || arm64)

package shmcast

import "syscall"

// membarrier(2) commands (linux/membarrier.h).
const (
	membarrierQuery          = 0
	membarrierGlobalExpedite = 1 << 1
)

// membarrierAvailable reports whether MEMBARRIER_CMD_GLOBAL_EXPEDITED may be
// called here (the kernel offers it and no seccomp filter refuses it).
func membarrierAvailable() bool {
	r, _, errno := syscall.Syscall(sysMembarrier, membarrierQuery, 0, 0)
	return errno == 0 && r&membarrierGlobalExpedite != 0
}

// membarrierGlobal runs a full memory barrier on every CPU running a thread
// of a process registered for it (the producer), as LAYOUT.md's parking
// step 3 requires when wake_barrier = 1.
func membarrierGlobal() bool {
	_, _, errno := syscall.Syscall(sysMembarrier, membarrierGlobalExpedite, 0, 0)
	return errno == 0
}
