"""A module kept outside the package (registered through EPISCRIBE_MODULES): one ``motion``
row per episode at its first frame, saying the robot holds still. It asks no model."""

from episcribe.modules.spec import ModuleSpec

SPEC = ModuleSpec(
    name="stillness",
    version=1,
    styles=frozenset({"motion"}),
    prompt_kinds=(),
    section="stillness",
)
