package shmcast

// loadFence orders every load before it (including the plain loads of a
// payload copy and whatever a zero-copy callback read) before every load
// after it, in particular the atomic re-load of intent. Implemented in
// fence_arm64.s as DMB ISHLD.
//
//go:noescape
func loadFence()
