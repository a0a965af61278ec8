#!/usr/bin/env bash
# Tessera beside rsync and Syncthing, W1–W4 on loopback
# (`tessera-bench peers`): installs rsync and Syncthing from Debian when
# missing, builds the release binaries, runs the bench and adds its table
# to docs/PERFORMANCE.md. Arguments go to the bench, for example
#   bench/peers.sh --runs 1 --size 64MiB --files 1000 --no-doc
# for a quick run. The bench stops everything it started, also when
# interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v rsync >/dev/null || need_apt+=(rsync)
command -v syncthing >/dev/null || need_apt+=(syncthing)
if ((${#need_apt[@]})); then
    echo "installing ${need_apt[*]}"
    if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
    export DEBIAN_FRONTEND=noninteractive
    # The packages' own services are not wanted: the bench starts its own
    # instances on loopback ports of its choosing.
    $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null 2>&1 ||
        { $SUDO apt-get update -qq &&
            $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null; }
fi

cargo build --release --locked --quiet -p tessera -p tessera-bench
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
exec "$TARGET/release/tessera-bench" peers --bin "$TARGET/release/tessera" \
    --rsync "$(command -v rsync)" --syncthing "$(command -v syncthing)" "$@"
