package shmcast

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
)

// Sentinel errors. Every error this package returns for a bad segment wraps
// exactly one of them, so callers can branch with [errors.Is]; the typed
// errors ([*NameError], [*HeaderError], [*RegisterError], [*CorruptError],
// [*LaggedError], [*ShortBufferError], [*ProducerGoneError]) carry the
// details for [errors.As].
//
// A segment that does not exist or may not be opened is reported with the
// operating system's error, which matches [io/fs.ErrNotExist] or
// [io/fs.ErrPermission]. A closed [Reader] returns [os.ErrClosed].
var (
	// ErrInvalidName matches every [*NameError]: a segment name or path
	// that cannot name a segment ("", "/", "..", a NUL byte, ...).
	ErrInvalidName = errors.New("shmcast: invalid segment name")
	// ErrTruncated: the file is shorter than the 4096-byte producer header.
	ErrTruncated = errors.New("shmcast: segment truncated")
	// ErrNotInitialized: the magic word is still zero, or the file is empty
	// and a producer holds its lock. [HeaderError.Creating] says whether a
	// producer holds the lock, so that retrying can succeed (Open already
	// retried for up to [InitWait]).
	ErrNotInitialized = errors.New("shmcast: segment not initialised")
	// ErrNotRegularFile matches every [*FileTypeError]: the file at the
	// segment's name is a FIFO, a device, a directory, a socket, or a
	// symbolic link at a shared-memory name (never followed), so it is not a
	// segment.
	ErrNotRegularFile = errors.New("shmcast: not a regular file")
	// ErrBadMagic: the file is not a shmcast segment.
	ErrBadMagic = errors.New("shmcast: bad magic")
	// ErrUnsupportedVersion: the layout version is not 1.
	ErrUnsupportedVersion = errors.New("shmcast: unsupported layout version")
	// ErrUnsupportedFlags: the header has a flag bit this reader does not know.
	ErrUnsupportedFlags = errors.New("shmcast: unsupported flags")
	// ErrInvalidHeader: data_offset or capacity is out of range, or a
	// lossless segment's reader_slots is not between 1 and 31.
	ErrInvalidHeader = errors.New("shmcast: invalid header")
	// ErrSizeMismatch: the file size is not data_offset + capacity.
	ErrSizeMismatch = errors.New("shmcast: segment size does not match its header")
	// ErrCorrupt: the ring holds something a valid producer never writes, or
	// the producer overran the reader too many times in a row to resync.
	ErrCorrupt = errors.New("shmcast: corrupt segment")
	// ErrNoMessage is returned by the non-blocking reads when no new message
	// has been committed yet. It is not a failure: try again later.
	ErrNoMessage = errors.New("shmcast: no new message")
	// ErrLagged matches every [*LaggedError] with [errors.Is].
	ErrLagged = errors.New("shmcast: lagged")
	// ErrProducerGone matches every [*ProducerGoneError] with [errors.Is]: a
	// blocking read found nothing left to read and the producer has exited
	// (or was killed). Everything it published was delivered first. It is
	// the normal end of a stream, not a failure; [Reader.Messages] ends
	// without yielding it.
	ErrProducerGone = errors.New("shmcast: the producer has exited; no more messages will arrive")

	// ErrNotLossless matches a [*RegisterError] for a segment that was not
	// created lossless: no reader can register on it (open it without
	// [WithLossless] to read it as a lossy reader).
	ErrNotLossless = errors.New("shmcast: not a lossless segment")
	// ErrNoFreeSlot matches a [*RegisterError] for a lossless segment whose
	// reader slots are all held by live readers.
	ErrNoFreeSlot = errors.New("shmcast: no free reader slot")
	// ErrEvicted is returned once by a read of a registered Reader (opened
	// [WithLossless]) that held the producer back for longer than the
	// segment's max_block ([Header.MaxBlock]): the producer has evicted it.
	// It is not fatal: the Reader has given its slot back and reads on as a
	// lossy reader; a later [*LaggedError] says exactly what it lost.
	// [Reader.Messages] yields it and goes on. Opening the segment again
	// registers anew.
	ErrEvicted = errors.New("shmcast: evicted: this registered reader held the producer back too long and is lossy from now on")
)

