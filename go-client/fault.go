package shmcast

// Fault recovery (WithFaultRecovery): reads that touch the mapping with
// SIGBUS turned into an error, for segments whose file may be truncated
// under the mapping.

import (
	"runtime"
	"runtime/debug"
	"syscall"
)

// tryReadGuarded is tryRead, then exit, with SIGBUS turned into an error
// (WithFaultRecovery).
func (r *Reader) tryReadGuarded(buf []byte) (m Message, err error) {
	err = r.guarded(func() error {
		var readErr error
		m, readErr = r.tryRead(buf)
		return readErr
	})
	return m, err
}

// fault handles a panic p recovered by a read that was touching the
// mapping. With WithFaultRecovery, every such read runs with
// debug.SetPanicOnFault(true) (restoring
// the goroutine's previous setting afterwards): if the segment file was
// truncated under the mapping, touching a lost page raises SIGBUS, which
// then becomes a panic of this goroutine instead of the death of the
// process, and fault turns it into a *HeaderError wrapping ErrTruncated.
// Any other panic (from a ReadFunc callback, say) goes on, after the read
// has ended (the caller's deferred function, with the panic recovered, has
// re-raised it here: the traceback still shows where it began).
func (r *Reader) fault(p any) error {
	// A memory fault (a runtime.Error with an address) on the mapping, or a
	// runtime error once the file is shorter than the mapping: emulators
	// (qemu-user) report SIGBUS without the address, which the runtime then
	// raises as a plain nil-dereference error.
	if re, ok := p.(runtime.Error); ok {
		f, hasAddr := re.(interface{ Addr() uintptr })
		if size, known := r.fileSize(); hasAddr && r.inMapping(f.Addr()) || known && size < r.hdr.DataOffset+r.capacity {
			return &HeaderError{Path: r.path, Err: ErrTruncated, Field: "size", Got: size, Want: r.hdr.DataOffset + r.capacity}
		}
	}
	r.exit()
	panic(p)
}

// inMapping reports whether addr lies in the segment's mappings.
func (r *Reader) inMapping(addr uintptr) bool {
	base := uintptr(r.ringPtr) - uintptr(r.hdr.DataOffset)
	if addr-base < uintptr(r.hdr.DataOffset+r.capacity) {
		return true
	}
	return r.sub != nil && addr-uintptr(r.sub) < subSize
}

// fileSize is the current size of the segment file, if it can be known.
// Called while the Reader is in use, so the descriptor is open.
func (r *Reader) fileSize() (uint64, bool) {
	var st syscall.Stat_t
	if r.fd < 0 || syscall.Fstat(r.fd, &st) != nil {
		return 0, false
	}
	return uint64(st.Size), true
}

func (r *Reader) tryReadFuncGuarded(fn func(seq uint64, payload []byte)) error {
	return r.guarded(func() error { return r.tryReadFunc(fn) })
}

// guarded runs op, then exit, with SIGBUS turned into an error
// (WithFaultRecovery). op does not escape, so the closures passed here stay
// on the stack.
func (r *Reader) guarded(op func() error) (err error) {
	old, done := debug.SetPanicOnFault(true), false
	defer func() {
		if !done {
			err = r.fault(recover())
		}
		debug.SetPanicOnFault(old)
		r.exit()
	}()
	err = op()
	done = true
	return err
}

// checkEndGuarded runs checkEnd on the mapping, as a read does: nil after
// Close (the caller reports that), and a SIGBUS from a truncated file
// becomes an error.
func (r *Reader) checkEndGuarded() error {
	if r.enter() != nil {
		return nil
	}
	if !r.guard {
		defer r.exit()
		return r.checkEnd()
	}
	return r.guarded(r.checkEnd)
}
