"""The plan_update module: a refreshed ``plan`` row at every interjection (persistent).

It reads the plan and interjection rows and has no knob of its own: it runs with
``interjections.enabled`` and re-runs whenever its upstream rows change. Its refreshed
plan supersedes the plan module's row at the same timestamp (``staging.merge_modules``).
"""

from episcribe.modules.spec import ModuleSpec

SPEC = ModuleSpec(
    name="plan_update",
    version=2,
    styles=frozenset({"plan"}),
    prompt_kinds=("plan_refresh",),
    section="interjections",
    upstream=("plan", "interjections"),
    settings=False,
    priority=30,
    supersedes=("plan", "plan"),
)
