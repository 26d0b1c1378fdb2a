package shmcast

import (
	"io"
	"syscall"
)

// fOFDGetLK is F_OFD_GETLK (linux/fcntl.h, 36 on every architecture); the
// syscall package defines it only for some.
const fOFDGetLK = 36

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
