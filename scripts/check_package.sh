#!/usr/bin/env bash
# What a crate that depends on `shmcast` gets, checked:
#   1. the library's dependency tree holds no crate only the CLI or the benchmarks use, and nix
#      carries only the features the library calls; its optional `async` feature adds only
#      futures-core (no runtime);
#   2. no dependency of the library in Cargo.lock declares a rust-version newer than the
#      library's own (the MSRV rule), and, where rustup can install that toolchain, the library
#      really builds and documents with it;
#   3. `cargo package` ships a library crate (no Go tree, no CLI) with both licences, and it builds.
#   scripts/check_package.sh
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "check_package: $*" >&2; exit 1; }

# --- 1. dependency list ------------------------------------------------------------------------
tree=$(cargo tree -p shmcast -e normal -f '{p} [{f}]' --prefix none | sort -u)
echo "$tree"
# The rest of the checks cover the library with every feature on: `async` may add futures-core
# and nothing else (no runtime), and it must keep the MSRV too.
full=$(cargo tree -p shmcast -e normal --features async -f '{p} [{f}]' --prefix none | sort -u)
added=$(comm -13 <(cut -d' ' -f1 <<<"$tree" | sort -u) <(cut -d' ' -f1 <<<"$full" | sort -u) | tr '\n' ' ')
[ "$added" = "futures-core " ] || fail "the async feature adds [$added], not just futures-core"
tree=$full
for crate in clap clap_builder serde serde_json base64 hdrhistogram criterion tokio; do
    if grep -q "^$crate v" <<<"$tree"; then
        fail "the library depends on $crate, which only the CLI or the benchmarks use"
    fi
done
nix_features=$(grep '^nix v' <<<"$tree" | sed 's/.*\[\(.*\)\]/\1/')
[ "$nix_features" = "fs,mman" ] || fail "nix features are [$nix_features], the library calls only fs and mman"

# --- 2. MSRV -----------------------------------------------------------------------------------
msrv=$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json,sys; print(next(p["rust_version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="shmcast"))')
deps=$(grep -o '^[a-z0-9_-]* v[0-9][^ ]*' <<<"$tree" | grep -v '^shmcast ' | sort -u)
cargo metadata --format-version 1 | MSRV="$msrv" DEPS="$deps" python3 -c '
import json, os, sys
msrv = tuple(int(x) for x in os.environ["MSRV"].split("."))
want = {tuple(l.split(" v", 1)) for l in os.environ["DEPS"].splitlines()}
bad = []
for p in json.load(sys.stdin)["packages"]:
    if (p["name"], p["version"]) in want and p.get("rust_version"):
        rv = tuple(int(x) for x in p["rust_version"].split("."))
        if rv[:len(msrv)] > msrv:
            bad.append("%s %s needs Rust %s" % (p["name"], p["version"], p["rust_version"]))
if bad:
    sys.exit("the library says rust-version = " + os.environ["MSRV"] + ", but Cargo.lock has: " + "; ".join(bad))
print("MSRV %s: no library dependency in Cargo.lock declares a newer Rust (%d crates checked)" % (os.environ["MSRV"], len(want)))
'

# Build with that toolchain, on the lock file's versions, when rustup can fetch it.
if timeout 300 rustup toolchain install "$msrv" --profile minimal >/dev/null 2>&1; then
    dir=$(mktemp -d)
    trap 'rm -rf "$dir"' EXIT
    cp -r src "$dir/"
    # The library alone: no workspace, no dev-dependencies, no benches; the lock file as it is
    # (its format 4 only differs from 3 for git sources, which it has none of).
    python3 - "$dir" <<'EOF'
import re, sys
dst = sys.argv[1]
keep = [s for s in re.split(r'(?m)^(?=\[)', open('Cargo.toml').read())
        if not re.match(r'\[(workspace|dev-dependencies|\[bench|\[example|lints|profile)', s)]
open(f'{dst}/Cargo.toml', 'w').write(''.join(keep).replace('\ninclude = [', '\n#include = ['))
open(f'{dst}/Cargo.lock', 'w').write(open('Cargo.lock').read().replace('version = 4', 'version = 3', 1))
EOF
    cp "$dir/Cargo.lock" "$dir/Cargo.lock.before"
    (cd "$dir" && cargo "+$msrv" build --lib --quiet && cargo "+$msrv" build --lib --features async --quiet &&
        RUSTDOCFLAGS="-D warnings" cargo "+$msrv" doc --no-deps --features async --quiet) ||
        fail "the library does not build with Rust $msrv, its rust-version"
    python3 - "$dir" <<'EOF' || fail "building with the MSRV toolchain changed a locked version"
import re, sys
pk = lambda f: set(re.findall(r'name = "([^"]+)"\nversion = "([^"]+)"', open(f).read()))
d = sys.argv[1]
sys.exit(1 if pk(f'{d}/Cargo.lock') - pk(f'{d}/Cargo.lock.before') else 0)
EOF
    echo "the library builds and documents with Rust $msrv on the locked versions"
else
    echo "note: rustup could not install Rust $msrv here; only the lock-file rule was checked"
fi

# --- 3. cargo package --------------------------------------------------------------------------
files=$(cargo package -p shmcast --list --allow-dirty)
for f in LICENSE-MIT LICENSE-APACHE README.md Cargo.toml src/lib.rs docs/LAYOUT.md; do
    grep -qx "$f" <<<"$files" || fail "the package lacks $f"
done
if grep -E '^(go-client|shmcast-cli|scripts|\.ci)/' <<<"$files"; then
    fail "the package ships files that are not the library's"
fi
cargo package -p shmcast --allow-dirty --quiet
echo "cargo package: $(wc -l <<<"$files") files, builds"
