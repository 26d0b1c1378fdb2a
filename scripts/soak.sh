#!/usr/bin/env bash
# Soak test (minutes; not part of CI): one `shmcast publish` of generated messages at a fixed
# rate, and readers that come and go: the Rust `shmcast tail` and the Go `shmcast-tail`, started
# at random moments with random start positions and wait strategies, some stopping by
# themselves after a random --count, some stopped with SIGTERM. Every reader runs --verify.
#   scripts/soak.sh                       # 3 minutes
#   SOAK_SECONDS=600 scripts/soak.sh
# Environment: SOAK_SECONDS (default 180), SOAK_RATE (messages/s, default 20000), SOAK_SIZE
# (payload bytes, MIN-MAX, default 0-4096), SOAK_CAPACITY (default 256K), SOAK_READERS (most
# transient readers at once, default 3), SOAK_SEED (default: the PID).
#
# Fails if any reader reports corrupt > 0, exits with an error of its own, or accounts for the
# wrong number of messages: the two readers that follow the whole run from the beginning must
# account for every message (received + lagged = published); a reader stopped by --count K must
# have received + lagged >= K (its last step may be a lag past K) and never more than were
# published; a reader stopped by SIGTERM must not have ended before (the Go one then prints its
# summary, which is checked too).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${SOAK_SECONDS:-180}
rate=${SOAK_RATE:-20000}
size=${SOAK_SIZE:-0-4096}
capacity=${SOAK_CAPACITY:-256K}
max_readers=${SOAK_READERS:-3}
seed=${SOAK_SEED:-$$}
RANDOM=$seed
count=$((seconds * rate))
name=/shmcast-soak-$$
froms=(beginning oldest newest next)
waits=(spin yield backoff block)

echo "== building (release)"
cargo build --release --quiet -p shmcast-cli
work=$(mktemp -d /tmp/shmcast-soak.XXXXXX)
(cd go-client && go build -o "$work/shmcast-tail-go" ./cmd/shmcast-tail)
rust_tail=(target/release/shmcast tail)
go_tail=("$work/shmcast-tail-go")

