#!/usr/bin/env bash
# Checkouts/s on PostgreSQL with server pricing (this checkout) against client-supplied
# prices on the commit before the server priced carts, alternating ROUNDS times in one run.
# usage: tools/checkout_bench.sh [ROUNDS] [CARTS] [CLIENTS]
set -euo pipefail
rounds=${1:-3}
carts=${2:-2000}
clients=${3:-8}
base=4a255d4
here=$(cd "$(dirname "$0")/.." && pwd)
work=${CHECKOUT_BENCH_WORKTREE:-/tmp/orderlog-checkout-baseline}
if [ ! -d "$work" ]; then
    git -C "$here" worktree add --detach "$work" "$base" >/dev/null
fi
cp "$here/benches/baseline/checkout_client_priced.rs" "$work/benches/checkout.rs"
grep -q 'name = "checkout"' "$work/Cargo.toml" || printf '\n[[bench]]\nname = "checkout"\nharness = false\n' >> "$work/Cargo.toml"
(cd "$work" && cargo bench --bench checkout --no-run -q)
(cd "$here" && cargo bench --bench checkout --no-run -q)
for round in $(seq 1 "$rounds"); do
    echo "round $round"
    (cd "$work" && cargo bench --bench checkout -q -- "$carts" "$clients" | grep checkouts)
    (cd "$here" && cargo bench --bench checkout -q -- "$carts" "$clients" | grep checkouts)
done
