#!/usr/bin/env bash
# Every check of the Go reader, as CI runs it. From anywhere:
#   go-client/check.sh
# Environment:
#   SHMCAST_BIN  path of the Rust `shmcast` binary; without it the live
#                interop tests skip (everything else still runs).
#   FUZZTIME     how long each fuzz target runs (default 10s; 0 skips fuzzing).
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

fuzztime=${FUZZTIME:-10s}
if [ "$fuzztime" != 0 ]; then
	for target in FuzzSegment FuzzRing; do
		echo "== go test -fuzz=$target -fuzztime=$fuzztime"
		go test -run='^$' -fuzz="^$target\$" -fuzztime="$fuzztime" -fuzzminimizetime=2s .
	done
fi
echo "== all Go checks passed"
