package shmcast

import (
	"os"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"
	"unsafe"
)

// Lossless mode, the reader's side (docs/LAYOUT.md, "Lossless mode
// (registered readers)"). The names of the steps are those of the Rust
// reader (src/registry.rs, src/registration.rs), so the two can be read
// side by side.
//
// The read algorithm does not change: a registered reader validates every
// copy against intent like any other, so whatever goes wrong (a
// registration race, an eviction, a hostile write into a slot) can at worst
// become a lap it is told about, never a silent loss.

// registry is the lossless words of one segment: gate_limit in the
// producer header (read-only) and the rest in the writable subscriber
// page. The zero value (a lossy segment, or a Reader that does not
// register) is never used.
type registry struct {
	gateLimit *uint64        // header, written by the producer only
	regGen    *uint64        // registration generation
	gateWake  *uint32        // futex word a blocked producer sleeps on
	blocked   *uint32        // producer_blocked
	slots     unsafe.Pointer // slot 0
	n         int            // reader_slots
}

// newRegistry points at the lossless words of the segment whose header
// mapping starts at base and whose writable subscriber page starts at sub.
func newRegistry(base, sub unsafe.Pointer, slots int) registry {
	return registry{
		gateLimit: (*uint64)(unsafe.Add(base, offGateLimit)),
		regGen:    (*uint64)(unsafe.Add(sub, offRegGen-headerSize)),
		gateWake:  (*uint32)(unsafe.Add(sub, offGateWake-headerSize)),
		blocked:   (*uint32)(unsafe.Add(sub, offProducerBlocked-headerSize)),
		slots:     unsafe.Add(sub, offSlots-headerSize),
		n:         slots,
	}
}

// word is field (slotState, slotPos, ...) of slot i.
func (g *registry) word(i int, field uintptr) *uint64 {
	return (*uint64)(unsafe.Add(g.slots, uintptr(i)*slotSize+field))
}

// stateWord builds a slot's state word from a generation and a state.
func stateWord(gen, state uint64) uint64 { return gen<<2 | state }

// activate is registering, steps 3 and 4: it records the owner's position
// and marks the slot ACTIVE under a new generation, which it returns. The
// caller holds the slot lock, so only the producer can change the state
// meanwhile (freeing the slot of the dead previous owner): a failed
// compare-and-swap is retried from what it found.
func (g *registry) activate(i int, pos, seq, pid, nowNs uint64) uint64 {
	atomic.StoreUint64(g.word(i, slotSeq), seq)
	atomic.StoreUint64(g.word(i, slotPID), pid)
	atomic.StoreUint64(g.word(i, slotRegisteredNs), nowNs)
	atomic.StoreUint64(g.word(i, slotPos), pos)
	state := g.word(i, slotState)
	for {
		cur := atomic.LoadUint64(state)
		gen := (cur>>2 + 1) & (^uint64(0) >> 2)
		if atomic.CompareAndSwapUint64(state, cur, stateWord(gen, slotActive)) {
			return gen
		}
	}
}

// announceRegistration is registering, step 5: reg_gen.fetch_add(1), a
// sequentially consistent fence, then the gate in force. Go's atomics are
// sequentially consistent, so the add and the load are the fence. Every
// position at or after the returned gate - capacity is protected from now
// on (docs/LAYOUT.md, "Why registration is safe").
func (g *registry) announceRegistration() uint64 {
	atomic.AddUint64(g.regGen, 1)
	return atomic.LoadUint64(g.gateLimit)
}

// publishProgress stores the owner's progress: seq, then pos (it has
// finished with every byte before pos).
func (g *registry) publishProgress(i int, pos, seq uint64) {
	atomic.StoreUint64(g.word(i, slotSeq), seq)
	atomic.StoreUint64(g.word(i, slotPos), pos)
}

// ownerState is slot i's state as its owner of generation gen sees it:
// slotActive, slotEvicted, or slotFree when the slot is no longer its own
// (which only a hostile writer can cause while the owner holds the lock).
func (g *registry) ownerState(i int, gen uint64) uint64 {
	w := atomic.LoadUint64(g.word(i, slotState))
	if w>>2 != gen {
		return slotFree
	}
	switch s := w & 3; s {
	case slotActive, slotEvicted:
		return s
	}
	return slotFree
}

