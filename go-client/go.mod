module github.com/shmcast/shmcast/go-client

// The oldest Go this module needs, established by building, vetting and
// testing it with each release's toolchain (README.md, "Go version"): the
// package uses runtime.AddCleanup (Go 1.24) and range-over-func iterators
// (1.23); the tests use testing.B.Loop and strings.Lines (1.24). go1.23.0
// fails to build it. check.sh runs everything with the installed Go.
go 1.24
