// Package shmcast reads messages broadcast by a shmcast producer through a
// POSIX shared-memory segment, in pure Go (no cgo).
//
// A Rust process (the shmcast crate) publishes messages into a ring in one
// shared-memory file; any number of reader processes map that file
// read-only and read every message at their own pace. Nothing a reader does
// is visible to the producer: a reader that falls more than a ring behind is
// lapped, learns exactly how many messages it missed, and carries on from the
// oldest message still retained. The byte layout and the algorithms are
// specified in docs/LAYOUT.md of the repository; this package implements the
// reader side of layout version 1.
//
// # Opening
//
// [Open] takes a segment name as the shmcast CLI does ("demo" or "/demo" is
// /dev/shm/demo; a name with a slash after its first character is a path);
// [OpenPath] takes a path. Both validate the header before trusting anything
// in the file and return errors that work with [errors.Is] (the Err*
// sentinels, [io/fs.ErrNotExist], [io/fs.ErrPermission]) and [errors.As]
// ([*HeaderError]). [WithStart] chooses where reading begins: [Oldest]
// retained message (the default), [Beginning] of the stream, [Newest] message,
// or [Next] message published after joining.
//
// # Reading
//
//   - [Reader.TryRead] copies the next message into a caller-supplied buffer
//     without blocking and without allocating; [Reader.Read] waits for one,
//     honouring a [context.Context].
//   - [Reader.TryReadFunc] and [Reader.ReadFunc] hand the payload to a
//     callback in place, without copying. The slice is valid only during the
//     callback and may be torn by a concurrent overwrite, in which case the
//     read returns a lap and the callback's work must be discarded.
//   - [Reader.Messages] is a single-use range-over-func iterator.
//
// Messages arrive in order with consecutive sequence numbers. When the
// producer overwrote messages before they were read, the read returns a
// [*LaggedError] whose Missed field is the exact number lost (it matches
// [ErrLagged]); the next read returns the oldest retained message. A torn
// message is never delivered: every copy is validated after the fact.
//
// # Concurrency
//
// A [Reader] belongs to one goroutine. [Reader.Close] may be called from any
// goroutine to release the mapping and to wake a blocked read, which returns
// [os.ErrClosed]; the mapping is never unmapped under a read in progress.
// Open one Reader per goroutine to read in parallel: readers are
// independent and cost the producer nothing.
//
// # Architectures
//
// The package supports linux on amd64 and arm64. Payloads are copied with
// memmove and then validated by re-loading the producer's intent word; on
// arm64 an explicit load barrier (DMB ISHLD) orders the copy before that
// re-load, see fence_arm64.s.
package shmcast
