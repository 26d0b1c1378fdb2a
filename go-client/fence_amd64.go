package shmcast

// loadFence orders earlier loads before later loads. On amd64 the hardware
// already does that (x86-TSO never reorders a load with an older load), and
// the Go compiler never moves a load across a sync/atomic operation, which
// it treats as a memory operation in program order (the payload copy is
// also a call to memmove or an indirect call to a callback, which nothing
// is moved across). So the fence is empty; it exists to mark the point.
func loadFence() {}
