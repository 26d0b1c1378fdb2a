package shmcast

import (
	"syscall"
	"time"
	"unsafe"
)

// Futex operations (linux/futex.h). FUTEX_PRIVATE_FLAG is deliberately not
// used: the producer and the other waiters are other processes, and a
// shared futex is keyed by file and offset, whatever the mapping.
const (
	futexWait = 0
	futexWake = 1

	// futexSupported: a reader may register as parked and be woken.
	futexSupported = true
)

// futexWaitOn sleeps while *addr == val, for at most d (> 0). Every outcome
// (woken, EAGAIN because the word changed, EINTR, timeout, even EFAULT) is
// reported the same way, by returning: the caller re-reads the ring.
//
// syscall.Syscall6, not RawSyscall: the runtime must know the thread is
// blocked, so it can hand the P to another thread meanwhile.
func futexWaitOn(addr *uint32, val uint32, d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWait, uintptr(val),
		uintptr(unsafe.Pointer(&ts)), 0, 0)
}

// futexWakeAll wakes every thread, in any process, waiting on addr.
func futexWakeAll(addr *uint32) {
	futexWakeN(addr, 1<<31-1)
}

// futexWakeN wakes at most n threads, in any process, waiting on addr
// (oldest first among threads of equal priority) and returns how many it
// woke.
func futexWakeN(addr *uint32, n int) int {
	woken, _, errno := syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), futexWake, uintptr(n), 0, 0, 0)
	if errno != 0 {
		return 0
	}
	return int(woken)
}
