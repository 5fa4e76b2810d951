"""The review module: a person's corrections, saved by ``episcribe review`` (no job runs it).

Its file for an episode (``results/<dataset>/review/episode_{N:06d}.jsonl``, staging rows)
holds that episode's rows of every style a person can correct, as the person left them;
``staging.merge_modules`` lets them replace every other module's rows of those styles
(``replaces_styles``), so the writer, the validator and the report see the corrections and
a re-run after a prompt edit keeps them. ``review.enabled: false`` ignores the files.
"""

from episcribe.modules.spec import ModuleSpec

SPEC = ModuleSpec(
    name="review",
    version=1,
    # None: the speech atoms of the acknowledgement and of each interjection's reply
    styles=frozenset({"subtask", "plan", "memory", "interjection", None, "vqa"}),
    prompt_kinds=(),
    section="review",
    settings=False,
    replaces_styles=True,
    annotates=False,
)
