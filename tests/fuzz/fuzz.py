"""Run one fuzz target with atheris (coverage-guided): ``python tests/fuzz/fuzz.py TARGET
[atheris/libFuzzer options]``, e.g. ``python tests/fuzz/fuzz.py manifest_file -runs=100000``.
Without atheris installed, each seed is run once and the script says how to get atheris.
A finding is any exception that is not a snapstore error (atheris prints it and stops)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project, for 'tests' and 'snapstore'


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python tests/fuzz/fuzz.py TARGET [libFuzzer options]")
    name = sys.argv.pop(1)
    try:
        import atheris
    except ImportError:
        atheris = None
    if atheris is not None:
        with atheris.instrument_imports(include=["snapstore"]):
            from tests.fuzz import targets
    else:
        from tests.fuzz import targets
    from snapstore.errors import SnapstoreError

    target = targets.TARGETS[name]

    def one(data: bytes) -> None:
        with contextlib.suppress(SnapstoreError):
            target(data)

    if atheris is None:
        for seed in targets.seeds(name):
            one(seed)
        sys.exit(f"ran the {name} seeds; install atheris (pip install atheris) to fuzz")
    corpus = Path(__file__).parent / "corpus" / name
    if not corpus.exists():
        corpus.mkdir(parents=True)
        for i, seed in enumerate(targets.seeds(name)):
            (corpus / f"seed-{i}").write_bytes(seed)
    atheris.Setup([sys.argv[0], str(corpus), *sys.argv[1:]], one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
