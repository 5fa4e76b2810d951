"""The interjections module: the robot's first acknowledgement, and user interjections at
subtask boundaries with the robot's spoken reply (event rows).

``run.py`` annotates one episode; ``config.schema.yaml`` holds ``interjections.*`` (which
the plan_update module shares) and the budgets of its two call kinds.
"""

from episcribe.modules.spec import ModuleSpec

# Seconds around the boundary of the frames the interjection call sees (2 before, 3 after).
WINDOW_OFFSETS = (-1.0, -0.5, 0.0, 0.75, 1.5, 2.5)

SPEC = ModuleSpec(
    name="interjections",
    version=2,
    styles=frozenset({"interjection", None}),
    prompt_kinds=("initial_speech", "interjection"),
    section="interjections",
    upstream=("plan",),
    seeded=True,
    priority=20,
    avoids=("vqa",),
    images_per_request=lambda settings: len(WINDOW_OFFSETS),
)
