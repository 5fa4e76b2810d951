"""Datasets from and to the Hugging Face Hub, through ``huggingface_hub``.

- ``download_dataset``: a Hub dataset (``dataset.repo_id`` at ``dataset.revision``, or
  with no revision at the commit of its version tag, the one LeRobot trains on) is
  fetched into ``resources/hub/<owner>__<name>/<revision or version-tag>/``: first
  ``meta/``, then the data and video files its ``info.json`` templates name, nothing else
  of the repo (cards, images, archives); with ``dataset.only_episodes``, only the files
  that hold one of those episodes (published datasets often lack some files, and the
  others are not needed). A record beside the directory names the ref and commit it holds
  and the episodes; while it covers the config, a run makes no Hub request at all
  (offline re-runs work; delete the directory to fetch a moved tag or branch).
- ``push_dataset``: creates the repo when needed, writes the dataset card as README.md
  (from memory when the folder is the user's own dataset, written in place) and uploads
  the folder with ``upload_folder``, which (with ``hf_xet``, a dependency of
  huggingface_hub) commits large folders in batches and resumes an interrupted upload:
  files already committed or uploaded are not sent again. Then the tag named by the
  pushed ``meta/info.json``'s ``codebase_version`` is (re)created at the pushed commit.

The token is huggingface_hub's own (``HF_TOKEN`` or ``hf auth login``): no config key or
argument carries one, and nothing here logs it. Every Hub failure becomes one
``HubError`` line that names the repo and what to do.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

from episcribe.atomic import write_json, write_text
from episcribe.errors import HubError
from episcribe.lerobot.hub_versions import tag_version, version_revision

log = logging.getLogger(__name__)

HUB_DIR = Path("resources") / "hub"


# The directory of a download with no dataset.revision: the commit of the repo's version
# tag, as LeRobot would load it (the record beside it names the tag and commit).
VERSION_TAG_DIR = "version-tag"


def local_dir(repo_id: str, revision: str | None) -> Path:
    """Where the workflow keeps its copy of ``repo_id`` at ``revision``."""
    rev = (revision or VERSION_TAG_DIR).replace("/", "__")
    return HUB_DIR / repo_id.replace("/", "__") / rev


def download_record(dest: Path) -> dict | None:
    """What ``download_dataset`` recorded beside ``dest``: repo, revision asked, the ref
    it resolved to, the commit held and its episodes (None when ``dest`` is no download)."""
    record_path = dest.parent / f"{dest.name}.json"
    if not record_path.is_file():
        return None
    return json.loads(record_path.read_text(encoding="utf-8"))


def download_dataset(
    repo_id: str, revision: str | None, dest: Path, episodes: list[int] | None = None
) -> Path:
    """Fetch the dataset's meta, and the data and video files of ``episodes`` (None: all),
    into ``dest`` (once); return it.

    With no ``revision``, the commit LeRobot would load (``hub_versions``): one
    ``list_repo_refs`` call on the first run, none while the record matches.
    """
    record_path = dest.parent / f"{dest.name}.json"
    wanted = {"repo_id": repo_id, "revision": revision}
    record = download_record(dest)
    if record is not None and (dest / "meta" / "info.json").is_file():
        held = record.get("episodes")
        covered = held is None or (episodes is not None and set(episodes) <= set(held))
        if {k: record.get(k) for k in wanted} == wanted and covered:
            return dest
        if episodes is not None and held is not None:
            episodes = sorted(set(episodes) | set(held))  # keep what is there in the record
    from huggingface_hub import HfApi, snapshot_download

    started = time.monotonic()
    try:
        api = HfApi()
        if revision is None:
            ref, commit = version_revision(
                api.list_repo_refs(repo_id, repo_type="dataset"), repo_id
            )
        else:
            ref, commit = revision, api.dataset_info(repo_id, revision=revision).sha
        fetch = dict(repo_id=repo_id, repo_type="dataset", revision=commit, local_dir=dest)
        snapshot_download(**fetch, allow_patterns=["meta/**"])
        info_path = dest / "meta" / "info.json"
        if not info_path.is_file():
            raise HubError(
                f"Hub dataset {repo_id} has no meta/info.json: it is not a LeRobot dataset "
                "(check dataset.repo_id)"
            )
        if episodes is None:
            info = json.loads(info_path.read_text(encoding="utf-8"))
            patterns = content_patterns(info)
        else:
            patterns = episode_files(dest, episodes)
        snapshot_download(**fetch, allow_patterns=patterns)
    except HubError:
        raise
    except Exception as exc:
        raise hub_error(exc, repo_id, "download", revision) from None
    files = [p for p in dest.rglob("*") if p.is_file() and ".cache" not in p.parts]
    size = sum(p.stat().st_size for p in files)
    seconds = time.monotonic() - started
    log.info(
        "downloaded %s@%s (%s): %d files, %d bytes in %.1f s to %s",
        repo_id,
        commit[:12],
        ref,
        len(files),
        size,
        seconds,
        dest,
    )
    record = wanted | {"ref": ref, "commit": commit, "files": len(files), "bytes": size}
    write_json(record_path, record | {"episodes": episodes})
    return dest


def episode_files(root: Path, episodes: list[int]) -> list[str]:
    """The data and video files (relative paths) holding these episodes, from meta/."""
    from episcribe.lerobot.dataset_files import (
        fill_template,
        read_episodes,
        read_info,
        video_features,
    )

    info = read_info(root)
    cameras = list(video_features(info))
    columns, _ = read_episodes(root, cameras)
    selected = {int(e) for e in episodes}
    rows = [i for i, e in enumerate(columns["episode_index"]) if int(e) in selected]
    files = set()
    for row in rows:
        files.add(fill_template(
            info, "data_path",
            chunk_index=int(columns["data/chunk_index"][row]),
            file_index=int(columns["data/file_index"][row]),
        ))  # fmt: skip
        for cam in cameras:
            files.add(fill_template(
                info, "video_path", video_key=cam,
                chunk_index=int(columns[f"videos/{cam}/chunk_index"][row]),
                file_index=int(columns[f"videos/{cam}/file_index"][row]),
            ))  # fmt: skip
    return sorted(files)


def content_patterns(info: dict) -> list[str]:
    """The data and video files of a LeRobot v3 ``info.json``, as glob patterns."""
    patterns = []
    for key in ("data_path", "video_path"):
        template = info.get(key)
        if isinstance(template, str) and template:
            patterns.append(re.sub(r"\{[^}]*\}", "*", template))
    return patterns


def push_dataset(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool,
    commit_message: str,
    card: str,
) -> dict:
    """Upload ``folder`` (with ``card`` as its README.md) to dataset ``repo_id``."""
    from huggingface_hub import HfApi, get_token

    if get_token() is None:
        raise HubError(
            f"pushing to the Hub dataset {repo_id} needs a token with write access: "
            "export HF_TOKEN=... or run `hf auth login` (never put it in config)"
        )
    from episcribe.lerobot.writer import MARKER  # here: parsing the Snakefile imports this module

    ignore = [MARKER, ".cache/**"]  # not dataset content: ours and huggingface_hub's
    folder = Path(folder)
    # In a folder the writer made, the card is a file of it; a dataset written in place is
    # the user's own, whose README.md is never overwritten: its card goes from memory.
    ours = (folder / MARKER).is_file()
    if ours:
        write_text(folder / "README.md", card)
    api = HfApi()
    started = time.monotonic()
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=folder,
            repo_id=repo_id,
            repo_type="dataset",
            commit_message=commit_message,
            ignore_patterns=ignore if ours else [*ignore, "README.md"],
        )
        if not ours:
            commit = api.upload_file(
                path_or_fileobj=card.encode("utf-8"),
                path_in_repo="README.md",
                repo_id=repo_id,
                repo_type="dataset",
                commit_message=f"{commit_message}: dataset card",
            )
    except Exception as exc:
        raise hub_error(exc, repo_id, "push") from None
    # LeRobot loads the commit its version tag names, not main: the tag moves to ours.
    version = json.loads((folder / "meta" / "info.json").read_text(encoding="utf-8"))[
        "codebase_version"
    ]
    tag_version(api, repo_id, commit.oid, version)
    files = [
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    receipt = {
        "repo_id": repo_id,
        "commit": commit.oid,
        "commit_url": str(commit.commit_url),
        "tag": version,  # points at commit: the commit LeRobotDataset(repo_id) loads
        "private": private,
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "seconds": round(time.monotonic() - started, 3),
    }
    log.info("pushed %s to %s (%s), tagged %s", folder, repo_id, receipt["commit_url"], version)
    return receipt


def dataset_card(
    *,
    repo_id: str,
    source: str,
    model: dict,
    modules: list[str],
    episodes: int,
    total_episodes: int,
    prompts: list[str | Path],
) -> str:
    """README.md of a pushed dataset: what was annotated, with what, and how to load it."""
    import hashlib

    prompt_rows = "\n".join(
        f"| `{Path(p).name}` | `{hashlib.sha256(Path(p).read_bytes()).hexdigest()[:12]}` |"
        for p in prompts
    )
    settings = ", ".join(f"{k}={v}" for k, v in model.items() if k not in ("model_id", "fake"))
    return f"""---
