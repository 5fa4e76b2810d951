"""episcribe: annotate LeRobot datasets with a vision-language model, as a Snakemake workflow.

The package holds all logic; the Snakemake rules only wire files to it.
One module per concept: ``dataset`` (reading LeRobot v3), ``frames`` (decoding),
``language`` (the output vocabulary), ``staging``, ``validation``, ``writer``,
``vlm`` (client, server lifecycle, fake server) and ``modules`` (the annotators).
"""

from pathlib import Path

__version__ = "0.1.0"

# The Snakefile, rules, scripts, prompts, schemas and profiles, shipped as package data
# (links to the checkout's top-level files in a development install).
WORKFLOW_DIR = Path(__file__).resolve().parent / "workflow_files"
