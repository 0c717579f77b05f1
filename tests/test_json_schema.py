"""One JSON schema (issue 18, point 8): every command's --json output validates against
docs/snap.schema.json, the snapshot object is the same everywhere, and an error is an
``{"error": {"code", "kind", "message", "hint"}}`` document on stdout."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_snap

jsonschema = pytest.importorskip("jsonschema")
SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "docs" / "snap.schema.json").read_text())


def check(kind: str, doc: Any) -> None:
    jsonschema.validate(doc, {**SCHEMA, "$ref": f"#/$defs/{kind}"})


def snap_json(*args: str, code: int = 0) -> Any:
    done = run_snap(*args, "--json")
    assert done.returncode == code, done.stderr
    return json.loads(done.stdout)


def test_every_command_matches_the_schema(tmp_path: Path) -> None:
    repo = str(tmp_path / "repo")
    r = ["-r", repo]
    check("init", snap_json("init", repo))
    src = tmp_path / "vm.img"
    src.write_bytes(os.urandom(200_000))
    first = snap_json("commit", str(src), *r)
    check("commit", first)
    src.write_bytes(os.urandom(200_000))
    check("commit", snap_json("commit", str(src), "-m", "two", *r))
    out = snap_json("checkout", first["id"], "-o", str(tmp_path / "out.img"), *r)
    check("checkout", out)
    assert out["path"] == str(tmp_path / "out.img")
    second = snap_json("log", *r)[-1]["id"]
    for extra in ([], ["--dry-run"]):
        doc = snap_json("checkout", second, "-o", str(tmp_path / "out.img"), "--in-place", *extra, *r)
        check("checkout_in_place", doc)
        assert doc["dry_run"] is bool(extra)
    diff = snap_json("diff", first["id"], second, *r)
    check("diff", diff)
    assert diff["changed_bytes"] == 200_000
    check("log", snap_json("log", *r))
    check("show", snap_json("show", "latest", *r))
    check("stats", snap_json("stats", *r))
    check("verify", snap_json("verify", *r))
    check("pin", snap_json("pin", first["id"], *r))
    check("pin", snap_json("unpin", first["id"], *r))
    check("config", snap_json("config", "set", "quota", "1G", *r))
    check("config", snap_json("config", "get", "quota", *r))
    check("prune", snap_json("prune", "--keep-last", "1", "--dry-run", *r))
    check("rm", snap_json("rm", first["id"], *r))
    check("gc", snap_json("gc", *r))
    check("prune", snap_json("prune", "--keep-last", "1", *r))
    check("repair", snap_json("repair", *r))
    # the snapshot object is the same everywhere
    (listed,) = snap_json("log", *r)
    shown = snap_json("show", listed["id"], *r)
    for key in SCHEMA["$defs"]["snapshot"]["required"]:
        assert listed[key] == shown[key]


@pytest.mark.parametrize(
    ("args", "code", "kind"),
    [
        (["log", "-r", "/nonexistent/repo"], 3, "not found"),
        (["log", "--bogus"], 2, "usage"),
        (["config", "set", "quota", "5E", "-r", "/nonexistent/repo"], 2, "usage"),
    ],
)
def test_errors_are_json_on_stdout(args: list[str], code: int, kind: str) -> None:
    doc = snap_json(*args, code=code)
    check("error", doc)
    assert doc["error"]["code"] == code and doc["error"]["kind"] == kind


def test_tree_commands_match_the_schema(tmp_path: Path) -> None:
    """A directory snapshot: commit, show, ls and checkout into a directory (issue 13)."""
    repo = str(tmp_path / "repo")
    r = ["-r", repo]
    snap_json("init", repo)
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(os.urandom(1000))
    os.symlink("d/f", src / "ln")
    made = snap_json("commit", str(src), *r)
    check("commit", made)
    assert made["kind"] == "tree" and made["unread_files"] == 0 and made["skipped"] == []
    shown = snap_json("show", made["id"], *r)
    check("show", shown)
    assert shown["entries"] == 4 and shown["distinct_chunks"] == 3  # 2 tree objects, f's chunk
    listed = snap_json("ls", made["id"], *r)
    check("ls", listed)
    assert [(e["path"], e["type"]) for e in listed] == [("d", "dir"), ("d/f", "file"), ("ln", "symlink")]
    out = snap_json("checkout", made["id"], "-o", str(tmp_path / "out"), *r)
    check("checkout", out)
    assert out["entries"] == 3 and out["written_bytes"] == 1000
