#!/usr/bin/env bash
# Counts the futex system calls `shmcast publish` makes, with strace:
#   1. 1,000,000 messages and no reader: expected 0 (publishing makes no system call while
#      nobody sleeps);
#   2. 2,000 messages at 2,000/s with one sleeping `shmcast tail` reader: about one FUTEX_WAKE
#      per message the reader slept for.
# Usage: scripts/futex_calls.sh   (needs strace; builds the release CLI)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v strace >/dev/null || { echo "strace is not installed" >&2; exit 1; }
cargo build --release --quiet -p shmcast-cli
bin=target/release/shmcast
name="shmcast-futex-$$"

count_futex() { # prints the futex call count of the command, 0 if strace saw none
    strace -f -qq -c -e trace=futex -o /tmp/"$name".strace "$@" >/dev/null
    awk '$NF == "futex" { print $4; found = 1 } END { if (!found) print 0 }' /tmp/"$name".strace
    rm -f /tmp/"$name".strace
}

echo "no reader, 1000000 messages: $(count_futex "$bin" publish "/$name-a" --count 1000000) futex calls"

(sleep 0.2; "$bin" tail "/$name-b" --from beginning --verify --count 2000 --timeout 10 \
    >/tmp/"$name".tail) &
calls=$(count_futex "$bin" publish "/$name-b" --count 2000 --rate 2000 --keep)
wait
echo "one sleeping reader, 2000 messages at 2000/s: $calls futex calls;" \
    "reader: $(cat /tmp/"$name".tail)"
rm -f /tmp/"$name".tail "/dev/shm/$name-b"
