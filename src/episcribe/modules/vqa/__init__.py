"""The vqa module: frame-grounded question/answer pairs per camera (event rows).

``run.py`` asks the questions; ``answers.py`` knows each question type's answer shape
(used by the validator and the report's overlays); ``config.schema.yaml`` holds ``vqa.*``
and the one budget its five call kinds share.
"""

from episcribe.modules.spec import ModuleSpec

QUESTION_TYPES = ("bbox", "keypoint", "count", "attribute", "spatial")

SPEC = ModuleSpec(
    name="vqa",
    version=2,
    styles=frozenset({"vqa"}),
    prompt_kinds=tuple(f"vqa_{kind}" for kind in QUESTION_TYPES),
    section="vqa",
    seeded=True,
    # Throughput-bound: its jobs fill the model-server slots the plan chain leaves.
    priority=0,
    placement=("vqa_emission_hz", "restrict_to_default_camera"),
    budget_keys={f"vqa_{kind}": "vqa" for kind in QUESTION_TYPES},
    images_per_request=lambda settings: 1,
)
