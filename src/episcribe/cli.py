"""``episcribe``: run the workflow with dotted config keys.

Snakemake's ``--config`` refuses dots in keys, so ``episcribe`` rewrites
``--config plan.enabled=false`` to ``--config plan__enabled=false`` (which the
workflow expands into the nested key) and hands every argument to ``snakemake``
unchanged otherwise: ``episcribe --cores all --config vqa.vqa_emission_hz=2``.
"""

from __future__ import annotations

import os
import sys

from .config import dotted_to_snakemake


def translate(args: list[str]) -> list[str]:
    out: list[str] = []
    in_config = False
    for arg in args:
        if arg.startswith("-"):
            in_config = arg in ("--config", "-C")
        elif in_config and "=" in arg:
            arg = dotted_to_snakemake(arg)
        out.append(arg)
    return out


def main() -> None:
    args = ["snakemake", *translate(sys.argv[1:])]
    os.execvp(args[0], args)


if __name__ == "__main__":
    main()
