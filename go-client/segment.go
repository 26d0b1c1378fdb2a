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
	"unicode/utf8"
)

// ShmDir is where POSIX shared-memory objects live on Linux.
const ShmDir = "/dev/shm"

// Option configures Open and OpenPath.
type Option func(*options)

type options struct {
	start   Start
	wait    WaitStrategy
	pollMax time.Duration

	// Test hooks.
	readOnly  bool          // open the file read-only even if it is writable
	parkSlice time.Duration // replaces MaxParkSlice
	liveEvery time.Duration // replaces LivenessInterval

	faultRecovery bool
	lossless      bool
}

// WithStart sets where the Reader begins; the default is Oldest.
func WithStart(s Start) Option { return func(o *options) { o.start = s } }

// WithWait sets how blocking reads wait for a message; the default is
// WaitBlock.
func WithWait(s WaitStrategy) Option { return func(o *options) { o.wait = s } }

// WithPollInterval sets the longest sleep between two polls of WaitBackoff,
// and the longest futex wait of a WaitBlock reader that cannot park
// (default 1 ms). Shorter means lower latency for such an idle reader at
// the cost of more wake-ups. A parked reader is woken by the producer and
// does not use it.
func WithPollInterval(d time.Duration) Option { return func(o *options) { o.pollMax = d } }

// WithFaultRecovery makes the Reader survive the truncation of its segment
// file by another process. Touching a page of a mapping past the end of
// its file raises SIGBUS, which normally kills the process; with this
// option every read runs with runtime/debug.SetPanicOnFault(true) (the
// goroutine's previous setting is restored afterwards) and turns such a
// fault into a *HeaderError wrapping ErrTruncated. It costs about 8-10 ns
// per read (a deferred recover and two calls of SetPanicOnFault; see
// README.md), so it is off by default: producers never shrink segments,
// and only a process with write access to the file can. A fault inside a
// ReadFunc callback on the payload is recovered too; any other panic of the
// callback is passed on. Not under the race detector, which performs the
// atomic loads in its own runtime, where a fault still kills the process.
func WithFaultRecovery() Option { return func(o *options) { o.faultRecovery = true } }

// WithLossless registers the Reader in a reader slot of a lossless segment
// (docs/LAYOUT.md, "Lossless mode"): the producer then never overwrites a
// message this Reader has not read yet; it waits for it instead (or, with
// a max_block, evicts it after that long; see [ErrEvicted]). A lossy Reader
// of the same segment, one opened without this option, is not waited for.
//
// Registering needs write access to the segment file (the Reader writes
// its progress into its slot) and a free slot: Open fails with a
// [*RegisterError] otherwise, matching [ErrNotLossless], [ErrNoFreeSlot] or
// [io/fs.ErrPermission]; it never falls back to reading lossy. The slot is
// the Reader's until [Reader.Close], which gives it back, or until the
// process exits (the kernel then releases its lock and the producer frees
// it). A registered Reader that is not read from holds the producer back:
// close it when done with it, rather than leaving it to the garbage
// collector. See the package documentation, "Lossless mode".
func WithLossless() Option { return func(o *options) { o.lossless = true } }

