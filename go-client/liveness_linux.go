package shmcast

import (
	"io"
	"os"
	"syscall"
)

// fOFDGetLK and fOFDSetLK are F_OFD_GETLK and F_OFD_SETLK (linux/fcntl.h,
// 36 and 37 on every architecture); the syscall package defines them only
// for some.
const (
	fOFDGetLK = 36
	fOFDSetLK = 37
)

// lockHeld tests the producer's lock (docs/LAYOUT.md, "Producer liveness"):
// an open file description lock, F_WRLCK over byte range [0, 1), held by the
// producer for its lifetime. F_OFD_GETLK acquires nothing, so testing never
// disturbs the producer, and a read-only descriptor is enough. It reports
// true (alive) when the test itself fails.
func lockHeld(fd int) bool {
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: io.SeekStart, Start: 0, Len: 1}
	if err := syscall.FcntlFlock(uintptr(fd), fOFDGetLK, &lk); err != nil {
		return true
	}
	// Only the producer's write lock counts: any reader may take a read lock
	// on byte 0, and a read lock cannot coexist with the producer's write lock,
	// so it never means "alive" (docs/SECURITY.md).
	return lk.Type == syscall.F_WRLCK
}

// replacedName reports whether path now names a file other than the one
// open at fd (device and inode differ). A name that no longer exists is
// not "replaced"; as in the Rust reader, a descriptor that cannot be
// fstat-ed counts as a different file when the name exists.
func replacedName(fd int, path string) bool {
	var named, open syscall.Stat_t
	if syscall.Stat(path, &named) != nil {
		return false
	}
	if syscall.Fstat(fd, &open) != nil {
		return true
	}
	return named.Dev != open.Dev || named.Ino != open.Ino
}

// tryLockByte takes a write lock (F_OFD_SETLK, F_WRLCK) on the one byte at
// off, held by fd's open file description: a reader slot's ownership
// (docs/LAYOUT.md, "Lossless mode"). It reports false when another open
// file description holds a lock there (EAGAIN or EACCES: a live owner, or
// a read-lock squatter). fd must be open for writing.
func tryLockByte(fd int, off uint64) (bool, error) {
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: io.SeekStart, Start: int64(off), Len: 1}
	switch err := syscall.FcntlFlock(uintptr(fd), fOFDSetLK, &lk); err {
	case nil:
		return true, nil
	case syscall.EAGAIN, syscall.EACCES:
		return false, nil
	default:
		return false, os.NewSyscallError("fcntl F_OFD_SETLK", err)
	}
}

// unlockByte releases fd's lock on the byte at off, if it holds one.
func unlockByte(fd int, off uint64) error {
	lk := syscall.Flock_t{Type: syscall.F_UNLCK, Whence: io.SeekStart, Start: int64(off), Len: 1}
	if err := syscall.FcntlFlock(uintptr(fd), fOFDSetLK, &lk); err != nil {
		return os.NewSyscallError("fcntl F_OFD_SETLK", err)
	}
	return nil
}
