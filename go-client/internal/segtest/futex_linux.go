package segtest

import (
	"syscall"
	"unsafe"
)

// futexWake is FUTEX_WAKE (1), shared (no FUTEX_PRIVATE_FLAG: readers may
// be other processes), for every waiter. Written here rather than taken
// from the package under test, like everything in this fixture.
func futexWake(addr *uint32) {
	syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), 1, 1<<31-1, 0, 0, 0)
}
