"""Looking at a server from outside: whether it answers over HTTP, which model it serves,
and what its records and logs in ``run_dir`` say."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from pathlib import Path

from episcribe.errors import ServerError

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 2.0
# Plain urllib, no proxies: health checks go to 127.0.0.1 or to the user's api_base.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get_ok(url: str, api_key: str | None = None) -> bool:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with _HTTP.open(request, timeout=HEALTH_TIMEOUT_S) as r:
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _root(base_url: str) -> str:
    base = base_url.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def served_models(base_url: str, api_key: str | None = None) -> list[str] | None:
    """The model ids ``GET {base_url}/models`` lists, or None if it cannot be read."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    request = urllib.request.Request(base_url.rstrip("/") + "/models", headers=headers)
    try:
        with _HTTP.open(request, timeout=HEALTH_TIMEOUT_S) as r:
            data = json.loads(r.read()).get("data")
        return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]
    except (urllib.error.URLError, OSError, ValueError, AttributeError, TypeError):
        return None


def check_serves(base_url: str, settings: dict) -> None:
    """Refuse a server that answers but does not serve ``vlm.model_id``, naming both."""
    models = served_models(base_url, settings.get("api_key"))
    if models is None:
        log.warning("%s answers but does not list its models; not checked", base_url)
        return
    if settings["model_id"] not in models:
        raise ServerError(
            f"the server at {base_url} serves {', '.join(map(repr, models)) or 'no model'}, "
            f"not vlm.model_id {settings['model_id']!r}: set vlm.model_id to the served model, "
            "or point vlm.api_base at a server of this one"
        )


def answers(base_url: str, api_key: str | None = None) -> bool:
    """Whether an OpenAI-compatible server answers at ``base_url`` (…/v1)."""
    return _get_ok(_root(base_url) + "/health") or _get_ok(
        base_url.rstrip("/") + "/models", api_key
    )


def read_json(path: Path) -> dict | None:
    """A record in ``run_dir`` (server.json, supervisor.json, failed.json), or None."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, for an error message."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"
