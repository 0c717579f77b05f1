"""snap prune (keep rules, --quota, --dry-run), pins, and the repository quota kept by every
commit, end to end through the real CLI. Disk usage is measured here, as du counts it."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from snapstore import Mode, Repository, commit_file
from snapstore.units import format_size
from tests.conftest import run_snap
from tests.helpers import checks_out, one_error_line
from tests.test_gc import du, make_base, rewrite, snap_json, snap_ok

MiB = 1 << 20
QUOTA_EXIT = 7


def pack_state(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_blocks) for p in root.glob("packs/*/*.pack")
    }


def log_ids(repo: Path) -> list[str]:
    return [s["id"] for s in snap_json("log", "-r", str(repo))]


# -- a five-version history plus one snapshot of another name --------------------------------------


@dataclass
class Five:
    path: Path
    other: str  # the oldest snapshot overall, the only one of its name
    ids: list[str]  # 'disk' v1..v5, oldest first
    files: dict[str, Path] = field(default_factory=dict)  # id -> original file

    def exclusive(self) -> dict[str, int]:
        return {s["id"]: s["exclusive_bytes"] for s in snap_json("stats", "-r", str(self.path))["snapshots"]}


@pytest.fixture(scope="module")
def five_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("five")
    other = d / "other.img"
    other.write_bytes(random.Random(99).randbytes(4 * MiB))
    files = [other]
    data = make_base(7, 40 * MiB)
    for i in range(5):
        if i:
            rewrite(data, 100 + i, 6)  # 6 MiB of each version is new
        path = d / f"disk-v{i + 1}.img"
        path.write_bytes(data)
        files.append(path)
    return files


@pytest.fixture
def five(tmp_path: Path, five_files: list[Path]) -> Five:
    path = tmp_path / "repo"
    snap_ok("init", str(path))
    other = snap_ok("commit", str(five_files[0]), "--name", "other", "-r", str(path)).strip()
    ids = [snap_ok("commit", str(f), "--name", "disk", "-r", str(path)).strip() for f in five_files[1:]]
    files = {other: five_files[0], **dict(zip(ids, five_files[1:], strict=True))}
    return Five(path, other, ids, files)


def test_quota_drops_just_the_oldest_unprotected(five: Five, tmp_path: Path) -> None:
    excl = five.exclusive()
    v1 = five.ids[0]
    disk = du(five.path)
    quota = disk - excl[v1] // 2
    res = snap_json("prune", "--quota", str(quota), "-r", str(five.path))
    assert [d["id"] for d in res["drop"]] == [v1], "'other' is older but the newest of its name"
    assert res["drop"][0]["reason"] == "quota"
    assert du(five.path) <= quota
    assert log_ids(five.path) == [five.other, *five.ids[1:]]
    for sid in (five.other, five.ids[-1], five.ids[1]):
        assert checks_out(five.path, sid, five.files[sid], tmp_path)


def test_quota_dry_run_then_real_run(five: Five, tmp_path: Path) -> None:
    excl = five.exclusive()
    v1, v2 = five.ids[:2]
    disk = du(five.path)
    quota = disk - excl[v1] - excl[v2] // 2  # v1 alone is not enough
    packs = pack_state(five.path)

    plan = snap_json("prune", "--quota", f"{quota}", "--dry-run", "-r", str(five.path))
    assert [d["id"] for d in plan["drop"]] == [v1, v2]
    assert pack_state(five.path) == packs and log_ids(five.path) == [five.other, *five.ids]
    text = snap_ok("prune", "--quota", f"{quota}", "-n", "-r", str(five.path))
    assert f"would drop {v1[:12]}" in text and f"would drop {v2[:12]}" in text and "(quota)" in text
    assert "would free" in text

    res = snap_json("prune", "--quota", f"{quota}", "-r", str(five.path))
    after = du(five.path)
    assert after <= quota, f"{format_size(after)} is over the quota {format_size(quota)}"
    assert [d["id"] for d in res["drop"]] == [v1, v2]
    freed = disk - after
    print(
        f"\nprune --quota: planned {plan['planned_free_bytes']} B, du drop {freed} B, "
        f"says {res['freed_bytes']} B"
    )
    assert abs(plan["planned_free_bytes"] - freed) <= 0.05 * freed
    assert abs(res["freed_bytes"] - freed) <= 0.05 * freed, "prune reports a wrong freed size"
    assert abs(res["disk_bytes_after"] - after) <= 64 * 1024
    assert log_ids(five.path) == [five.other, *five.ids[2:]]
    assert checks_out(five.path, five.ids[-1], five.files[five.ids[-1]], tmp_path)
    assert checks_out(five.path, five.ids[2], five.files[five.ids[2]], tmp_path)


def test_impossible_quota_deletes_nothing(five: Five) -> None:
    packs = pack_state(five.path)
    disk = du(five.path)
    res = run_snap("prune", "--quota", "1M", "-r", str(five.path))
    assert res.returncode == QUOTA_EXIT
    line = one_error_line(res.stderr.decode())
    assert "short" in line and "nothing was deleted" in line
    assert res.stdout == b""
    assert log_ids(five.path) == [five.other, *five.ids]
    assert pack_state(five.path) == packs
    assert abs(du(five.path) - disk) <= 64 * 1024


def test_quota_never_drops_what_a_keep_rule_keeps(five: Five) -> None:
    excl = five.exclusive()
    quota = du(five.path) - excl[five.ids[0]] - excl[five.ids[1]] // 2  # needs v1 and v2 gone
    packs = pack_state(five.path)
    res = run_snap("prune", "--keep-last", "4", "--quota", str(quota), "-r", str(five.path))
    assert res.returncode == QUOTA_EXIT, res.stderr.decode()
    assert "short" in one_error_line(res.stderr.decode())
    # not even v1, which --keep-last 4 alone would drop: an impossible prune does nothing
    assert log_ids(five.path) == [five.other, *five.ids]
    assert pack_state(five.path) == packs
    # with room for the rules, both apply
    res2 = snap_json("prune", "--keep-last", "3", "--quota", str(quota), "-r", str(five.path))
    assert [d["id"] for d in res2["drop"]] == five.ids[:2]
    assert du(five.path) <= quota


def test_prune_frees_space_itself_and_reports_it(five: Five, tmp_path: Path) -> None:
    disk = du(five.path)
    plan = snap_json("prune", "--keep-last", "2", "--dry-run", "-r", str(five.path))
    assert [d["id"] for d in plan["drop"]] == five.ids[:3]
    assert all(d["reason"] == "rules" for d in plan["drop"])
    assert du(five.path) == disk
    res = snap_json("prune", "--keep-last", "2", "-r", str(five.path))
    freed = disk - du(five.path)
    assert freed > 10 * MiB
    assert abs(plan["planned_free_bytes"] - freed) <= 0.05 * freed
    assert abs(res["freed_bytes"] - freed) <= 0.05 * freed, (
        f"prune says it freed {res['freed_bytes']} B, du dropped {freed} B"
    )
    assert snap_json("stats", "-r", str(five.path))["garbage_bytes"] == 0
    assert log_ids(five.path) == [five.other, *five.ids[3:]]
    for sid in log_ids(five.path):
        assert checks_out(five.path, sid, five.files[sid], tmp_path)


def test_pinned_snapshots_survive_every_prune(five: Five, tmp_path: Path) -> None:
    v1, v2, v3, v4, v5 = five.ids
    assert snap_json("pin", v1[:8], "-r", str(five.path)) == {"id": v1, "pinned": True}
    excl = five.exclusive()
    quota = du(five.path) - min(excl[v1], excl[v2]) // 2
    res = snap_json("prune", "--quota", str(quota), "-r", str(five.path))
    assert [d["id"] for d in res["drop"]] == [v2], "the quota took the pinned snapshot"
    assert du(five.path) <= quota

    res = snap_json("prune", "--keep-last", "1", "-r", str(five.path))
    assert [d["id"] for d in res["drop"]] == [v3, v4]
    assert "pinned" in {sid: why for sid, why in ((k["id"], k["reasons"]) for k in res["keep"])}[v1]
    assert log_ids(five.path) == [five.other, v1, v5]
    assert checks_out(five.path, v1, five.files[v1], tmp_path)

    impossible = run_snap("prune", "--quota", "1M", "-r", str(five.path))
    assert impossible.returncode == QUOTA_EXIT
    assert log_ids(five.path) == [five.other, v1, v5]

    assert "unpinned" in snap_ok("unpin", v1, "-r", str(five.path))
    res = snap_json("prune", "--keep-last", "1", "-r", str(five.path))
    assert [d["id"] for d in res["drop"]] == [v1]
    assert log_ids(five.path) == [five.other, v5]
    assert checks_out(five.path, v5, five.files[v5], tmp_path)


def test_pin_unknown_snapshot_fails(five: Five) -> None:
    res = run_snap("pin", "0000ffff", "-r", str(five.path))
    assert res.returncode == 3
    assert "no snapshot matches" in one_error_line(res.stderr.decode())


def test_rm_removes_a_pinned_snapshot_and_its_pin(five: Five) -> None:
    snap_ok("pin", five.ids[0], "-r", str(five.path))
    snap_ok("rm", five.ids[0], "-r", str(five.path))
    assert five.ids[0] not in log_ids(five.path)
    assert not list((five.path / "pins").iterdir())


# -- keep rules through the CLI, on a dated history -------------------------------------------------

DATED = {
    "a": "2020-01-05 10:00",
    "b": "2020-01-05 11:30",
    "c": "2020-01-20 08:00",
    "d": "2020-02-10 08:00",
    "e": "2020-03-01 08:00",  # a Sunday: ISO week 2020-W09
    "f": "2020-03-02 09:00",  # the Monday after: 2020-W10
    "g": "2021-06-01 12:00",
    "h": "2021-06-01 12:30",
}


@pytest.fixture
def dated(tmp_path: Path, repo_path: Path) -> tuple[Path, dict[str, str]]:
    """Snapshots of 'vm' at the DATED times, and 'x' (another name) in 2019."""
    labels: dict[str, str] = {}
    rng = random.Random(5)
    with Repository.open(repo_path, Mode.WRITE) as r:
        src = tmp_path / "src"
        for label, when in [("x", "2019-01-01 00:00"), *DATED.items()]:
            src.write_bytes(rng.randbytes(48 * 1024))
            created = datetime.strptime(when, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
            res = commit_file(r, src, name="x" if label == "x" else "vm", now=created)
            labels[res.snapshot.hex] = label
    return repo_path, labels


@pytest.mark.parametrize(
    ("options", "kept"),
    [
        (["--keep-last", "2"], "ghx"),
        (["--keep-hourly", "2"], "fhx"),
        (["--keep-daily", "2"], "fhx"),
        (["--keep-daily", "4"], "defhx"),
        (["--keep-weekly", "3"], "efhx"),
        (["--keep-monthly", "3"], "dfhx"),
        (["--keep-yearly", "2"], "fhx"),
        (["--keep-within", "7d"], "hx"),
        (["--keep-within", "100000d"], "abcdefghx"),
        (["--keep-last", "3", "--keep-monthly", "4"], "cdfghx"),
        (["--keep-yearly", "1", "--keep-weekly", "2"], "fhx"),
    ],
)
def test_keep_rules_through_the_cli(
    dated: tuple[Path, dict[str, str]], options: list[str], kept: str
) -> None:
    repo, labels = dated
    everything = set(labels.values())
    plan = snap_json("prune", *options, "--dry-run", "-r", str(repo))
    assert {labels[d["id"]] for d in plan["drop"]} == everything - set(kept)
    assert set(labels.values()) == {labels[i] for i in log_ids(repo)}, "dry run removed something"
    snap_ok("prune", *options, "-r", str(repo))
    assert "".join(sorted(labels[i] for i in log_ids(repo))) == kept


def test_keep_rules_respect_pins(dated: tuple[Path, dict[str, str]]) -> None:
    repo, labels = dated
    b = next(i for i, label in labels.items() if label == "b")
    snap_ok("pin", b, "-r", str(repo))
    res = snap_json("prune", "--keep-last", "1", "-r", str(repo))
    reasons = {labels[k["id"]]: k["reasons"] for k in res["keep"]}
    assert reasons == {
        "b": ["pinned"],
        "h": ["newest of its name", "last 1"],
        "x": ["newest of its name", "last 1"],
    }
    assert "".join(sorted(labels[i] for i in log_ids(repo))) == "bhx"


def test_prune_without_rules_or_quota_drops_nothing(dated: tuple[Path, dict[str, str]]) -> None:
    repo, labels = dated
    res = run_snap("prune", "-r", str(repo))
    assert res.returncode == 0
    assert "nothing to drop" in res.stderr.decode()
    assert len(log_ids(repo)) == len(labels)


def test_bad_prune_arguments_are_usage_errors(repo_path: Path) -> None:
    for args in (["--keep-within", "7x"], ["--quota", "lots"], ["--keep-last", "-1"]):
        res = run_snap("prune", *args, "-r", str(repo_path))
        assert res.returncode == 2, args
        one_error_line(res.stderr.decode())


# -- the repository quota, kept by every commit -------------------------------------------------------


def test_config_quota_get_set_unset(repo_path: Path) -> None:
    r = str(repo_path)
    assert snap_ok("config", "get", "quota", "-r", r).strip() == "none"
    assert "quota set to 1.5 GiB" in snap_ok("config", "set", "quota", "1.5G", "-r", r)
    assert snap_ok("config", "get", "quota", "-r", r).strip() == "1.5 GiB"
    assert snap_json("config", "get", "quota", "-r", r) == {"quota_bytes": 1610612736}
    assert snap_json("stats", "-r", r)["quota_bytes"] == 1610612736
    snap_ok("config", "unset", "quota", "-r", r)
    assert snap_json("config", "get", "quota", "-r", r) == {"quota_bytes": None}
    bad = run_snap("config", "set", "quota", "huge", "-r", r)
    assert bad.returncode == 2
    unknown = run_snap("config", "set", "colour", "red", "-r", r)
    assert unknown.returncode == 2
    assert "unknown setting" in one_error_line(unknown.stderr.decode())


@pytest.mark.slow
def test_every_commit_keeps_the_repository_within_its_quota(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    snap_ok("init", str(repo))
    quota = 60 * MiB
    snap_ok("config", "set", "quota", str(quota), "-r", str(repo))
    data = make_base(11, 32 * MiB)
    src = tmp_path / "disk.img"
    history: list[tuple[str, bytes]] = []
    pruned_total = 0
    for i in range(10):
        if i:
            rewrite(data, 200 + i, 4)
        src.write_bytes(data)
        res = run_snap("commit", str(src), "--name", "disk", "-r", str(repo), "--json")
        assert res.returncode == 0, res.stderr.decode()
        doc = json.loads(res.stdout)
        sid = doc["id"]
        assert len(doc["pruned"]) == res.stderr.decode().count("quota: dropped")
        pruned_total += len(doc["pruned"])
        history.append((sid, bytes(data)))
        usage = du(repo)
        assert usage <= quota, f"after commit {i + 1}: {format_size(usage)} > quota {format_size(quota)}"
        assert log_ids(repo)[-1] == sid
        assert checks_out(repo, sid, src, tmp_path), f"commit {i + 1} does not check out"
    remaining = log_ids(repo)
    assert len(remaining) < 10, "the quota never made a commit prune"
    assert pruned_total == 10 - len(remaining)
    assert remaining == [sid for sid, _ in history][-len(remaining) :], "not the oldest were pruned"
    # every remaining snapshot is intact, not just the newest
    for sid, content in history[-len(remaining) :]:
        src.write_bytes(content)
        assert checks_out(repo, sid, src, tmp_path)

    # a commit that cannot fit even after pruning everything else fails and changes nothing
    big = tmp_path / "big.img"
    big.write_bytes(random.Random(3).randbytes(70 * MiB))
    packs = pack_state(repo)
    before = du(repo)
    res = run_snap("commit", str(big), "--name", "disk", "-r", str(repo))
    assert res.returncode == QUOTA_EXIT, res.stderr.decode()
    line = one_error_line(res.stderr.decode())
    assert "quota" in line and "short" in line
    assert res.stdout == b""
    assert log_ids(repo) == remaining
    assert pack_state(repo) == packs, "the failed commit left data behind or removed some"
    assert abs(du(repo) - before) <= 256 * 1024 and du(repo) <= quota
    for sid, content in history[-len(remaining) :]:
        src.write_bytes(content)
        assert checks_out(repo, sid, src, tmp_path)

    # without the quota the same commit is fine
    snap_ok("config", "unset", "quota", "-r", str(repo))
    big_id = snap_ok("commit", str(big), "--name", "disk", "-r", str(repo)).strip()
    assert log_ids(repo) == [*remaining, big_id]


def test_commit_quota_protects_pins_and_other_names(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    snap_ok("init", str(repo))
    rng = random.Random(8)
    files = []
    for i in range(4):
        f = tmp_path / f"f{i}"
        f.write_bytes(rng.randbytes(6 * MiB))  # every version new, incompressible data
        files.append(f)
    keep_me = snap_ok("commit", str(files[0]), "--name", "a", "-r", str(repo)).strip()
    snap_ok("pin", keep_me, "-r", str(repo))
    other = snap_ok("commit", str(files[1]), "--name", "b", "-r", str(repo)).strip()
    a2 = snap_ok("commit", str(files[2]), "--name", "a", "-r", str(repo)).strip()
    quota = du(repo) + 3 * MiB  # room for half of one more version
    snap_ok("config", "set", "quota", str(quota), "-r", str(repo))
    # a3 needs 6 MiB: pinned a1 and 'b' (newest of its name) are protected, so a2 goes
    res = run_snap("commit", str(files[3]), "--name", "a", "-r", str(repo))
    assert res.returncode == 0, res.stderr.decode()
    a3 = res.stdout.decode().strip()
    assert f"quota: dropped {a2[:12]}" in res.stderr.decode()
    assert log_ids(repo) == [keep_me, other, a3]
    assert du(repo) <= quota
    for sid, f in ((keep_me, files[0]), (other, files[1]), (a3, files[3])):
        assert checks_out(repo, sid, f, tmp_path)


def test_stats_lists_every_snapshot_with_exclusive_bytes(five: Five) -> None:
    st = snap_json("stats", "-r", str(five.path))
    assert [s["id"] for s in st["snapshots"]] == [five.other, *five.ids]
    assert st["snapshot_count"] == 6
    by_id = {s["id"]: s["exclusive_bytes"] for s in st["snapshots"]}
    # 'other' (4 MiB of random bytes) shares nothing: all its stored bytes are its own
    assert 4 * MiB <= by_id[five.other] <= 4 * MiB + 64 * 1024
    # the versions share most chunks: each holds a small part of the stored bytes alone (v3
    # holds none: v4 keeps all it introduced, and what v4 replaced v2 shares)
    assert all(0 <= by_id[sid] < st["stored_bytes"] // 3 for sid in five.ids)
    assert by_id[five.ids[0]] > 4 * MiB and by_id[five.ids[-1]] > 4 * MiB


def test_a_commit_with_the_clock_behind_is_still_the_newest(tmp_path: Path) -> None:
    """Issue 11, point 10: snapshots are ordered by their sequence, not by a clock that can
    run behind: the last commit is 'latest', listed last, and kept by --keep-last."""
    repo = tmp_path / "repo"
    Repository.init(repo).close()
    src = tmp_path / "disk"
    rng = random.Random(10)
    stamps = [datetime(2024, 5, 1, 12, tzinfo=UTC), datetime(2024, 5, 2, 12, tzinfo=UTC)]
    stamps.append(datetime(2023, 1, 1, tzinfo=UTC))  # the clock runs behind
    ids = []
    with Repository.open(repo, Mode.WRITE) as r:
        for when in stamps:
            src.write_bytes(rng.randbytes(200_000))
            ids.append(commit_file(r, src, name="disk", now=when).snapshot.hex)
    assert log_ids(repo) == ids
    shown = snap_json("show", "latest", "-r", str(repo))
    assert shown["id"] == ids[2]
    res = snap_json("prune", "--keep-last", "2", "-r", str(repo))
    assert [d["id"] for d in res["drop"]] == [ids[0]]
    assert log_ids(repo) == ids[1:]
    with Repository.open(repo) as r:
        assert [s.sequence for s in r.list_snapshots()] == [2, 3]
