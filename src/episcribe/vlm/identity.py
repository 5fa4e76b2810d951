"""Which vlm settings make the model answer differently: the identity every module's jobs
take as a param (and their cache keys contain), so changing one re-annotates."""

from __future__ import annotations

from episcribe.vlm.sizing import token_budgets


def model_identity(vlm: dict, camera_key: str) -> dict:
    """The vlm settings that change what the model answers (and so trigger re-runs).

    Endpoint, concurrency and timeouts are left out on purpose: moving the server or
    raising the concurrency must not re-annotate anything. A fake server's answers
    depend on its options, so those are part of its identity.
    """
    identity = {
        "model_id": vlm["model_id"],
        "camera_key": camera_key,
        "max_completion_tokens": token_budgets(vlm),
        "enable_thinking": vlm["enable_thinking"],
        "chat_template_kwargs": vlm["chat_template_kwargs"],
        "reasoning_effort": vlm["reasoning_effort"],
        "temperature": vlm["temperature"],
        "image_max_side": vlm["image_max_side"],
        "jpeg_quality": vlm["jpeg_quality"],
    }
    if vlm["backend"] == "fake":
        identity["fake"] = vlm["fake"]
    return identity
