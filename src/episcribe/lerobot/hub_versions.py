"""LeRobot's version tags on the Hub: which commit a dataset is read from, and tagging ours.

LeRobot never reads a Hub dataset's ``main``: ``LeRobotDataset(repo_id)`` lists the repo's
refs and loads the one named by its codebase version (``v3.0``), else the newest ref of
the same major version whose minor is not above it; no such ref is an error. So:

- ``version_revision`` picks the ref the same way, for a download with no
  ``dataset.revision``: the annotations are made on the commit training will read.
- ``tag_version`` points the tag named by the pushed ``meta/info.json``'s
  ``codebase_version`` at the pushed commit (deleting the old tag first: a Hub tag
  cannot be moved), so the pushed commit is the one LeRobot loads.

Refs whose names are not versions (``main``, ``my-branch``) never count, as in LeRobot;
its rule counts branches as well as tags, and so does this one.
"""

from __future__ import annotations

import logging

from packaging.version import InvalidVersion, Version

from episcribe.errors import HubError

log = logging.getLogger(__name__)

# The LeRobot dataset format this package reads and writes: a download with no revision
# reads the commit a LeRobot of this codebase version would.
CODEBASE_VERSION = "v3.0"


def _version(name: str) -> Version | None:
    try:
        return Version(name)
    except InvalidVersion:
        return None


def version_revision(refs, repo_id: str, target: str = CODEBASE_VERSION) -> tuple[str, str]:
    """(ref name, commit) LeRobot would load from ``refs`` (``HfApi.list_repo_refs``)."""
    wanted = Version(target)
    named = [(ref.name, ref.target_commit) for ref in [*refs.tags, *refs.branches]]
    versions = [(v, name, commit) for name, commit in named if (v := _version(name))]
    exact = [item for item in versions if item[0] == wanted]
    compatible = [
        item for item in versions if item[0].major == wanted.major and item[0].minor <= wanted.minor
    ]
    chosen = exact or sorted(compatible, key=lambda item: item[0])[-1:]
    if chosen:
        _, name, commit = chosen[0]
        return name, commit
    found = ", ".join(sorted(name for name, _ in named)) or "none"
    raise HubError(
        f"Hub dataset {repo_id} has no version tag LeRobot {target} can load ({target}, or "
        f"v{wanted.major}.x up to it); its refs: {found}. Set dataset.revision to the "
        "branch, tag or commit to annotate (e.g. main), or tag the repo with its "
        "meta/info.json codebase_version"
    )


def tag_version(api, repo_id: str, commit: str, version: str) -> None:
    """Point tag ``version`` of dataset ``repo_id`` at ``commit`` (re-created if present).

    A failure is a HubError saying the upload is done but LeRobot will not load it, with
    the one command that finishes the job.
    """
    old = None
    try:
        refs = api.list_repo_refs(repo_id, repo_type="dataset")
        old = next((tag for tag in refs.tags if tag.name == version), None)
        if old is not None and old.target_commit == commit:
            return
        if old is not None:
            api.delete_tag(repo_id, tag=version, repo_type="dataset")
        api.create_tag(repo_id, tag=version, revision=commit, repo_type="dataset")
    except Exception as exc:
        fix = f"hf repos tag create {repo_id} {version} --repo-type dataset --revision {commit}"
        if old is not None:
            fix = f"hf repos tag delete {repo_id} {version} --repo-type dataset --yes && {fix}"
        why = (str(exc).splitlines() or [""])[0]
        raise HubError(
            f"Hub dataset {repo_id} is uploaded (commit {commit}) but could not be tagged "
            f"{version} ({type(exc).__name__}: {why}), so LeRobot will not load it: run `{fix}`"
        ) from None
    log.info("tagged %s %s at %s (%s)", repo_id, version, commit, "moved" if old else "new")
