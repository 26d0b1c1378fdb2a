package segtest

import (
	"fmt"
	"sync/atomic"
	"time"
)

// Lossless mode (docs/LAYOUT.md, "Lossless mode (registered readers)"),
// duplicated from the document like the rest of the fixture.
const (
	FlagLossless = 1

	OffGateLimit   = 0x180
	OffReaderSlots = 0x188
	OffMaxBlockNs  = 0x190
	OffEvictions   = 0x198

	OffGateWake        = 0x1008 // u32 futex word a blocked producer sleeps on
	OffProducerBlocked = 0x100C // u32
	OffRegGen          = 0x1040
	OffSlots           = 0x1080 // slot i at OffSlots + SlotSize*i
	SlotSize           = 128
	MaxReaderSlots     = 31

	// Offsets within a slot.
	SlotState        = 0
	SlotPos          = 8
	SlotSeq          = 16
	SlotPID          = 24
	SlotRegisteredNs = 32

	// Slot states (bits 0-1 of the state word; bits 2-63 are the generation).
	Free    = 0
	Active  = 1
	Evicted = 2
)

// InitLossless is Init for a lossless segment with slots reader slots: the
// LOSSLESS flag, reader_slots and the first gate_limit are stored before
// magic, as the producer does.
func InitLossless(mem []byte, capacity uint64, slots int) *Writer {
	w := &Writer{Mem: mem, Capacity: capacity, nextSeq: 1, slots: slots}
	w.init()
	return w
}

// CreateLossless is Create for a lossless segment with slots reader slots
// (1 to MaxReaderSlots, or anything else to test a reader's validation).
func CreateLossless(path string, capacity uint64, slots int) (*Writer, func(), error) {
	return create(path, capacity, slots)
}

// initLossless stores the gate block (called by init before magic).
func (w *Writer) initLossless() {
	w.Store(OffFlags, FlagLossless)
	w.Store(OffReaderSlots, uint64(w.slots))
	w.refresh()
}

// Slots is the number of reader slots; 0 for a lossy segment.
func (w *Writer) Slots() int { return w.slots }

// SlotOff is the segment offset of slot i's first byte (its lock byte).
func SlotOff(i int) uint64 { return OffSlots + SlotSize*uint64(i) }

// SlotView is slot i's words as loaded.
type SlotView struct {
	State, Gen           uint64 // the state bits and the generation of the state word
	Pos, Seq, PID, RegNs uint64
}

// Slot loads slot i.
func (w *Writer) Slot(i int) SlotView {
	base := SlotOff(i)
	word := w.Load(base + SlotState)
	return SlotView{
		State: word & 3, Gen: word >> 2,
		Pos: w.Load(base + SlotPos), Seq: w.Load(base + SlotSeq),
		PID: w.Load(base + SlotPID), RegNs: w.Load(base + SlotRegisteredNs),
	}
}

// RegGen loads reg_gen.
func (w *Writer) RegGen() uint64 { return w.Load(OffRegGen) }

// GateLimit loads gate_limit.
func (w *Writer) GateLimit() uint64 { return w.Load(OffGateLimit) }

// GateWake loads the gate_wake futex word.
func (w *Writer) GateWake() uint32 { return atomic.LoadUint32(w.word32(OffGateWake)) }

// SetProducerBlocked stores v to producer_blocked, as a blocked producer
// does (1) and one that can go on again (0).
func (w *Writer) SetProducerBlocked(v uint32) { atomic.StoreUint32(w.word32(OffProducerBlocked), v) }

// Evict does what the producer does to a stuck reader: it moves slot i
// from (gen, ACTIVE) to (gen, EVICTED) with a compare-and-swap, and counts
// and announces it. False if the slot was not ACTIVE.
func (w *Writer) Evict(i int) bool {
	p := w.word(SlotOff(i) + SlotState)
	old := atomic.LoadUint64(p)
	if old&3 != Active || !atomic.CompareAndSwapUint64(p, old, old&^3|Evicted) {
		return false
	}
	atomic.AddUint64(w.word(OffEvictions), 1)
	atomic.AddUint64(w.word(OffRegGen), 1)
	return true
}

