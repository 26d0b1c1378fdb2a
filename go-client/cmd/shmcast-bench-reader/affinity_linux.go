package main

import (
	"syscall"
	"unsafe"
)

// pinToCPU restricts the calling OS thread to CPU k with
// sched_setaffinity(0, ...); the caller has locked its goroutine to that
// thread. The system call and its argument layout are the same on amd64 and
// arm64 (the only targets the shmcast package builds for).
func pinToCPU(k int) error {
	var set [maxCPU / 64]uint64
	set[k/64] = 1 << (k % 64)
	_, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, 0, unsafe.Sizeof(set), uintptr(unsafe.Pointer(&set)))
	if errno != 0 {
		return errno
	}
	return nil
}