// ProducerGoneError is returned by a blocking read ([Reader.Read],
// [Reader.ReadFunc]) when there is nothing left to read and the segment's
// producer has exited or was killed (docs/LAYOUT.md, "Producer liveness"):
// no more messages will arrive. It is the end of the stream, reached after
// every message the producer published was delivered. It matches
// [ErrProducerGone] with [errors.Is]. [Reader.Messages] does not yield it:
// the sequence just ends, and a blocking read after the loop returns it at
// once.
//
// Replaced reports that the segment's name now refers to a different file
// (device and inode differ from the file this Reader mapped): a new producer
// replaced the dead one's segment, and opening the name again follows it. A
// name that was merely removed is not replaced.
type ProducerGoneError struct {
	Replaced bool
}

func (e *ProducerGoneError) Error() string {
	if e.Replaced {
		return "shmcast: the producer has exited, and a new segment now exists under the same name: open it again to follow the new producer"
	}
	return ErrProducerGone.Error()
}

// Is makes errors.Is(err, ErrProducerGone) true.
func (e *ProducerGoneError) Is(target error) bool { return target == ErrProducerGone }

// errConcurrentUse reports that two goroutines read from one Reader at once,
// which the concurrency contract forbids.
var errConcurrentUse = errors.New("shmcast: Reader used by two goroutines at once")

// errIterReused is yielded by a Messages sequence ranged over a second time.
var errIterReused = errors.New("shmcast: Messages sequence is single-use and was already ranged over")

// NameError reports a segment name (or path) that [Open], [OpenPath] or
// [SegmentPath] refuses before touching the file system, with the reason the
// Rust library gives for the same name. It wraps [ErrInvalidName].
type NameError struct {
	Name   string // the name or path as given
	Reason string // what is wrong with it, e.g. "the name is empty"
}

func (e *NameError) Error() string {
	return "shmcast: invalid segment name " + strconv.Quote(e.Name) + ": " + e.Reason
}

func (e *NameError) Unwrap() error { return ErrInvalidName }

// FileTypeError reports that the file at a segment's name is not a regular
// file, with what it is instead, as the Rust library's
// Error::NotRegularFile does. It wraps [ErrNotRegularFile]. Nothing was read
// or written through it, and opening it did not block (a FIFO).
type FileTypeError struct {
	Path string // the file
	Kind string // what it is: "a FIFO (named pipe)", "a character device", ...
}

func (e *FileTypeError) Error() string {
	return "shmcast: " + e.Path + " is not a regular file: it is " + e.Kind +
		"; a segment is always a regular file, so this is not one (remove it if nothing uses it, or use another name)"
}

func (e *FileTypeError) Unwrap() error { return ErrNotRegularFile }

// HeaderError describes why a segment's header was rejected. Err is one of
// ErrTruncated, ErrNotInitialized, ErrBadMagic, ErrUnsupportedVersion,
// ErrUnsupportedFlags, ErrInvalidHeader or ErrSizeMismatch.
type HeaderError struct {
	Path  string // file that was opened
	Err   error  // the sentinel
	Field string // "size", "magic", "version", "flags", "data_offset", "capacity" or "reader_slots"
	Got   uint64 // the value found
	Want  uint64 // the value expected, where there is a single one
	// Creating: with ErrNotInitialized, whether a producer holds the file's
	// lock, so it is still creating the segment and trying again can
	// succeed; false: nobody is creating it.
	Creating bool
}