// deactivate frees slot i if it is still the owner's ((gen, ACTIVE) or
// (gen, EVICTED)) and announces the change with reg_gen. The caller
// releases the slot lock afterwards.
func (g *registry) deactivate(i int, gen uint64) {
	state := g.word(i, slotState)
	for _, from := range [...]uint64{slotActive, slotEvicted} {
		if atomic.CompareAndSwapUint64(state, stateWord(gen, from), stateWord(gen, slotFree)) {
			atomic.AddUint64(g.regGen, 1)
			return
		}
	}
}

// wakeProducer shortens the wait of a producer that is blocked waiting for
// a registered reader: it increments gate_wake and wakes it. A producer
// that misses it looks again within its probe interval.
func (g *registry) wakeProducer() {
	if atomic.LoadUint32(g.blocked) != 0 {
		atomic.AddUint32(g.gateWake, 1)
		futexWakeAll(g.gateWake)
	}
}

// registration is a registered Reader's slot.
type registration struct {
	slot      int
	gen       uint64
	published uint64 // the last position stored to the slot
	batch     uint64 // publish progress at least every this many bytes
}

// register is registering (docs/LAYOUT.md, "Registering"), through the
// Reader's own descriptor (open for writing; its open file description
// holds the slot lock until the Reader is closed), joining at start.
func (r *Reader) register(start Start) error {
	slot, err := r.takeFreeSlot()
	if err != nil {
		return err
	}
	g := &r.registry
	// 2. Join as a lossy reader would.
	if err := r.join(start); err != nil {
		unlockByte(r.fd, slotLockOffset(slot))
		return err
	}
	// 3, 4.
	gen := g.activate(slot, r.pos, r.seq, uint64(os.Getpid()), uint64(time.Now().UnixNano()))
	// 5.
	gate := g.announceRegistration()
	// 6. The join is older than what the gate in force protects: join
	// again, now that the producer cannot go past gate without seeing this
	// slot, and move to the first protected record.
	if r.pos+r.capacity < gate {
		skipped, err := r.skipTo(start, gate-r.capacity)
		if err != nil {
			g.deactivate(slot, gen)
			unlockByte(r.fd, slotLockOffset(slot))
			return err
		}
		g.publishProgress(slot, r.pos, r.seq)
		// Those messages were lost before this reader registered: a reader
		// that asked for the beginning is told, the others start at the
		// first protected message.
		if start == Beginning && skipped > 0 {
			r.pending = &LaggedError{Missed: skipped}
		}
	}
	r.reg = &registration{slot: slot, gen: gen, published: r.pos, batch: max(r.capacity/8, 8)}
	r.slot.Store(int32(slot) + 1)
	return nil
}

// takeFreeSlot is registering, step 1: the first slot whose lock this
// Reader's open file description can take.
func (r *Reader) takeFreeSlot() (int, error) {
	for i := range r.registry.n {
		ok, err := tryLockByte(r.fd, slotLockOffset(i))
		if err != nil {
			return 0, &RegisterError{Path: r.path, Slots: r.registry.n, Err: err}
		}
		if ok {
			return i, nil
		}
	}
	return 0, &RegisterError{Path: r.path, Slots: r.registry.n, Err: ErrNoFreeSlot}
}

// slotLockOffset is the byte of the segment file whose lock is slot i's
// ownership: the slot's first byte.
func slotLockOffset(i int) uint64 { return offSlots + uint64(i)*slotSize }

// skipTo joins again at start and moves the reader forward, without
// delivering anything, to the first record at or after floor (registering,
// step 6; the Rust Ring::skip_to). It returns how many messages it passed
// over, read or lost, and stops early at the end of what is published.
// The walk is bounded, so a hostile gate_limit cannot make it spin: a
// reader left short of floor is at worst lapped later, and told.
func (r *Reader) skipTo(start Start, floor uint64) (uint64, error) {
	if err := r.join(start); err != nil {
		return 0, err
	}
	first := r.seq
	for steps := 2*(r.capacity/recordHead) + maxResync; r.pos < floor && steps > 0; steps-- {
		_, n, err := r.peek()
		if err == nil && r.pos >= floor {
			// peek hopped over a padding record that started before
			// floor: this message starts at or after it, so it is
			// protected and is the first to deliver.
			break
		}
		if err == nil {
			err = r.confirm(n)
			if err == nil {
				r.pos += recordHead + align8(n)
				r.seq++
				continue
			}
		}
		if _, lag := err.(*LaggedError); lag {
			continue // r is now at the oldest retained record
		}
		if err == ErrNoMessage {
			break
		}
		return 0, err
	}
	return r.seq - first, nil
}

