package shmcast

import (
	"math"
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
	offGateLimit   = 0x180 // lossless segments: gate block
	offReaderSlots = 0x188
	offMaxBlockNs  = 0x190
	offEvictions   = 0x198
	offWakeSeq     = 0x1000 // u32 futex word, subscriber area
	offParked      = 0x1004 // u32, non-zero: some reader may be parked

	// Lossless mode, subscriber area (docs/LAYOUT.md, "Lossless mode").
	offGateWake        = 0x1008 // u32 futex word a blocked producer sleeps on
	offProducerBlocked = 0x100C // u32, non-zero while the producer waits for a reader
	offRegGen          = 0x1040 // registration generation
	offSlots           = 0x1080 // slot i at offSlots + slotSize*i
	slotSize           = 128
	slotState          = 0 // offsets within a slot
	slotPos            = 8
	slotSeq            = 16
	slotPID            = 24
	slotRegisteredNs   = 32
	maxReaderSlots     = 31 // (dataOffset - offSlots) / slotSize

	// Slot states: bits 0-1 of the state word; bits 2-63 are the generation.
	slotFree    = 0
	slotActive  = 1
	slotEvicted = 2

	subSize = dataOffset - headerSize // the subscriber area, one page

	minCapacity = 4096
	maxCapacity = 1 << 40

	flagLossless = 1 // the segment has reader slots (lossless mode)
	flagGaps     = 2 // the ring may hold gap records
	knownFlags   = flagLossless | flagGaps

	// gapLengthWord is the length word of a gap record: kind 1 in the
	// reserved high half, and 8 payload bytes (the count of messages lost).
	gapLengthWord = uint64(1)<<32 | 8

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
// The fields are those of docs/LAYOUT.md, "Identity block", and, on a
// lossless segment, the two fields of the gate block that the producer
// writes once, before the segment is visible.
type Header struct {
	Version         uint32 // layout version: LayoutVersion
	DataOffset      uint64 // file offset of the ring: 8192
	Capacity        uint64 // bytes in the ring, a power of two from 4096 to 2^40
	Flags           uint64 // bit 0: lossless (see Lossless); bit 1: gap records (see GapRecords); a segment with any other bit set is refused (ErrUnsupportedFlags)
	Epoch           uint64 // 1 (reserved)
	ProducerPID     uint64 // process id of the producer that created the segment (informational)
	CreatedUnixNano uint64 // creation time, nanoseconds since the Unix epoch (see Created)
	ReaderSlots     uint64 // lossless segments: how many readers can register, 1 to 31; 0 on a lossy segment
	MaxBlockNanos   uint64 // lossless segments: how long a registered reader may hold the producer back before it is evicted; 0: never (see MaxBlock)
}

// Lossless reports whether the segment was created lossless: readers
// opened [WithLossless] can register in one of its ReaderSlots, and the
// producer never overwrites what a registered reader has not read yet.
func (h Header) Lossless() bool { return h.Flags&flagLossless != 0 }

// GapRecords reports whether the segment may hold gap records: notes that
// messages were lost before they reached it (a bridge from the network
// writes them), which the Reader reports as a *LaggedError, as if they had
// been overwritten (docs/LAYOUT.md, "Gap records").
func (h Header) GapRecords() bool { return h.Flags&flagGaps != 0 }

// MaxBlock is how long a registered reader may hold the producer of a
// lossless segment back before the producer evicts it (reported as
// [ErrEvicted]); 0 means never.
func (h Header) MaxBlock() time.Duration {
	return time.Duration(min(h.MaxBlockNanos, math.MaxInt64))
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
	if h.Lossless() {
		// Written once, before magic, like the identity block.
		h.ReaderSlots = loadWord(mem, offReaderSlots)
		h.MaxBlockNanos = loadWord(mem, offMaxBlockNs)
		if h.ReaderSlots < 1 || h.ReaderSlots > maxReaderSlots {
			return fail(ErrInvalidHeader, "reader_slots", h.ReaderSlots, 0)
		}
	}
	if want := h.DataOffset + h.Capacity; uint64(fileSize) != want {
		return fail(ErrSizeMismatch, "size", uint64(fileSize), want)
	}
	return h, nil
}