tags:
- LeRobot
- episcribe
task_categories:
- robotics
configs:
- config_name: default
  data_files: data/*/*.parquet
---

# {repo_id}

A [LeRobot](https://github.com/huggingface/lerobot) v3 dataset whose frames carry language
annotations in two columns, `language_persistent` (subtasks, plans, memory, task
rephrasings: the same on every frame of an episode) and `language_events` (interjections,
the robot's `say` replies and visual Q&A, on the frames they belong to). They were written
by episcribe with a vision-language model watching each episode's video.

- Source dataset: {source}
- Model: `{model["model_id"]}` ({settings})
- Modules: {", ".join(modules)}
- Episodes annotated: {episodes} of {total_episodes}

Prompts (sha256 of each file, to tell prompt versions apart):

| prompt | sha256 |
|---|---|
{prompt_rows}

## Loading

```python
from lerobot.datasets.lerobot_dataset import LeRobotDataset

dataset = LeRobotDataset("{repo_id}")
frame = dataset[0]
print(frame["language_persistent"], frame["language_events"])
```

or one data file with pandas:
`pandas.read_parquet("hf://datasets/{repo_id}/data/chunk-000/file-000.parquet")`.
"""


def hub_error(exc: Exception, repo_id: str, action: str, revision: str | None = None) -> HubError:
    """One line for a failed Hub call: the repo, what went wrong, what to do."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    what = f"Hub dataset {repo_id}"
    login = "export HF_TOKEN=... or run `hf auth login`"
    if isinstance(exc, GatedRepoError):
        return HubError(f"{what} is gated: accept its conditions on its Hub page, then {login}")
    if isinstance(exc, RepositoryNotFoundError):
        return HubError(
            f"{what} was not found (or is private and no valid token was sent): check the id, "
            f"or {login}"
        )
    if isinstance(exc, RevisionNotFoundError):
        return HubError(f"{what} has no revision {revision!r}: check dataset.revision")
    if isinstance(exc, OfflineModeIsEnabled | LocalEntryNotFoundError) or _is_network(exc):
        return HubError(
            f"cannot reach the Hub to {action} {what} ({type(exc).__name__}): check the network "
            "(and HF_ENDPOINT, HF_HUB_OFFLINE), or set dataset.root to a local copy"
        )
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            return HubError(
                f"the Hub refused to {action} {what} (HTTP {status}): the token lacks access; "
                f"{login} with a token that can write to it"
            )
        return HubError(f"the Hub failed to {action} {what} (HTTP {status}): try again later")
    return HubError(f"could not {action} {what}: {type(exc).__name__}: {exc}".splitlines()[0])


def _is_network(exc: Exception) -> bool:
    return isinstance(exc, ConnectionError | TimeoutError) or type(exc).__module__.split(".")[
        0
    ] in ("httpx", "httpx2", "httpcore")
