package segtest

import (
	"os"
	"syscall"
	"unsafe"
)

// futexWake is FUTEX_WAKE (1), shared (no FUTEX_PRIVATE_FLAG: readers may
// be other processes), for every waiter. Written here rather than taken
// from the package under test, like everything in this fixture.
func futexWake(addr *uint32) {
	syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), 1, 1<<31-1, 0, 0, 0)
}

// lockFile takes the producer's liveness lock on f: F_OFD_SETLK (37), a
// write lock over byte range [0, 1), held by f's open file description.
func lockFile(f *os.File) error {
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0, Start: 0, Len: 1}
	return syscall.FcntlFlock(f.Fd(), 37, &lk)
}
