"""episcribe: annotate LeRobot datasets with a vision-language model, as a Snakemake workflow.

The package holds all logic; the Snakemake rules only wire files to it.
One module per concept: ``dataset`` (reading LeRobot v3), ``frames`` (decoding),
``language`` (the output vocabulary), ``staging``, ``validation``, ``writer``,
``vlm`` (client, server lifecycle, fake server) and ``modules`` (the annotators).
"""

__version__ = "0.1.0"
