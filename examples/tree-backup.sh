#!/usr/bin/env bash
# A nightly backup of a directory with snap, as a cron job would run it:
#   commit the directory (one tree snapshot: contents, owners, modes, times, xattrs, symlinks,
#   hard links; a later night reads only the files that changed), keep a week of nights with
#   prune, restore one path from it, and bring a mirror of the directory up to date in place
#   (only what differs is written, what is gone is removed; with a snap whose checkout has
#   --delete, else the mirror is restored afresh).
#
# Usage: bash examples/tree-backup.sh [DIR]
#   Without DIR a small demo directory is made and changed between two nights. A given DIR is
#   only read. Everything else happens in a temporary directory, removed at the end.
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
# Two trees are the same: contents (diff -r), and each entry's type, mode, link count, size,
# mtime and link target (find -printf).
listing() { (cd "$1" && find . -printf '%P %M %n %s %T@ %l\n' | LC_ALL=C sort); }
same_tree() { diff -r --no-dereference "$1" "$2" && diff <(listing "$1") <(listing "$2"); }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/snap-tree.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

if [[ $# -ge 1 ]]; then
    SRC=$(cd "$1" && pwd)
    DEMO=
else
    SRC=$WORK/home
    DEMO=1
    say "making a demo directory $SRC"
    mkdir -p "$SRC/docs" "$SRC/photos" "$SRC/bin"
    printf 'shopping: milk, bread\n' >"$SRC/docs/notes.txt"
    ln "$SRC/docs/notes.txt" "$SRC/docs/notes-hardlink.txt"  # one file, two names
    ln -s docs/notes.txt "$SRC/current-notes"                   # a symlink
    head -c 300000 /dev/urandom >"$SRC/photos/cat.jpg"
    printf '#!/bin/sh\necho hello\n' >"$SRC/bin/hello"
    chmod 0755 "$SRC/bin/hello"
fi
NAME=$(basename "$SRC")

# The repository lives in the temporary directory here; SNAP_REPO saves typing --repo.
export SNAP_REPO=$WORK/repo
say "snap init $SNAP_REPO"
snap init "$SNAP_REPO"

say "night 1: snap commit $SRC -m nightly"
NIGHT1=$(snap commit "$SRC" -m nightly)
echo "night 1 is snapshot $NIGHT1"

if [[ -n "$DEMO" ]]; then
    say "during the day: a note appended to, a photo added, the script made private"
    printf 'call the plumber\n' >>"$SRC/docs/notes.txt"
    head -c 200000 /dev/urandom >"$SRC/photos/dog.jpg"
    chmod 0700 "$SRC/bin/hello"
fi

say "night 2: snap commit $SRC -m nightly (unchanged files are not read again)"
NIGHT2=$(snap commit "$SRC" -m nightly)
echo "night 2 is snapshot $NIGHT2"

say "keep a week: the last 7 runs and one a night for 7 nights (prune frees the space too)"
snap prune --keep-last 7 --keep-daily 7
snap log "$NAME"

say "snap ls latest --name $NAME --long"
snap ls latest --name "$NAME" --long

# Restore one path of the newest night into a new directory.
ONE=$(cd "$SRC" && find . -mindepth 1 -maxdepth 1 ! -type l | LC_ALL=C sort | head -n 1)
ONE=${ONE#./}
say "snap checkout latest --name $NAME -o restored --path $ONE"
snap checkout latest --name "$NAME" -o "$WORK/restored" --path "$ONE"
same_tree "$SRC/$ONE" "$WORK/restored/$ONE"
echo "$ONE restored identical"

# A mirror of the directory (on another disk, say) kept up to date from the snapshots.
say "a mirror of night 1: snap checkout $NIGHT1 -o mirror"
snap checkout "$NIGHT1" -o "$WORK/mirror"
if snap checkout --help | grep -q -- "--delete"; then
    say "syncing the mirror to night 2 in place: snap checkout latest --name $NAME -o mirror --in-place --delete"
    snap checkout latest --name "$NAME" -o "$WORK/mirror" --in-place --delete
else
    say "this snap cannot sync a tree in place yet (no --delete in 'snap checkout --help'): restoring night 2 afresh"
    snap checkout latest --name "$NAME" -o "$WORK/mirror.new"
    rm -rf "$WORK/mirror"
    mv "$WORK/mirror.new" "$WORK/mirror"
fi
same_tree "$SRC" "$WORK/mirror"
echo "mirror identical to $SRC"