pid=() label=() kind=() want=() out=()
publisher=
cleanup() {
    local p
    for p in "${pid[@]}" $publisher; do
        kill "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -f "/dev/shm$name"
    rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
# A random integer in [lo, hi].
rand() { echo $(($1 + (RANDOM * 32768 + RANDOM) % ($2 - $1 + 1))); }

echo "== soak: $count messages of $size bytes at $rate/s into a $capacity ring (~${seconds} s), seed $seed"
start=$(now)
target/release/shmcast publish "$name" --count "$count" --size "$size" --rate "$rate" \
    --capacity "$capacity" &
publisher=$!
until [ -e "/dev/shm$name" ]; do sleep 0.01; done

# start_reader LANG FROM WAIT KIND [K]: KIND is full (--count of everything), count (--count K)
# or kill (no count; stopped with SIGTERM at time K).
start_reader() {
    local lang=$1 from=$2 wait=$3 k=$4 n=${#pid[@]}
    local -a cmd
    if [ "$lang" = rust ]; then cmd=("${rust_tail[@]}"); else cmd=("${go_tail[@]}"); fi
    cmd+=("$name" --from "$from" --wait "$wait" --verify)
    case $5 in
    full | count) cmd+=(--count "$k") ;;
    esac
    out[n]=$work/reader$n.out
    "${cmd[@]}" >"${out[n]}" 2>&1 &
    pid[n]=$!
    kind[n]=$5
    want[n]=$k
    label[n]=$(printf '%2d %-4s from=%-9s wait=%-7s %-5s %9s' "$n" "$lang" "$from" "$wait" "$5" \
        "$([ "$5" = kill ] || echo "$k")")
}

failures=0
running=0
declare -A done_=()
# check N RC: the verdict on a reader that has ended with status RC.
check() {
    local n=$1 rc=$2 summary received lagged corrupt verdict=ok total
    summary=$(grep -o 'received=[0-9]* lagged=[0-9]* corrupt=[0-9]*' "${out[n]}" | tail -1 || true)
    if [ -n "$summary" ]; then
        received=${summary#received=}; received=${received%% *}
        lagged=${summary#*lagged=}; lagged=${lagged%% *}
        corrupt=${summary##*corrupt=}
        total=$((received + lagged))
    fi
    case ${kind[n]} in
    full | count)
        if [ "$rc" != 0 ] || [ -z "$summary" ]; then
            verdict="FAILED: exit $rc: $(tail -2 "${out[n]}" | tr '\n' ' ')"
        elif [ "$corrupt" != 0 ]; then
            verdict="FAILED: corrupt=$corrupt"
        elif [ "${kind[n]}" = full ] && [ "$total" != "$count" ]; then
            verdict="FAILED: received + lagged = $total, published $count"
        elif [ "$total" -lt "${want[n]}" ] || [ "$total" -gt "$count" ]; then
            verdict="FAILED: received + lagged = $total, --count ${want[n]}, published $count"
        fi
        ;;
    kill)
        # 143: killed by our SIGTERM (Rust, no summary); 0: the Go reader's orderly stop.
        if [ "$rc" != 143 ] && [ "$rc" != 0 ]; then
            verdict="FAILED: exit $rc before it was stopped: $(tail -2 "${out[n]}" | tr '\n' ' ')"
        elif [ -n "$summary" ] && { [ "$corrupt" != 0 ] || [ "$total" -gt "$count" ]; }; then
            verdict="FAILED: $summary (published $count)"
        fi
        ;;
    esac
    [ "$verdict" = ok ] || failures=$((failures + 1))
    printf 'reader %s  %-46s %s\n' "${label[n]}" "${summary:-(killed, no summary)}" "$verdict"
}

# Reaps every reader that has ended.
reap() {
    local n rc
    for n in "${!pid[@]}"; do
        [ -n "${done_[$n]:-}" ] && continue
        if ! kill -0 "${pid[n]}" 2>/dev/null; then
            rc=0
            wait "${pid[n]}" || rc=$?
            done_[$n]=1
            [ "${kind[n]}" = full ] || running=$((running - 1))
            check "$n" "$rc"
        fi
    done
}

declare -A kill_at=()
start_reader rust beginning block "$count" full
start_reader go beginning backoff "$count" full
# Transient readers until 80% of the run, each with a --count that it reaches well before the
# publisher is done (or a SIGTERM).
while :; do
    t=$(elapsed "$start")
    t=${t%.*}
    [ "$t" -ge $((seconds * 8 / 10)) ] && break
    reap
    for n in "${!kill_at[@]}"; do
        if [ "$t" -ge "${kill_at[$n]}" ]; then
            kill -TERM "${pid[n]}" 2>/dev/null || true
            unset "kill_at[$n]"
        fi
    done
    if [ "$running" -lt "$max_readers" ]; then
        lang=rust
        [ $((RANDOM % 2)) = 0 ] && lang=go
        from=${froms[RANDOM % 4]}
        wait=${waits[RANDOM % 4]}
        if [ $((RANDOM % 4)) = 0 ]; then
            start_reader "$lang" "$from" "$wait" 0 kill
            kill_at[$((${#pid[@]} - 1))]=$((t + $(rand 1 8)))
        else
            left=$((seconds - t))
            k=$(rand 1 $((rate * left / 3)))
            # From the beginning, what was already published counts too (mostly as lagged).
            [ "$from" = beginning ] && k=$((k + rate * t * 9 / 10))
            start_reader "$lang" "$from" "$wait" "$k" count
        fi
        running=$((running + 1))
    fi
    sleep "0.$(rand 1 9)"
done
for n in "${!kill_at[@]}"; do kill -TERM "${pid[n]}" 2>/dev/null || true; done

rc=0
wait "$publisher" || rc=$?
publisher=
took=$(elapsed "$start")
[ "$rc" = 0 ] || { echo "publisher FAILED: exit $rc"; failures=$((failures + 1)); }
# Every reader ends once it has accounted for its count, or soon after the producer is gone.
deadline=$(($(date +%s) + 60))
while [ "${#done_[@]}" -lt "${#pid[@]}" ] && [ "$(date +%s)" -lt "$deadline" ]; do
    reap
    sleep 0.2
done
reap
if [ "${#done_[@]}" -lt "${#pid[@]}" ]; then
    echo "FAILED: $((${#pid[@]} - ${#done_[@]})) readers still running 60 s after the publisher ended"
    failures=$((failures + 1))
fi

avg_size=$(awk -v s="$size" 'BEGIN { n = split(s, a, "-"); print (n == 2 ? (a[1] + a[2]) / 2 : a[1]) }')
awk -v n="$count" -v t="$took" -v b="$avg_size" -v r="${#pid[@]}" -v f="$failures" 'BEGIN {
    printf "published %d messages in %.1f s: %.0f msg/s, %.1f MB/s (average %d bytes); %d readers, %d failures\n",
        n, t, n / t, n * b / t / 1e6, b, r, f }'
[ "$failures" = 0 ] || { echo "SOAK FAILED"; exit 1; }
echo "SOAK OK"
