package shmcast

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ShmDir is where POSIX shared-memory objects live on Linux.
const ShmDir = "/dev/shm"

// Option configures Open and OpenPath.
type Option func(*options)

type options struct {
	start   Start
	pollMax time.Duration
}

// WithStart sets where the Reader begins; the default is Oldest.
func WithStart(s Start) Option { return func(o *options) { o.start = s } }

// WithPollInterval sets the longest sleep of a blocking read between two
// polls of the segment (default 1 ms). Shorter means lower latency for an
// idle reader at the cost of more wake-ups.
func WithPollInterval(d time.Duration) Option { return func(o *options) { o.pollMax = d } }

// SegmentPath resolves a segment name as the shmcast CLI does: "/demo" (one
// leading slash and no other) and "demo" (no slash) name the shared-memory
// object /dev/shm/demo; anything with a slash after its first character is
// a file path, returned unchanged.
func SegmentPath(name string) (string, error) {
	shm := strings.TrimPrefix(name, "/")
	if strings.Contains(shm, "/") {
		return name, nil
	}
	if shm == "" || shm == "." || shm == ".." {
		return "", fmt.Errorf("shmcast: invalid segment name %q", name)
	}
	return ShmDir + "/" + shm, nil
}

// Open opens the segment called name (see SegmentPath) for reading.
func Open(name string, opts ...Option) (*Reader, error) {
	path, err := SegmentPath(name)
	if err != nil {
		return nil, err
	}
	return OpenPath(path, opts...)
}

// OpenPath maps the segment file at path read-only, validates its header
// (docs/LAYOUT.md, "Validating a segment") and joins it at the chosen start.
// Header problems are *HeaderError values wrapping ErrTruncated,
// ErrNotInitialized (the producer may still be creating it: retry),
// ErrBadMagic, ErrUnsupportedVersion, ErrUnsupportedFlags, ErrInvalidHeader
// or ErrSizeMismatch; a missing or forbidden file matches fs.ErrNotExist or
// fs.ErrPermission.
//
// The file descriptor is closed before OpenPath returns; the Reader holds
// only the mapping, until Close.
func OpenPath(path string, opts ...Option) (*Reader, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	// O_NONBLOCK so that a FIFO at path cannot block the open.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("shmcast: %w", err)
	}
	defer f.Close()
	size, err := fileSize(f)
	if err != nil {
		return nil, err
	}
	if size < headerSize {
		return nil, &HeaderError{Path: path, Err: ErrTruncated, Field: "size", Got: uint64(size), Want: headerSize}
	}

	// Validate the header through a mapping of its page alone before mapping
	// the ring, and check the file size against it: touching a page past the
	// end of a shrunk file would kill the process with SIGBUS.
	hdrMem, err := mmap(f, headerSize)
	if err != nil {
		return nil, fmt.Errorf("shmcast: mmap %s: %w", path, err)
	}
	hdr, err := decodeHeader(hdrMem, size, path)
	syscall.Munmap(hdrMem)
	if err != nil {
		return nil, err
	}
	total := int(hdr.DataOffset + hdr.Capacity)
	mem, err := mmap(f, total)
	if err != nil {
		return nil, fmt.Errorf("shmcast: mmap %s: %w", path, err)
	}
	// The file could have been replaced or shrunk in between; look again now
	// that the mapping exists.
	if size, err = fileSize(f); err == nil && size != int64(total) {
		err = &HeaderError{Path: path, Err: ErrSizeMismatch, Field: "size", Got: uint64(size), Want: uint64(total)}
	}
	if err != nil {
		syscall.Munmap(mem)
		return nil, err
	}
	m := &mapping{mem: mem}
	unmap := func() error {
		if err := m.unmap(); err != nil {
			return fmt.Errorf("shmcast: munmap %s: %w", path, err)
		}
		return nil
	}
	r, err := newReader(mem, hdr, path, unmap, o)
	if err != nil {
		m.unmap()
		return nil, err
	}
	// A Reader dropped without Close still releases its mapping. The
	// cleanup holds m, not r, so it does not keep r reachable.
	runtime.AddCleanup(r, func(m *mapping) { m.unmap() }, m)
	return r, nil
}

// mapping unmaps its memory once, whether Close or the garbage collector
// gets there first, and then forgets the address.
type mapping struct {
	once sync.Once
	mem  []byte
	err  error
}

func (m *mapping) unmap() error {
	m.once.Do(func() {
		m.err = syscall.Munmap(m.mem)
		m.mem = nil
	})
	return m.err
}

func fileSize(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("shmcast: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return 0, fmt.Errorf("shmcast: %s: %w", f.Name(), errNotRegular)
	}
	return fi.Size(), nil
}

var errNotRegular = errors.New("not a regular file")

func mmap(f *os.File, n int) ([]byte, error) {
	return syscall.Mmap(int(f.Fd()), 0, n, syscall.PROT_READ, syscall.MAP_SHARED)
}
