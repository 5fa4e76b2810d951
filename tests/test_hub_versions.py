"""LeRobot's rule for the commit of a Hub dataset, on refs as list_repo_refs returns them."""

from __future__ import annotations

import pytest
from huggingface_hub.hf_api import GitRefInfo, GitRefs

from episcribe.errors import HubError
from episcribe.lerobot.hub_versions import version_revision


def refs(tags: dict[str, str], branches: dict[str, str] | None = None) -> GitRefs:
    def infos(names: dict[str, str], kind: str) -> list[GitRefInfo]:
        return [
            GitRefInfo(name=n, ref=f"refs/{kind}/{n}", target_commit=c) for n, c in names.items()
        ]

    return GitRefs(
        branches=infos(branches or {"main": "m"}, "heads"),
        converts=[],
        tags=infos(tags, "tags"),
    )


@pytest.mark.parametrize(
    "tags, branches, expected",
    [
        ({"v3.0": "a", "v2.1": "b"}, None, ("v3.0", "a")),  # the exact version
        ({"v3.0": "a", "v3.1": "c"}, None, ("v3.0", "a")),  # never a newer minor
        ({"v3": "d", "v2.1": "b"}, None, ("v3", "d")),  # v3 is version 3.0 too
        ({"v3.0.1": "e", "v2.1": "b"}, None, ("v3.0.1", "e")),  # same major, minor not above
        ({}, {"main": "m", "v3.0": "f"}, ("v3.0", "f")),  # a branch named so counts too
    ],
)
def test_the_ref_lerobot_loads(tags, branches, expected):
    assert version_revision(refs(tags, branches), "me/x") == expected


@pytest.mark.parametrize("tags", [{}, {"v2.1": "b"}, {"v3.1": "c", "release": "r"}])
def test_no_loadable_version_names_the_refs_found_and_the_fix(tags):
    with pytest.raises(HubError) as err:
        version_revision(refs(tags), "me/x")
    message = str(err.value)
    assert message.startswith("Hub dataset me/x has no version tag LeRobot v3.0 can load")
    assert f"its refs: {', '.join(sorted([*tags, 'main']))}." in message
    assert "Set dataset.revision" in message