func (e *HeaderError) Error() string {
	prefix := e.Err.Error() + ": " + e.Path
	switch e.Field {
	case "magic", "flags":
		return fmt.Sprintf("%s: %s %#x", prefix, e.Field, e.Got)
	case "capacity":
		return fmt.Sprintf("%s: capacity %d is not a power of two in [4096, 2^40]", prefix, e.Got)
	case "reader_slots":
		return fmt.Sprintf("%s: reader_slots %d of a lossless segment is not in [1, 31]", prefix, e.Got)
	case "size":
		if e.Err == ErrTruncated && e.Got == 0 {
			return fmt.Sprintf("%s: size 0, need at least %d (an empty file that no producer is creating: not a segment, or its creator died before sizing it)", prefix, e.Want)
		}
		if e.Err == ErrTruncated {
			return fmt.Sprintf("%s: size %d, need at least %d", prefix, e.Got, e.Want)
		}
	}
	if e.Err == ErrNotInitialized {
		if e.Creating {
			return prefix + ": its producer is still creating it (it holds the producer lock); try again shortly"
		}
		return prefix + ": no producer holds its lock: its creator died before finishing it, or it is not a shmcast segment"
	}
	return fmt.Sprintf("%s: %s %d, want %d", prefix, e.Field, e.Got, e.Want)
}

func (e *HeaderError) Unwrap() error { return e.Err }

// CorruptError reports a record or control word that no valid producer
// writes. It wraps ErrCorrupt.
type CorruptError struct {
	Pos    uint64 // stream position the reader was looking at
	Reason string
}

func (e *CorruptError) Error() string {
	return "shmcast: corrupt segment at position " + strconv.FormatUint(e.Pos, 10) + ": " + e.Reason
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

func corrupt(pos uint64, reason string) error { return &CorruptError{Pos: pos, Reason: reason} }

// RegisterError reports that a Reader opened [WithLossless] could not
// register in a reader slot of the segment (docs/LAYOUT.md, "Lossless
// mode"), so [Open] and [OpenPath] failed: registering never silently falls
// back to reading lossy. Err says why:
//
//   - [ErrNotLossless]: the segment was not created lossless;
//   - [ErrNoFreeSlot]: every one of its Slots reader slots is held by a live
//     reader;
//   - the operating system's error from opening the file for writing
//     (matching [io/fs.ErrPermission] when the file is not writable for
//     this process: registering writes the reader's progress into the
//     segment, so it needs write access), from mapping its subscriber area
//     writable, or from a lock call;
//   - [errors.ErrUnsupported] on systems without Linux's open file
//     description locks.
type RegisterError struct {
	Path  string // file that was opened
	Slots int    // reader slots of the segment (0: not lossless)
	Err   error
}

func (e *RegisterError) Error() string {
	prefix := "shmcast: cannot register as a lossless reader of " + e.Path + ": "
	switch e.Err {
	case ErrNotLossless:
		return prefix + "it is not a lossless segment (its producer must create it lossless, e.g. shmcast publish --lossless); open it without WithLossless to read it as a lossy reader"
	case ErrNoFreeSlot:
		return prefix + "all " + strconv.Itoa(e.Slots) + " reader slots are taken by live readers"
	}
	if errors.Is(e.Err, fs.ErrPermission) {
		return prefix + "registering needs write access to the segment file: " + e.Err.Error()
	}
	return prefix + e.Err.Error()
}

func (e *RegisterError) Unwrap() error { return e.Err }

// LaggedError reports that the producer overwrote Missed messages before this
// reader could read them (it was lapped). It is not fatal: the reader has
// already moved to the oldest retained message, and the next read returns
// it. It matches ErrLagged with [errors.Is].
type LaggedError struct {
	Missed uint64
}

func (e *LaggedError) Error() string {
	return "shmcast: lagged by " + strconv.FormatUint(e.Missed, 10) + " messages"
}

// Is makes errors.Is(err, ErrLagged) true.
func (e *LaggedError) Is(target error) bool { return target == ErrLagged }

// ShortBufferError is returned by a copying read when the caller's buffer
// cannot hold the next message. The reader does not advance: retry with a
// buffer of at least Need bytes ([Reader.MaxPayload] is always enough). It
// wraps [io.ErrShortBuffer].
type ShortBufferError struct {
	Need int
}

func (e *ShortBufferError) Error() string {
	return "shmcast: buffer too small for message of " + strconv.Itoa(e.Need) + " bytes"
}

func (e *ShortBufferError) Unwrap() error { return io.ErrShortBuffer }
