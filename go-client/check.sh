#!/usr/bin/env bash
# Every check of the Go reader, as CI runs it. From anywhere:
#   go-client/check.sh
# Environment:
#   SHMCAST_BIN  path of the Rust `shmcast` binary; without it the live
#                interop tests skip (everything else still runs).
#   FUZZTIME     fuzz budget for each target, a count like 50000x or a duration (default:
#                a per-target count of about 10 s; 0 skips fuzzing).
set -euo pipefail
cd "$(dirname "$0")"

echo "== gofmt"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
	echo "not gofmt-ed:"; echo "$unformatted"; exit 1
fi

echo "== go vet (amd64, arm64)"
go vet ./...
GOARCH=arm64 go vet ./...

echo "== arm64 cross-compile"
GOARCH=arm64 go build ./...
GOARCH=arm64 go test -c -o /dev/null .
GOARCH=arm64 go test -c -o /dev/null ./cmd/shmcast-tail

echo "== go test"
go test -count=1 ./...

echo "== go test -race"
go test -count=1 -race ./...

qemu=$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)
if [ -n "$qemu" ]; then
	echo "== go test on arm64 under $qemu (functional only: the emulator runs on a TSO host)"
	# SHMCAST_BIN is cleared: the live interop tests run the host's Rust binary and build
	# shmcast-tail for the host, which an emulated arm64 test binary cannot do.
	SHMCAST_BIN= GOARCH=arm64 go test -count=1 -short -exec "$qemu" ./...
else
	echo "== arm64 emulator not installed (apt-get install qemu-user-static): skipped running arm64 tests"
fi

# Count-based budgets (-fuzztime=Nx), not durations: with a duration, Go 1.26's fuzz
# coordinator can report "context deadline exceeded" at the deadline without any failing
# input (golang/go#75804, fixed in Go 1.27). The counts are about 10 s each on 2 cores.
# FUZZTIME overrides both (e.g. FUZZTIME=30s, or 0 to skip).
fuzz() { # target default-budget
	local budget=${FUZZTIME:-$2}
	[ "$budget" = 0 ] && return 0
	echo "== go test -fuzz=$1 -fuzztime=$budget"
	go test -run='^$' -fuzz="^$1\$" -fuzztime="$budget" -fuzzminimizetime=2s .
}
fuzz FuzzSegment 100000x
fuzz FuzzRing 150000x
echo "== all Go checks passed"
