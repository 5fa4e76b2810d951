"""The signals module: keystates and ``motion`` rows from the robot's own state (no model).

``analysis.py`` recognises the state vector's channels by name and finds keystates
(grasp, release, rest) and motion primitives; ``run.py`` turns them into rows;
``config.schema.yaml`` holds ``signals.*``.
"""

from episcribe.modules.spec import ModuleSpec

SPEC = ModuleSpec(
    name="signals",
    version=1,
    # keystate rows stay in staging (language.STAGING_STYLES): the plan reads them
    styles=frozenset({"motion", "keystate"}),
    prompt_kinds=(),
    section="signals",
    priority=40,  # no model calls, and the plan waits for it
)
