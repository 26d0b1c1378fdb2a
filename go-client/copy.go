package shmcast

import (
	"sync/atomic"
	"unsafe"
)

// Two ways to copy a payload out of the ring. Both are correct on amd64 and
// arm64 when followed by loadFence() and the atomic re-load of intent; the
// reader uses copyPayload, which is one of them (see its comment for the
// measurement behind the choice). Both stay here so BenchmarkCopyStrategy can
// keep comparing them.

// copyWordsAtomic copies len(dst) bytes from src with 64-bit atomic loads,
// the literal reading of docs/LAYOUT.md ("every access is an aligned 64-bit
// atomic load"). src must be 8-byte aligned and readable for
// align8(len(dst)) bytes: the trailing partial word is loaded whole, which
// is in bounds because records are padded to a multiple of 8.
func copyWordsAtomic(dst []byte, src unsafe.Pointer) {
	n := len(dst)
	i := 0
	d := unsafe.Pointer(unsafe.SliceData(dst))
	for ; i+8 <= n; i += 8 {
		*(*uint64)(unsafe.Add(d, i)) = atomic.LoadUint64((*uint64)(unsafe.Add(src, i)))
	}
	if i < n {
		w := atomic.LoadUint64((*uint64)(unsafe.Add(src, i)))
		for ; i < n; i++ {
			dst[i] = byte(w)
			w >>= 8
		}
	}
}

// copyPlain copies with the runtime's memmove. The bytes may be torn while
// the producer overwrites them; the caller detects that with loadFence() and
// the intent re-check and discards the copy. Go's memory model gives a racy
// read of this kind a defined (if unspecified) result rather than undefined
// behaviour, and the race detector ignores memory outside the Go heap.
func copyPlain(dst []byte, src []byte) {
	copy(dst, src)
}
