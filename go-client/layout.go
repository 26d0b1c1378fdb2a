package shmcast

import (
	"sync/atomic"
	"time"
	"unsafe"
)

// Byte layout of a version 1 segment (docs/LAYOUT.md). Offsets are from the
// start of the file and do not depend on the architecture.
const (
	// Magic is the first word of every segment: the bytes "SHMCAST\x00".
	Magic uint64 = 0x00545341434D4853
	// LayoutVersion is the only layout version this package reads.
	LayoutVersion = 1

	headerSize = 4096 // producer header
	dataOffset = 8192 // producer header + subscriber area

	offMagic       = 0x000
	offVersion     = 0x008 // u32 in the low half; the high half is reserved
	offDataOffset  = 0x010
	offCapacity    = 0x018
	offFlags       = 0x020
	offEpoch       = 0x028
	offPID         = 0x030
	offCreated     = 0x038
	offWakeBarrier = 0x040 // 0: the producer fences after each publish; 1: a parking reader calls membarrier
	offIntent      = 0x080
	offHead        = 0x100
	offLatest      = 0x108
	offWakeSeq     = 0x1000 // u32 futex word, subscriber area
	offParked      = 0x1004 // u32, non-zero: some reader may be parked

	subSize = dataOffset - headerSize // the subscriber area, one page

	minCapacity = 4096
	maxCapacity = 1 << 40

	knownFlags = 0 // bit 0 (lossless mode) is reserved and not supported

	padBit     = uint64(1) << 63 // commit word of a padding record
	noLatest   = ^uint64(0)      // latest before the first publish
	recordHead = 16              // commit word + length word
	cacheLine  = 64              // what a waiting reader loads ahead (not part of the layout)

	wakeFence      = 0 // wake_barrier values (docs/LAYOUT.md, "Waiting and waking")
	wakeMembarrier = 1
)

// maxPosition: positions stay below 2^63, so position arithmetic cannot
// overflow; a larger head or latest means the segment is corrupt
// (docs/LAYOUT.md, "Conventions").
const maxPosition = 1 << 63

// align8 rounds n up to a multiple of 8.
func align8(n uint64) uint64 { return (n + 7) &^ 7 }

// Header is the identity block of a segment, read once when it is opened.
// The fields are those of docs/LAYOUT.md, "Identity block".
type Header struct {
	Version         uint32 // layout version: LayoutVersion
	DataOffset      uint64 // file offset of the ring: 8192
	Capacity        uint64 // bytes in the ring, a power of two from 4096 to 2^40
	Flags           uint64 // 0: a segment with any flag set is refused (ErrUnsupportedFlags)
	Epoch           uint64 // 1 (reserved)
	ProducerPID     uint64 // process id of the producer that created the segment (informational)
	CreatedUnixNano uint64 // creation time, nanoseconds since the Unix epoch (see Created)
}

// MaxPayload is the largest message the producer can publish: capacity/4 - 16.
func (h Header) MaxPayload() int { return int(h.Capacity/4 - recordHead) }

// Created is the segment's creation time.
func (h Header) Created() time.Time { return time.Unix(0, int64(h.CreatedUnixNano)) }

// loadWord atomically loads the little-endian word at byte offset off of
// mem. The caller guarantees that off is a multiple of 8 and off+8 <=
// len(mem), and that mem starts 8-byte aligned (a mapping starts on a page).
// Every access to the segment goes through here or through the payload copy.
func loadWord(mem []byte, off uint64) uint64 {
	return atomic.LoadUint64((*uint64)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(mem)), off)))
}

// decodeHeader validates the producer header in mem (at least headerSize
// bytes) against the size of the file, in the order docs/LAYOUT.md
// prescribes, and returns the identity block only if every check passes.
func decodeHeader(mem []byte, fileSize int64, path string) (Header, error) {
	fail := func(kind error, field string, got, want uint64) (Header, error) {
		return Header{}, &HeaderError{Path: path, Err: kind, Field: field, Got: got, Want: want}
	}
	if fileSize < headerSize || len(mem) < headerSize {
		return fail(ErrTruncated, "size", uint64(max(fileSize, 0)), headerSize)
	}
	// Loading magic first, with a sequentially consistent atomic load, is the
	// acquire that pairs with the producer's release store of magic: every
	// field below was stored before it.
	switch m := loadWord(mem, offMagic); {
	case m == 0:
		return fail(ErrNotInitialized, "magic", 0, Magic)
	case m != Magic:
		return fail(ErrBadMagic, "magic", m, Magic)
	}
	h := Header{
		Version:         uint32(loadWord(mem, offVersion)),
		DataOffset:      loadWord(mem, offDataOffset),
		Capacity:        loadWord(mem, offCapacity),
		Flags:           loadWord(mem, offFlags),
		Epoch:           loadWord(mem, offEpoch),
		ProducerPID:     loadWord(mem, offPID),
		CreatedUnixNano: loadWord(mem, offCreated),
	}
	if h.Version != LayoutVersion {
		return fail(ErrUnsupportedVersion, "version", uint64(h.Version), LayoutVersion)
	}
	if h.Flags&^knownFlags != 0 {
		return fail(ErrUnsupportedFlags, "flags", h.Flags, knownFlags)
	}
	if h.DataOffset != dataOffset {
		return fail(ErrInvalidHeader, "data_offset", h.DataOffset, dataOffset)
	}
	if h.Capacity < minCapacity || h.Capacity > maxCapacity || h.Capacity&(h.Capacity-1) != 0 {
		return fail(ErrInvalidHeader, "capacity", h.Capacity, 0)
	}
	if want := h.DataOffset + h.Capacity; uint64(fileSize) != want {
		return fail(ErrSizeMismatch, "size", uint64(fileSize), want)
	}
	return h, nil
}
