#!/usr/bin/env bash
# The main demonstration: one Rust producer process broadcasting to a Rust and a Go reader
# process through one shared-memory segment. Every payload is verified by both readers; each
# ends with "received=R lagged=L corrupt=C", where R + L equals what was published. Then the
# same in lossless mode, where both readers register and L is 0.
#   scripts/demo.sh [COUNT]
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-1000000}
name=/shmcast-demo-$$
bin=target/release/shmcast
gobin=target/shmcast-tail

echo "building (cargo build --release; go build) ..."
cargo build --release --quiet -p shmcast-cli
(cd go-client && go build -o "../$gobin" ./cmd/shmcast-tail)
trap 'rm -f "/dev/shm${name}"' EXIT

echo "producer: $count messages of 16..1024 bytes at 500k msg/s into $name (4 MiB ring)"
"$bin" publish "$name" --capacity 4M --count "$count" --size 16-1024 --rate 500000 --keep &
producer=$!
until "$bin" inspect "$name" >/dev/null 2>&1; do sleep 0.01; done

echo "readers: Rust 'shmcast tail' and Go 'shmcast-tail', both verifying every payload"
"$bin" tail "$name" --from beginning --count "$count" --verify --timeout 10 | sed 's/^/  rust reader: /' &
rust=$!
"$gobin" "$name" --from beginning --count "$count" --verify --timeout 10 | sed 's/^/  go reader:   /' &
go=$!
wait "$producer" "$rust" "$go"

echo
"$bin" inspect "$name"
echo
echo "the newest message, as JSON, from each reader:"
"$bin" tail "$name" --from newest --count 1 --json | cut -c1-100
"$gobin" "$name" --from newest --count 1 --json | cut -c1-100

# Lossless mode: a ring far too small for the stream, and both readers registered, so the
# producer waits for them instead of overwriting what they have not read.
ll=/shmcast-demo-ll-$$
llcount=$((count / 5))
trap 'rm -f "/dev/shm${name}" "/dev/shm${ll}"' EXIT
echo
echo "lossless: $llcount messages through a 64 KiB ring; the producer waits for 2 registered readers"
"$bin" publish "$ll" --lossless --capacity 64K --count "$llcount" --size 16-1024 --wait-readers 2 2>/dev/null &
producer=$!
until "$bin" inspect "$ll" >/dev/null 2>&1; do sleep 0.01; done
"$bin" tail "$ll" --lossless --from beginning --count "$llcount" --verify --timeout 10 | sed 's/^/  rust reader: /' &
rust=$!
"$gobin" "$ll" --lossless --from beginning --count "$llcount" --verify --timeout 10 | sed 's/^/  go reader:   /' &
go=$!
wait "$producer" "$rust" "$go"
