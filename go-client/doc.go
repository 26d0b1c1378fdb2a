// Package shmcast reads messages broadcast by a shmcast producer through a
// POSIX shared-memory segment, in pure Go (no cgo, standard library only).
//
// A Rust process (the shmcast crate, or the shmcast command-line tool)
// publishes messages into a ring in one shared-memory file; any number of
// reader processes map that file read-only and read every message at their
// own pace. The producer never waits for a reader: a reader that falls more
// than a ring behind is lapped, learns exactly how many messages it missed,
// and carries on from the oldest message still retained. (Unless the
// segment is lossless and the reader registers: see Lossless mode.) The
// byte layout
// and the algorithms are specified in [docs/LAYOUT.md] of the repository;
// this package implements the reader side of layout version 1, with the
// semantics of the Rust Subscriber.
//
// A reader of the segment "prices" (the file /dev/shm/prices), until its
// producer exits or ctx is done:
//
//	r, err := shmcast.Open("prices")
//	if err != nil {
//		return err // fs.ErrNotExist: no producer has created it (yet)
//	}
//	defer r.Close()
//	for m, err := range r.Messages(ctx) {
//		if errors.Is(err, shmcast.ErrLagged) {
//			continue // messages were overwritten before we read them
//		}
//		if err != nil {
//			return err // ctx done, or a corrupt segment
//		}
//		fmt.Printf("%d: %s\n", m.Seq, m.Data)
//	}
//	return nil // the producer exited; every message it published was read
//
// # Opening
//
// [Open] takes a segment name by the rule that the Rust library and the
// shmcast CLI share: "demo" and "/demo" are the shared-memory object /demo,
// the file /dev/shm/demo; a name with a slash after its first character
// ("/run/app/seg", "./seg", "dir/seg") is the path of a regular file
// ([SegmentPath] says which file a name means). [OpenPath] takes a path.
// Both validate the header before trusting anything in the file.
// [WithStart] chooses where reading begins: the [Oldest] retained message
// (the default), the [Beginning] of the stream, the [Newest] message, or the
// [Next] message published after joining.
//
// The producer header and the ring are always mapped read-only. A reader
// with the default wait strategy also tries to open the file for writing;
// if it may, it maps the one-page subscriber area writable as well, to
// register as a parked waiter (see Waiting). Without write access it falls
// back to a read-only open. The Reader keeps the file open until Close, to
// test the producer's liveness lock.
//
// # Reading
//
//   - [Reader.TryRead] copies the next message into a caller-supplied buffer
//     without blocking and without allocating; it returns [ErrNoMessage]
//     when there is none yet.
//   - [Reader.Read] waits for one. It honours its [context.Context]: give it
//     a context from [context.WithTimeout] to bound the wait, or cancel the
//     context (or call [Reader.Close] from another goroutine) to stop a
//     read that is asleep; it then returns ctx.Err() or [os.ErrClosed].
//   - [Reader.TryReadFunc] and [Reader.ReadFunc] hand the payload to a
//     callback in place, without copying. The slice is valid only during the
//     callback and may be torn by a concurrent overwrite, in which case the
//     read returns a lap and the callback's work must be discarded.
//   - [Reader.Messages] is a single-use range-over-func iterator over the
//     blocking reads, with the same context handling.
//
// Messages arrive in order with consecutive sequence numbers. When the
// producer overwrote messages before they were read, the read returns a
// [*LaggedError] whose Missed field is the exact number lost (it matches
// [ErrLagged]); the next read returns the oldest retained message. A torn
// message is never delivered: every copy is validated after the fact.
//
// # Errors
//
// Every error works with [errors.Is] and [errors.As]:
//
//   - Opening: [*NameError] ([ErrInvalidName]) for a name such as "" or
//     "/" or one with a NUL byte; the operating system's error for a
//     missing or forbidden file ([io/fs.ErrNotExist], [io/fs.ErrPermission]);
//     [*HeaderError] for a file that is not a valid segment, wrapping
//     [ErrNotInitialized] (the producer is still creating it: retry),
//     [ErrTruncated], [ErrBadMagic], [ErrUnsupportedVersion],
//     [ErrUnsupportedFlags], [ErrInvalidHeader] or [ErrSizeMismatch];
//     [*RegisterError] when a Reader opened [WithLossless] cannot register
//     ([ErrNotLossless], [ErrNoFreeSlot], or [io/fs.ErrPermission] for a
//     file it may not write).
//   - Reading, not fatal: [ErrNoMessage] (non-blocking reads only: nothing
//     yet), [*LaggedError] (messages were lost, reading goes on),
//     [*ShortBufferError] (the buffer is too small: the reader did not
//     advance; a buffer of [Reader.MaxPayload] bytes never is),
//     [ErrEvicted] (a registered reader was evicted and reads on, lossy).
//   - Reading, the end: [*ProducerGoneError] ([ErrProducerGone]), the
//     normal end of the stream (below); ctx.Err(); [os.ErrClosed] after
//     Close; [*CorruptError] ([ErrCorrupt]) for a ring that no valid
//     producer writes.
//
// # Producer liveness
//
// The producer holds a lock on the segment file for as long as it lives
// (an open file description lock, docs/LAYOUT.md "Producer liveness"); the
// kernel releases it when the producer exits or is killed, kill -9
// included. [Reader.ProducerAlive] tests it (one fcntl F_OFD_GETLK on the
// Reader's own descriptor, read-only is enough; it acquires nothing and
// cannot be fooled by a reused PID).
//
// The blocking reads (Read, ReadFunc, Messages) test it by themselves while
// idle, every [LivenessInterval] (100 ms). Once the producer is gone, they
// read once more, so that everything committed before the death is still
// delivered, in order, and then the stream ends (see End of stream): an
// idle read returns within about LivenessInterval of the death, plus at
// most one sleep of the wait strategy (measured: 100-105 ms, also after
// kill -9 of a Rust producer publishing 200 000 messages a second). The
// non-blocking reads make no system call and keep returning
// [ErrNoMessage]. On systems other than Linux liveness cannot be tested
// and the producer always counts as alive.
//
// # End of stream
//
// A producer that exits, normally or not, after publishing is the normal
// end of the stream, not a failure:
//
//   - [Reader.Messages] yields every message it published and then ends,
//     without an error.
//   - [Reader.Read] and [Reader.ReadFunc] return a [*ProducerGoneError]
//     (errors.Is [ErrProducerGone]) once nothing is left, and again, at
//     once, on every later call; so a Read after a Messages loop tells
//     that the loop ended because the producer exited.
//   - The error's Replaced field reports that the name now refers to a different
//     file: a new producer replaced the dead one's segment (the documented
//     restart policy), and opening the name again follows it. A name that
//     was merely removed is not replaced.
//
// Every other end is an error: ctx.Err() when the context is done,
// [os.ErrClosed] after [Reader.Close], a [*CorruptError] for an impossible
// segment. A lap ([*LaggedError]) is not an end: reading goes on.
//
// # Security model
//
// A reader needs only read permission on the segment file. The producer
// header and the ring are mapped read-only, so a reader cannot disturb the
// producer or other readers through them. With write permission, a reader
// additionally maps the one-page subscriber area writable, and the only
// words a lossy reader ever writes there are the two wake-up words (it
// stores 1 to parked, and makes FUTEX_WAKE calls on wake_seq); a
// misbehaving reader with write access can therefore cost the producer
// FUTEX_WAKE calls and other readers spurious wake-ups, nothing more. A
// registered reader (Lossless mode) also writes its own slot, reg_gen and
// gate_wake, and holds the producer back by design; the producer evicts a
// reader that holds it for longer than the segment's max block, and a
// hostile write can at worst make a reader lag (it is told), never accept
// an overwritten message (docs/LAYOUT.md, "What a writer of the subscriber
// area can do").
//
// Conversely the reader trusts nothing it reads: whatever the bytes of the
// segment, also while another process rewrites them, a read returns a
// message consistent with the reader's own bookkeeping or a typed error,
// never panics, never reads outside the mapping and never loops for ever
// (see the fuzz targets and TestConcurrentMutation). The one exception is a
// file shrunk under the mapping by a process with write access: touching a
// lost page raises SIGBUS, which kills the process, unless the Reader was
// opened [WithFaultRecovery], which turns it into an [ErrTruncated] error at
// a cost of about 10 ns per read. Producers never shrink segments.
//
// # Lossless mode
//
// A producer may create its segment lossless (the Rust
// PublisherOptions::lossless, or shmcast publish --lossless): it then has
// up to 31 reader slots ([Header.ReaderSlots]), and a reader opened
// [WithLossless] registers in one of them. From then on the producer never
// overwrites a message that reader has not read: it waits for it instead
// (docs/LAYOUT.md, "Lossless mode"). Readers opened without the option are
// ordinary lossy readers of the same segment, and are not waited for.
//
//	r, err := shmcast.Open("orders", shmcast.WithLossless(), shmcast.WithStart(shmcast.Beginning))
//	if err != nil {
//		return err // e.g. errors.Is(err, shmcast.ErrNoFreeSlot)
//	}
//	defer r.Close() // gives the slot back; do not leave it to the garbage collector
//	for m, err := range r.Messages(ctx) {
//		if errors.Is(err, shmcast.ErrEvicted) {
//			log.Print(err) // too slow for too long: lossy from now on
//			continue
//		}
//		// ...
//	}
//
// Registering needs write access to the segment file and a free slot;
// otherwise Open fails with a [*RegisterError] ([ErrNotLossless],
// [ErrNoFreeSlot], [io/fs.ErrPermission]) rather than fall back to reading
// lossy. A slot is owned through a lock on one byte of the file, held by
// the Reader's own descriptor: [Reader.Close] gives it back, and when the
// process dies the kernel releases the lock and the producer frees the
// slot. [Reader.Slot] reports which slot a Reader holds.
//
// A registered reader tells the producer how far it has read by storing
// its position into its slot: once every capacity/8 bytes it reads, and
// whenever it finds no new message (so always before a blocking read
// sleeps); if the producer is waiting for it, it wakes the producer too.
// The read path stays as it is, and allocates nothing.
//
// The read algorithm does not change either: every copy is still validated
// against the producer's intent word, so a registered reader that is
// lapped nonetheless (after an eviction, or a hostile write) is told with
// a [*LaggedError], never handed a torn message. The start works as for
// any reader, with one difference: a reader that joins where the producer
// is about to overwrite (Oldest or Beginning, on a ring that has wrapped)
// first moves forward to the oldest message registering can protect;
// from Beginning, the messages it passed over are reported as a
// [*LaggedError] by the first read.
//
// A producer with a max block ([Header.MaxBlock], 2 s by default in the
// Rust crate) evicts a registered reader that holds it back for longer.
// That reader's next progress store finds out: its read returns
// [ErrEvicted] once (before the lap that usually follows; a read that
// delivers a message reports it on the next read), the Reader gives its
// slot back, and it reads on as a lossy reader with exact lap counts.
// [Reader.Messages] yields ErrEvicted and goes on. To be lossless again,
// open the segment again.
//
// Close a registered Reader when done with it: until it is closed, or
// garbage-collected, it holds its slot, and a registered Reader nobody
// reads from holds the producer back (until the max block evicts it).
//
// # Waiting
//
// [WithWait] chooses how Read, ReadFunc and Messages wait while there is no
// new message:
//
//   - [WaitBlock], the default: a few microseconds of polling, then the
//     read sleeps in the kernel (a futex on the segment's wake_seq word,
//     docs/LAYOUT.md "Waiting and waking") until the producer publishes.
//     The producer makes one FUTEX_WAKE system call per publish while some
//     reader is parked and none otherwise. Wake-up latency (publish to Read
//     returning) is in docs/BENCHMARKS.md, "Waiting".
//   - [WaitSpin]: polls back to back; the lowest latency, one CPU busy.
//   - [WaitYield]: polls with [runtime.Gosched] in between; still a busy CPU.
//   - [WaitBackoff]: spins, yields, then sleeps 20 µs doubling to the poll
//     interval ([WithPollInterval], 1 ms); never writes to the segment.
//
// Cost of WaitBlock: a goroutine parked in Read holds an OS thread (the
// futex system call blocks its thread; the runtime gives the processor to
// another thread meanwhile), so N goroutines blocked in Read are N threads,
// and no CPU beyond one wake-up per [MaxParkSlice] (50 ms) each to look again
// (about 0.1 ms of CPU per wake-up on the test VM, so roughly 0.2 % of a CPU
// per parked read).
//
// A WaitBlock reader that cannot open the segment for writing
// ([Reader.CanPark] is false) cannot register as parked, so the producer
// may not wake it: it waits on the same futex word with timeouts of 20 µs
// doubling to the poll interval (1 ms), and so notices a message within
// about 1 ms while idle, sooner when the producer wakes other readers.
//
// Cancellation: a read asleep in the kernel is woken at once when its
// context is cancelled (a [context.AfterFunc] makes a FUTEX_WAKE on the
// word; other readers of the segment see a spurious wake-up and sleep
// again) or when the Reader is closed, and returns ctx.Err() or
// [os.ErrClosed]. A context deadline also bounds each futex wait. If the
// cancellation or Close lands just as the read enters the kernel, the
// wake-up can come too early to be seen; the read then notices within
// [MaxParkSlice], the longest single futex wait. So a blocked read returns
// at most 50 ms after cancellation or Close, and in practice within
// microseconds. The same bound applies to a producer that never wakes
// readers (one written before "Waiting and waking"): parked readers then
// see messages within 50 ms.
//
// A Read that finds its message without sleeping allocates nothing; one
// that sleeps with a cancellable context allocates two small objects, the
// AfterFunc registration.
//
// # Concurrency
//
// A [Reader] belongs to one goroutine. [Reader.Close] may be called from any
// goroutine to release the mapping and to wake a blocked read, which returns
// [os.ErrClosed]; the mapping is never unmapped under a read in progress,
// nor under a futex wait or wake-up. Open one Reader per goroutine to read
// in parallel: readers are independent, and cost the producer nothing
// beyond one FUTEX_WAKE per publish while any of them is parked (a
// registered reader also holds it back while it is behind).
//
// # Architectures
//
// The package supports linux on amd64 and arm64. (It also compiles for
// other Unix systems on those architectures, where WaitBlock cannot park and
// sleeps in slices of at most 1 ms instead of using futexes.) Payloads are copied with
// memmove and then validated by re-loading the producer's intent word; on
// arm64 an explicit load barrier (DMB ISHLD) orders the copy before that
// re-load, see fence_arm64.s.
//
// [docs/LAYOUT.md]: https://github.com/shmcast/shmcast/blob/main/docs/LAYOUT.md
package shmcast