// settle is where every read of a registered Reader that delivers nothing
// ends (err is ErrNoMessage, a lap, or a failure): see whenIdle and
// afterLap. It returns err unchanged for a Reader that is not registered.
func (r *Reader) settle(err error) error {
	if r.reg == nil {
		return err
	}
	switch e := err.(type) {
	case *LaggedError:
		return r.afterLap(e)
	}
	if err == ErrNoMessage {
		return r.whenIdle()
	}
	return err
}

// afterRead runs after a registered Reader delivered a message: it
// publishes its progress once a batch (capacity/8 bytes) has been consumed.
// An eviction found then is reported by the next read, since this one
// delivers its message.
func (r *Reader) afterRead() {
	if r.pos-r.reg.published >= r.reg.batch && r.publish() {
		r.pending = ErrEvicted
	}
}

// whenIdle runs when a registered Reader finds no new message: it
// publishes whatever progress is not yet published, so that a producer
// waiting for this reader can go on (and is woken if it sleeps). Every
// blocking read parks only after a poll that ended here, so a reader never
// sleeps with a stale position while the producer waits for it; the store
// of pos and the load of producer_blocked are sequentially consistent, the
// reader's half of the Dekker pair with the blocked producer.
func (r *Reader) whenIdle() error {
	if r.pos != r.reg.published && r.publish() {
		return ErrEvicted
	}
	return ErrNoMessage
}

// afterLap runs when a registered Reader was lapped: it has moved to the
// oldest retained record, which it publishes. A registered reader is
// lapped when the producer has evicted it (or something hostile wrote the
// segment): the eviction is then reported first and the lap next.
func (r *Reader) afterLap(lag *LaggedError) error {
	if r.publish() {
		r.pending = lag
		return ErrEvicted
	}
	return lag
}

// publish stores the Reader's progress to its slot and wakes a blocked
// producer; then it checks that the slot is still its own and ACTIVE. If
// not, the producer has evicted this reader: publish gives the slot back,
// the Reader is lossy from now on, and publish returns true.
func (r *Reader) publish() (evicted bool) {
	g, reg := &r.registry, r.reg
	g.publishProgress(reg.slot, r.pos, r.seq)
	reg.published = r.pos
	g.wakeProducer()
	if g.ownerState(reg.slot, reg.gen) == slotActive {
		return false
	}
	r.unregister()
	return true
}

// unregister gives the slot back (unregistering, or after an eviction):
// it frees the slot if it is still this registration's, wakes a producer
// that may be waiting for it, and releases the slot lock. It runs on the
// reading goroutine, or when the Reader is released (nothing else uses it
// then).
func (r *Reader) unregister() {
	reg := r.reg
	r.reg = nil
	r.slot.Store(0)
	if r.guard {
		// A file truncated under the mapping: the slot is lost with it, and
		// closing the descriptor releases the lock.
		old := debug.SetPanicOnFault(true)
		defer func() {
			debug.SetPanicOnFault(old)
			if p := recover(); p != nil {
				if _, fault := p.(runtime.Error); !fault {
					panic(p)
				}
			}
		}()
	}
	r.registry.deactivate(reg.slot, reg.gen)
	r.registry.wakeProducer()
	unlockByte(r.fd, slotLockOffset(reg.slot))
}

// Slot reports the reader slot a Reader opened [WithLossless] holds, and
// whether it holds one: false for a Reader that did not register, after
// an eviction ([ErrEvicted]: the Reader has given its slot back and is
// lossy), and once the Reader is closed (if Close came during a read, the
// slot is given back when that read returns). It may be called from any
// goroutine.
func (r *Reader) Slot() (int, bool) {
	s := r.slot.Load()
	return int(s) - 1, s > 0
}
