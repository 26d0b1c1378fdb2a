//! The slot protocol on heap words: registration, progress, the refresh's gate, eviction and
//! slot reuse (no ABA).

use super::*;

const CAP: u64 = 4096;

#[test]
fn with_no_reader_the_gate_is_half_a_ring_ahead() {
    let words = HeapRegistry::new(4);
    let reg = words.registry();
    let mut cache = ScanCache::default();
    let r = reg.refresh(&mut cache, 10_000, 9_000, CAP);
    assert_eq!(
        r,
        Refreshed {
            gate: 10_000 + CAP / 2 + 8,
            holder: None
        }
    );
    assert_eq!(reg.gate_limit(), 10_000 + CAP / 2 + 8);
}

#[test]
fn the_slowest_active_reader_holds_the_gate() {
    let words = HeapRegistry::new(4);
    let reg = words.registry();
    let g1 = reg.activate(1, 9_000, 50, 7, 0);
    let g3 = reg.activate(3, 9_500, 60, 8, 0);
    assert_eq!((g1, g3), (1, 1));
    let mut cache = ScanCache::default();
    let r = reg.refresh(&mut cache, 12_000, 12_000, CAP);
    assert_eq!(r.gate, 9_000 + CAP);
    assert_eq!(r.holder, Some((1, state_word(1, ACTIVE), 9_000)));
    // Progress moves the gate; the cache is reused while reg_gen stays put.
    reg.publish_progress(1, 9_800, 55);
    let r = reg.refresh(&mut cache, 12_000, 12_000, CAP);
    assert_eq!(r.gate, 9_500 + CAP);
    assert_eq!(r.holder.map(|h| h.0), Some(3));
}

#[test]
fn garbage_positions_are_clamped() {
    let words = HeapRegistry::new(2);
    let reg = words.registry();
    reg.activate(0, 0, 1, 1, 0); // far behind: cannot be protected any more
    let mut cache = ScanCache::default();
    let r = reg.refresh(&mut cache, 100_000, 100_000, CAP);
    assert_eq!(r.gate, 100_000, "held at what is announced, never below");
    reg.publish_progress(0, u64::MAX, 1); // past the producer's tail
    let r = reg.refresh(&mut cache, 100_000, 99_000, CAP);
    assert_eq!(r.gate, 100_000 + CAP / 2 + 8);
}

#[test]
fn eviction_and_reclaim_act_only_on_the_observed_owner() {
    let words = HeapRegistry::new(1);
    let reg = words.registry();
    let gen = reg.activate(0, 0, 1, 1, 0);
    let old = state_word(gen, ACTIVE);
    // The owner leaves and a new one takes the slot: the producer's view is stale.
    reg.deactivate(0, gen);
    let gen2 = reg.activate(0, 64, 2, 2, 0);
    assert_eq!(gen2, gen + 1);
    assert!(
        !reg.cut_loose(0, old, EVICTED),
        "the new owner was evicted (ABA)"
    );
    assert_eq!(reg.owner_state(0, gen2), ACTIVE);
    assert!(reg.cut_loose(0, state_word(gen2, ACTIVE), EVICTED));
    assert_eq!(reg.owner_state(0, gen2), EVICTED);
    assert_eq!(
        reg.owner_state(0, gen),
        FREE,
        "an old owner never sees the slot as its own"
    );
    assert_eq!(reg.evictions(), 1);
    // An evicted owner may still free its slot.
    reg.deactivate(0, gen2);
    assert_eq!(state_of(reg.view(0).state), FREE);
}

#[test]
fn every_change_bumps_reg_gen_and_the_cache_notices() {
    let words = HeapRegistry::new(2);
    let reg = words.registry();
    let mut cache = ScanCache::default();
    reg.refresh(&mut cache, 0, 0, CAP);
    assert!(cache.active().is_empty());
    let gen = reg.activate(0, 0, 1, 1, 0);
    reg.announce_registration();
    reg.refresh(&mut cache, 0, 0, CAP);
    assert_eq!(cache.active(), &[(0, state_word(gen, ACTIVE))]);
    reg.deactivate(0, gen);
    reg.refresh(&mut cache, 0, 0, CAP);
    assert!(cache.active().is_empty());
    assert_eq!(reg.reg_gen(), 2);
}

#[test]
fn a_nudge_wakes_only_a_blocked_producer() {
    let heap = HeapRegistry::new(1);
    let gate = heap.gate_words();
    let seen = gate.seen();
    gate.nudge(true);
    assert_eq!(gate.seen(), seen, "nobody blocked: no wake-up");
    gate.announce_blocked();
    gate.nudge(false);
    assert_eq!(gate.seen(), seen + 1, "a blocked producer is woken");
    // The sleep returns at once: the word moved since `seen`.
    gate.sleep(seen, Some(std::time::Duration::from_secs(10)));
    gate.unblocked();
    gate.nudge(true);
    assert_eq!(gate.seen(), seen + 1);
}

#[test]
fn a_slot_changed_without_reg_gen_no_longer_holds_the_gate() {
    let words = HeapRegistry::new(1);
    let reg = words.registry();
    let gen = reg.activate(0, 0, 1, 1, 0);
    reg.announce_registration();
    let mut cache = ScanCache::default();
    assert!(reg.refresh(&mut cache, 5_000, 5_000, CAP).holder.is_some());
    // Freed without counting it in reg_gen (an owner killed half-way through unregistering).
    words.slots[0].store(state_word(gen, FREE), Ordering::Relaxed);
    let r = reg.refresh(&mut cache, 5_000, 5_000, CAP);
    assert_eq!(r.holder, None);
    reg.refresh(&mut cache, 5_000, 5_000, CAP);
    assert!(
        cache.active().is_empty(),
        "the next refresh scans every slot again"
    );
}