// refresh is the producer's refresh (docs/LAYOUT.md, "Producer"): the
// minimum over ACTIVE slots of the clamped pos, the new gate, stored to
// gate_limit, and again if reg_gen moved meanwhile. Go atomics are
// sequentially consistent, so the store of gate_limit and the load of
// reg_gen after it are the fence between them.
func (w *Writer) refresh() {
	for {
		g := w.Load(OffRegGen)
		floor := uint64(0)
		if w.announced > w.Capacity {
			floor = w.announced - w.Capacity
		}
		gate := w.announced + w.Capacity/2 + 8
		for i := range w.slots {
			if w.Load(SlotOff(i)+SlotState)&3 != Active {
				continue
			}
			pos := min(max(w.Load(SlotOff(i)+SlotPos), floor), w.tail)
			gate = min(gate, pos+w.Capacity)
		}
		w.Store(OffGateLimit, gate)
		if w.Load(OffRegGen) == g {
			w.gate = gate
			return
		}
	}
}

// admit is the gate check of publish step 4: whether limit may be
// announced, refreshing the gate when it is in the way.
func (w *Writer) admit(limit uint64) bool {
	if w.slots == 0 || limit <= w.gate {
		return true
	}
	w.refresh()
	return limit <= w.gate
}

// TryPublish publishes payload unless a registered reader holds the
// producer back (the gate is below what the message needs): then it
// publishes nothing and returns ok == false, like the Rust try_publish.
// On a lossy segment it always publishes.
func (w *Writer) TryPublish(payload []byte) (seq, pos uint64, ok bool) {
	if !w.admit(w.limitFor(uint64(len(payload)))) {
		return 0, 0, false
	}
	seq, pos = w.Publish(payload)
	return seq, pos, true
}

// PublishWait publishes payload, waiting as a blocked producer does while
// a registered reader holds it back (docs/LAYOUT.md, "Blocked"): it stores
// 1 to producer_blocked, refreshes, and sleeps on gate_wake for at most
// nap before it refreshes again, until the gate opens or timeout has
// passed (an error). It reports whether it had to wait.
func (w *Writer) PublishWait(payload []byte, nap, timeout time.Duration) (seq, pos uint64, waited bool, err error) {
	limit := w.limitFor(uint64(len(payload)))
	if !w.admit(limit) {
		waited = true
		deadline := time.Now().Add(timeout)
		for {
			v := w.GateWake()
			w.SetProducerBlocked(1)
			w.refresh()
			if limit <= w.gate {
				break
			}
			if time.Now().After(deadline) {
				w.SetProducerBlocked(0)
				return 0, 0, true, fmt.Errorf("segtest: held back for %v at gate %d, limit %d", timeout, w.gate, limit)
			}
			futexWait(w.word32(OffGateWake), v, nap)
		}
		w.SetProducerBlocked(0)
		w.blocked.Add(1)
	}
	seq, pos = w.Publish(payload)
	return seq, pos, waited, nil
}

// PublishPatternWait is PublishWait with the generated payload.
func (w *Writer) PublishPatternWait(n int, nap, timeout time.Duration) (seq uint64, waited bool, err error) {
	seq, _, waited, err = w.PublishWait(Pattern(w.nextSeq, n), nap, timeout)
	return seq, waited, err
}

// Blocked is how many publishes of PublishWait had to wait for a reader.
func (w *Writer) Blocked() uint64 { return w.blocked.Load() }

// limitFor is steps 1 to 3 of publishing a payload of n bytes: the limit
// the producer must announce.
func (w *Writer) limitFor(n uint64) uint64 {
	span := 16 + align8(n)
	pos := w.tail
	if off := w.tail & (w.Capacity - 1); off+span > w.Capacity {
		pos += w.Capacity - off
	}
	return pos + span + 8
}