// SegmentPath resolves a segment name by the rule the Rust library and the
// shmcast CLI share (docs/CLI.md, "Naming a segment"):
//
//   - "demo" (no slash) and "/demo" (one leading slash and no other) name
//     the POSIX shared-memory object /demo, the file /dev/shm/demo on Linux;
//   - anything with a slash after its first character ("/run/app/seg",
//     "./seg", "dir/seg", also "demo/" with its trailing slash) is the path
//     of a regular file, returned unchanged.
//
// A name that is not valid UTF-8 or contains a NUL byte, and a shared-memory
// name that is empty
// ("" or "/"), "." or ".." (also "/." and "/..") or longer than 255 bytes,
// are refused with a [*NameError] (errors.Is [ErrInvalidName]), with the
// reason the Rust library gives. A path is not checked further here: one
// that does not exist, or is not a regular file, fails when it is opened.
func SegmentPath(name string) (string, error) {
	// The checks and reasons of the Rust library's Location::parse, in its order.
	shm := strings.TrimPrefix(name, "/")
	var reason string
	switch {
	case !utf8.ValidString(name):
		// The Rust library takes names as UTF-8 strings (&str), so it never
		// sees one that is not; refusing it here first keeps the two readers
		// agreeing on every name.
		reason = "the name is not valid UTF-8"
	case strings.IndexByte(name, 0) >= 0:
		reason = "the name contains a NUL byte"
	case strings.Contains(shm, "/"):
		return name, nil
	case shm == "":
		reason = "the name is empty"
	case shm == "." || shm == "..":
		reason = "'.' and '..' are not segment names"
	case len(shm) > maxShmName:
		reason = "the name is longer than 255 bytes"
	default:
		return ShmDir + "/" + shm, nil
	}
	return "", &NameError{Name: name, Reason: reason}
}

// maxShmName is the longest shared-memory name without its slash (NAME_MAX).
const maxShmName = 255

// checkPath refuses a path that no system call can take (OpenPath).
func checkPath(path string) error {
	if path == "" {
		return &NameError{Name: path, Reason: "the path is empty"}
	}
	if strings.IndexByte(path, 0) >= 0 {
		return &NameError{Name: path, Reason: "the path contains a NUL byte"}
	}
	return nil
}

// Open opens the segment called name for reading: [SegmentPath] says which
// file that is, and [OpenPath] opens it. An invalid name is a [*NameError]
// (errors.Is [ErrInvalidName]); a name that does not exist matches
// [io/fs.ErrNotExist].
//
// A symbolic link at a shared-memory name is never followed (as the Rust
// library and glibc's shm_open): it is a [*FileTypeError]. (A path given to
// OpenPath, or a name with a slash after its first character, is the
// caller's choice and follows links.)
func Open(name string, opts ...Option) (*Reader, error) {
	path, err := SegmentPath(name)
	if err != nil {
		return nil, err
	}
	shm := !strings.Contains(strings.TrimPrefix(name, "/"), "/")
	return openRetrying(path, shm, opts)
}

// InitWait is how long Open and OpenPath keep retrying, every millisecond,
// a segment that a live producer is still creating: an empty file, or one
// whose magic is still zero, while a producer holds its lock
// (docs/LAYOUT.md, "Validating a segment before reading it"). An empty
// file whose lock is free is retried for 10 ms (the moment between a
// producer's creation of the file and its lock), then it is ErrTruncated.
const InitWait = 2 * time.Second

const (
	emptyGrace = 10 * time.Millisecond
	initPoll   = time.Millisecond
)

// openRetrying is OpenPath, retrying a segment being created as InitWait
// says. shm: path is a shared-memory object's file, whose symbolic link is
// not followed.
func openRetrying(path string, shm bool, opts []Option) (*Reader, error) {
	start := time.Now()
	for {
		r, err := openPath(path, shm, opts...)
		var he *HeaderError
		if !errors.As(err, &he) {
			return r, err
		}
		waited := time.Since(start)
		switch {
		case he.Err == ErrNotInitialized && he.Creating && waited < InitWait:
		case he.Err == ErrTruncated && he.Got == 0 && waited < emptyGrace:
		default:
			return r, err
		}
		time.Sleep(initPoll)
	}
}

