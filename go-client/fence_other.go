//go:build !amd64 && !arm64

package shmcast

// This package has been reviewed for the memory ordering of amd64 and arm64
// only (see fence_amd64.go, fence_arm64.s). Porting it means writing a
// loadFence for the new architecture; until then, fail to compile.
var _ = shmcast_supports_only_amd64_and_arm64

func loadFence() {}
