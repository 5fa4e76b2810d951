"""What a module's version bump re-runs on g1_bottle: jobs and model calls per module.

    python bench/bench_versions.py [--dataset ../shared/datasets/g1_bottle]

Runs the workflow once (fake server), then, for each module, raises its behaviour version
in a copy of the package (as an upgrade would) and runs again from the first run's
results, counting the jobs snakemake ran and the model calls by kind. Prints numbers,
asserts nothing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

from smk import Workspace  # noqa: E402
from test_module_versions import package_copy  # noqa: E402

from episcribe.modules import registry  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", type=Path, default=ROOT.parent / "shared/datasets/g1_bottle")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ws = Workspace(work / "ws", args.dataset)
        ws.run()
        first = len(ws.fake_requests())
        print(f"first run: {first} model calls")
        baseline = work / "baseline"
        shutil.copytree(ws.root, baseline, symlinks=True)
        for spec in registry.SPECS:
            shutil.rmtree(ws.root)
            shutil.copytree(baseline, ws.root, symlinks=True)
            src = package_copy(work / f"pkg_{spec.name}")
            init = src / "episcribe" / "modules" / spec.name / "__init__.py"
            init.write_text(init.read_text().replace("    version=", "    version=1 + ", 1))
            ws.env["PYTHONPATH"] = str(src)
            before = len(ws.fake_requests())
            run = ws.run()
            jobs = Counter(
                r.rsplit("_", 1)[0] if r.startswith("annotate_") else r for r in run.rules
            )
            calls = Counter(r["kind"] for r in ws.fake_requests()[before:])
            print(
                f"{spec.name} (version {spec.version}): jobs "
                + ", ".join(f"{k} {n}" for k, n in sorted(jobs.items()))
                + f"; model calls {sum(calls.values())}"
                + (
                    " (" + ", ".join(f"{k} {n}" for k, n in sorted(calls.items())) + ")"
                    if calls
                    else ""
                )
            )


if __name__ == "__main__":
    main()