// OpenPath maps the segment file at path read-only, validates its header
// (docs/LAYOUT.md, "Validating a segment") and joins it at the chosen start.
//
// With WaitBlock (the default) on Linux, OpenPath first tries to open the
// file for reading and writing; if it may, it also maps the subscriber page
// (file offset 4096, one page) writable, the only bytes the Reader ever
// writes (the parked flag), so the producer can wake the Reader (see
// CanPark). Otherwise, or if that open fails for any reason, the file is
// opened read-only and the Reader waits with bounded futex timeouts.
// Header problems are *HeaderError values wrapping ErrTruncated,
// ErrNotInitialized (the producer may still be creating it: retry),
// ErrBadMagic, ErrUnsupportedVersion, ErrUnsupportedFlags, ErrInvalidHeader
// or ErrSizeMismatch; a missing or forbidden file matches fs.ErrNotExist or
// fs.ErrPermission.
//
// With WithLossless, OpenPath opens the file for reading and writing (or
// fails, once the header has been validated, with a *RegisterError that
// matches fs.ErrPermission), checks that the segment is lossless
// (ErrNotLossless), maps the subscriber page writable and registers in the
// first free reader slot (ErrNoFreeSlot when there is none).
//
// The Reader keeps the file open, until Close, to test whether the producer
// is alive (see ProducerAlive): the producer holds a lock on the file for as
// long as it lives.
//
// A segment that a live producer is still creating is retried for up to
// [InitWait]; a FIFO, device or directory is a [*FileTypeError]
// (errors.Is [ErrNotRegularFile]), reported without blocking.
func OpenPath(path string, opts ...Option) (*Reader, error) {
	if err := checkPath(path); err != nil {
		return nil, err
	}
	return openRetrying(path, false, opts)
}

