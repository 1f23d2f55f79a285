"""Run ONNX's backend node tests through ember's importer and write the results into
docs/onnx.md (between the conformance markers), so the committed report is the
measured one. tests/onnx/test_onnx_conformance.py checks that it is up to date.

Usage (from the repository root):
    python -m tools.onnx_report            # rewrite docs/onnx.md
    python -m tools.onnx_report --check    # exit 1 if docs/onnx.md is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "onnx.md"
START, END = "<!-- conformance:start -->", "<!-- conformance:end -->"


def measured_report() -> str:
    """The conformance section as the installed onnx package and ember produce it."""
    import onnx

    from ember.onnx import conformance

    results = [conformance.run_case(case) for case in conformance.node_cases()]
    return conformance.markdown_report(results, onnx.__version__)


def committed_report(text: str) -> str:
    """The conformance section of docs/onnx.md's text."""
    if START not in text or END not in text:
        raise SystemExit(f"{DOC}: the markers {START} / {END} are missing")
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, do not write")
    args = parser.parse_args(argv)
    text = DOC.read_text()
    report = measured_report()
    if args.check:
        same = committed_report(text) == report
        print("docs/onnx.md is up to date" if same else "docs/onnx.md is out of date")
        return 0 if same else 1
    head, rest = text.split(START, 1)
    DOC.write_text(head + START + "\n" + report + END + rest.split(END, 1)[1])
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
