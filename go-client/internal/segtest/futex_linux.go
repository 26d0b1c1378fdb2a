package segtest

import (
	"os"
	"syscall"
	"time"
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

// futexWait is FUTEX_WAIT (0), shared, while *addr == val, for at most d.
func futexWait(addr *uint32, val uint32, d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	syscall.Syscall6(syscall.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), 0, uintptr(val), uintptr(unsafe.Pointer(&ts)), 0, 0)
}

// SlotLockType tests slot i's lock through f (any descriptor of the
// segment file) with F_OFD_GETLK (36) for a write lock on the slot's first
// byte: syscall.F_WRLCK while a live owner holds it, syscall.F_RDLCK for a
// read-lock squatter, syscall.F_UNLCK when it is free.
func SlotLockType(f *os.File, i int) (int16, error) {
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Start: int64(SlotOff(i)), Len: 1}
	if err := syscall.FcntlFlock(f.Fd(), 36, &lk); err != nil {
		return 0, err
	}
	return lk.Type, nil
}