// openPath is one attempt of OpenPath; shm: do not follow a symbolic link
// at path.
func openPath(path string, shm bool, opts ...Option) (*Reader, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.wait < 0 || int(o.wait) >= len(waitNames) {
		return nil, fmt.Errorf("shmcast: invalid wait strategy %v", o.wait)
	}
	wantWrite := o.lossless || (o.wait == WaitBlock && futexSupported && !o.readOnly)
	f, writeErr, err := openFile(path, wantWrite, shm)
	writable := err == nil && wantWrite && writeErr == nil
	if err != nil {
		return nil, openError(path, shm, err)
	}
	keep := false // the Reader takes f over
	defer func() {
		if !keep {
			f.Close()
		}
	}()
	size, err := fileSize(f)
	if err != nil {
		return nil, err
	}
	// A producer creates its file empty, locks it, then sizes it: an empty
	// file is a segment being created only while the lock is held.
	if size == 0 && lockHeld(int(f.Fd())) {
		return nil, &HeaderError{Path: path, Err: ErrNotInitialized, Field: "size", Creating: true}
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
	if he, ok := err.(*HeaderError); ok && he.Err == ErrNotInitialized {
		he.Creating = lockHeld(int(f.Fd()))
	}
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
	if err == nil && o.lossless {
		err = canRegister(path, hdr, writeErr)
	}
	if err != nil {
		syscall.Munmap(mem)
		return nil, err
	}
	m := &mapping{mem: mem, file: f}
	if writable {
		// Only after validation: nothing is ever written to a file that is
		// not a valid segment. A failure (a sealed memfd, say) just means
		// the Reader cannot park, but a Reader that must register cannot.
		sub, err := syscall.Mmap(int(f.Fd()), headerSize, subSize,
			syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
		if err == nil {
			m.sub = sub
		} else if o.lossless {
			m.unmap() // closes f
			return nil, &RegisterError{Path: path, Slots: int(hdr.ReaderSlots),
				Err: fmt.Errorf("mmap the subscriber area writable: %w", err)}
		}
	}
	unmap := func() error {
		if err := m.unmap(); err != nil {
			return fmt.Errorf("shmcast: munmap %s: %w", path, err)
		}
		return nil
	}
	r, err := newReader(mem, hdr, path, unmap, o, m.sub)
	if err != nil {
		m.unmap() // closes f
		return nil, err
	}
	keep = true
	// Fd is read once here; the descriptor stays open until the mapping is
	// released, which happens only when nothing uses the Reader any more
	// (see Reader.release), so the number cannot be reused under a check.
	r.fd = int(f.Fd())
	if o.lossless {
		if err := r.register(o.start); err != nil {
			m.unmap() // closes f, which would release a slot lock too
			return nil, err
		}
	}
	// A Reader dropped without Close still releases its mapping. The
	// cleanup holds m, not r, so it does not keep r reachable.
	runtime.AddCleanup(r, func(m *mapping) { m.unmap() }, m)
	return r, nil
}

// mapping unmaps its memory and closes the segment file once, whether
// Close or the garbage collector gets there first, and then forgets them.
type mapping struct {
	once sync.Once
	mem  []byte   // the whole segment, read-only
	sub  []byte   // the subscriber page, writable; nil if the file is read-only
	file *os.File // kept open for the liveness test (F_OFD_GETLK)
	err  error
}

func (m *mapping) unmap() error {
	m.once.Do(func() {
		m.err = syscall.Munmap(m.mem)
		if m.sub != nil {
			m.err = errors.Join(m.err, syscall.Munmap(m.sub))
		}
		if m.file != nil {
			m.file.Close() // a read-only close cannot lose data
		}
		m.mem, m.sub, m.file = nil, nil, nil
	})
	return m.err
}

// openFile opens path read-write if wantWrite and that is allowed, else
// read-only; writeErr is why the read-write open failed. Any failure of the
// read-write open (EACCES, EPERM, EROFS, ETXTBSY, EISDIR...) falls back to
// read-only, so the errors reported are those of a read-only open, as
// before readers could park (a Reader that must register reports writeErr
// once the header has shown that the file is a lossless segment).
// O_NONBLOCK so that a FIFO at path cannot block the open; with nofollow,
// O_NOFOLLOW so that a symbolic link at path is refused (ELOOP).
func openFile(path string, wantWrite, nofollow bool) (f *os.File, writeErr, err error) {
	flags := syscall.O_NONBLOCK | syscall.O_CLOEXEC
	if nofollow {
		flags |= syscall.O_NOFOLLOW
	}
	if wantWrite {
		f, writeErr = os.OpenFile(path, os.O_RDWR|flags, 0)
		if writeErr == nil {
			return f, nil, nil
		}
	}
	f, err = os.OpenFile(path, os.O_RDONLY|flags, 0)
	return f, writeErr, err
}

// openError reports the failure err of opening path: a directory, or a
// symbolic link at a shared-memory name (shm), is a *FileTypeError.
func openError(path string, shm bool, err error) error {
	switch {
	case errors.Is(err, syscall.EISDIR):
		return &FileTypeError{Path: path, Kind: "a directory"}
	case shm && errors.Is(err, syscall.ELOOP):
		return &FileTypeError{Path: path, Kind: "a symbolic link (never followed at a shared-memory name)"}
	}
	return fmt.Errorf("shmcast: %w", err)
}

// canRegister says why a Reader opened WithLossless cannot register on the
// segment with header hdr, if it cannot: the segment is not lossless, or
// the file could not be opened for writing (writeErr). The slots are
// tried later, by Reader.register.
func canRegister(path string, hdr Header, writeErr error) error {
	if !hdr.Lossless() {
		return &RegisterError{Path: path, Err: ErrNotLossless}
	}
	if writeErr != nil {
		return &RegisterError{Path: path, Slots: int(hdr.ReaderSlots), Err: writeErr}
	}
	return nil
}

func fileSize(f *os.File) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("shmcast: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return 0, &FileTypeError{Path: f.Name(), Kind: fileKind(fi.Mode())}
	}
	return fi.Size(), nil
}

// fileKind says what a file that is not a regular file is, in the Rust
// library's words.
func fileKind(m os.FileMode) string {
	switch {
	case m&os.ModeNamedPipe != 0:
		return "a FIFO (named pipe)"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m.IsDir():
		return "a directory"
	case m&os.ModeSymlink != 0:
		return "a symbolic link"
	}
	return "not a regular file"
}

func mmap(f *os.File, n int) ([]byte, error) {
	return syscall.Mmap(int(f.Fd()), 0, n, syscall.PROT_READ, syscall.MAP_SHARED)
}
