#!/usr/bin/env bash
# The daily workflow of snap on a VM disk image:
#   day 1: commit the image; day 2: the guest rewrote a few blocks, commit again;
#   list the history; restore day 1 and check it byte for byte.
#
# Usage: bash examples/daily-snapshot.sh [IMAGE]
#   Without IMAGE a small sparse demo image is made. A given IMAGE is copied first and
#   never modified. Everything happens in a temporary directory, removed at the end.
#   SNAP=... picks the command (default: 'snap' if it is snapstore's, else python3 -m snapstore).
set -euo pipefail

if [[ -z "${SNAP:-}" ]]; then
    # On Ubuntu 'snap' may be snapd's command: use it only if it is ours.
    if command -v snap >/dev/null 2>&1 && snap --help 2>/dev/null | grep -q "deduplicating store"; then
        SNAP=snap
    else
        SNAP="python3 -m snapstore"
    fi
fi
snap() { command $SNAP "$@"; }
say() { printf '\n==> %s\n' "$*"; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/snap-daily.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
IMAGE=$WORK/vm.img

if [[ $# -ge 1 ]]; then
    say "copying $1 to $IMAGE (the original is not touched)"
    cp --sparse=always "$1" "$IMAGE"
else
    say "making a 256 MiB sparse demo image: 12 MiB of data, the rest holes"
    truncate -s 256M "$IMAGE"
    dd if=/dev/urandom of="$IMAGE" bs=1M count=8 conv=notrunc status=none           # "boot + OS"
    dd if=/dev/urandom of="$IMAGE" bs=1M count=4 seek=100 conv=notrunc status=none  # "user data"
fi
ls -ls "$IMAGE"

# The repository lives next to the image here; SNAP_REPO saves typing --repo every time.
export SNAP_REPO=$WORK/repo
say "snap init $SNAP_REPO"
snap init "$SNAP_REPO"

say "day 1: snap commit vm.img -m 'day 1'"
DAY1=$(snap commit "$IMAGE" -m "day 1")
echo "day 1 is snapshot $DAY1"
cp --sparse=always "$IMAGE" "$WORK/day1-reference.img"  # only to prove the restore below

say "day 2: the guest rewrites three 64 KiB stretches in place"
SIZE=$(stat -c %s "$IMAGE")
for offset in 4096 $((SIZE / 3)) $((SIZE - 65536)); do
    dd if=/dev/urandom of="$IMAGE" bs=64K count=1 seek="$offset" oflag=seek_bytes conv=notrunc status=none
done

say "day 2: snap commit vm.img -m 'day 2' (only the changed chunks are stored)"
DAY2=$(snap commit "$IMAGE" -m "day 2")
echo "day 2 is snapshot $DAY2"

say "snap log"
snap log

say "snap checkout ${DAY1:0:8} -o restored.img (any unique prefix of 4+ hex digits works)"
snap checkout "${DAY1:0:8}" -o "$WORK/restored.img"

say "checking the restored image against day 1"
cmp "$WORK/restored.img" "$WORK/day1-reference.img"
echo "day 1 restored byte for byte"
if cmp -s "$WORK/restored.img" "$IMAGE"; then
    echo "error: day 1 and day 2 should differ" >&2
    exit 1
fi
echo "and it differs from today's image, as it should"

say "space: the image's apparent size, its data, and what the repository takes on disk"
echo "(the repository includes a 16 MiB reserve file that lets 'snap gc' work on a full disk)"
du -h --apparent-size "$IMAGE"
du -sh "$IMAGE" "$SNAP_REPO"
