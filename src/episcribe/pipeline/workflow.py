"""What the Snakefile needs to know, computed in plain (testable) Python.

``WorkflowPlan`` turns the validated config and the dataset's metadata into the
shards, rule inputs and parameters that ``rules/*.smk`` declare; where each file lives is
:class:`~episcribe.pipeline.layout.Layout`'s (``plan.paths``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from episcribe.errors import ConfigError, DatasetError
from episcribe.lerobot import hub
from episcribe.lerobot.dataset import LeRobotDataset
from episcribe.modules import registry
from episcribe.modules.prompts import prompt_files
from episcribe.pipeline.cache import digest, incomplete_runs
from episcribe.pipeline.layout import Layout
from episcribe.pipeline.staging import review_file, reviewed_episodes, staging_paths
from episcribe.vlm.identity import model_identity

# Snakemake's cost per job grows with the number of jobs (bench/README.md), so a run
# stays under about this many.
MAX_JOBS = 1000
# Episodes per job under workflow.episodes_per_job: auto. A job pays Python, imports and
# opening the dataset before its first model call, so one job per episode would spend
# more on start-up than an episode's calls cost a server, and many jobs at once more
# memory (bench/README.md). A cached episode costs a job almost nothing, so rebuilding
# one episode stays cheap in a big shard.
AUTO_EPISODES_PER_JOB = 32


@dataclass(frozen=True)
class Shard:
    """Consecutive episodes annotated by one job of each module."""

    number: int
    episodes: tuple[int, ...]

    @property
    def label(self) -> str:
        """Names the shard's log and benchmark files after its episodes."""
        first, last = self.episodes[0], self.episodes[-1]
        return f"episode_{first:06d}" if first == last else f"episodes_{first:06d}-{last:06d}"

    def rule_name(self, module: str) -> str:
        """``annotate_vqa_e12`` (one episode) or ``annotate_vqa_s3`` (shard 3).

        Short on purpose: a cluster group job is named after five of its rules, and the
        executor's temporary files carry that name, which must fit in 255 bytes.
        """
        if len(self.episodes) == 1:
            return f"annotate_{module}_e{self.episodes[0]}"
        return f"annotate_{module}_s{self.number}"


def dataset_name(config: dict) -> str:
    """The run's name under results/ and logs/: the dataset's, + the prompt variant's."""
    root = config["dataset"]["root"]
    name = Path(root).resolve().name if root else config["dataset"]["repo_id"].replace("/", "__")
    variant = (config.get("prompts") or {}).get("dir")
    # A prompt variant's run must not resume from (or overwrite) the default prompts' run.
    return f"{name}+{Path(variant).resolve().name}" if variant else name


def prompts_dir(config: dict, default: Path) -> Path:
    """The directory of the run's prompt files: prompts.dir, or the workflow's own."""
    variant = (config.get("prompts") or {}).get("dir")
    if not variant:
        return default
    path = Path(variant)
    if not path.is_dir():
        raise ConfigError(
            f"prompts.dir {variant} is not a directory: give a copy of the workflow's "
            "prompts/ with your edits (every <kind>.txt and <kind>.schema.json)"
        )
    return path


def dataset_root(config: dict) -> Path:
    """The dataset's local directory: dataset.root, or the workflow's copy of repo_id."""
    dataset = config["dataset"]
    if dataset["root"]:
        return Path(dataset["root"])
    if dataset["repo_id"]:
        return hub.local_dir(dataset["repo_id"], dataset["revision"])
    raise ConfigError(
        "no dataset: pass --config dataset__root=/path/to/dataset (a local LeRobot v3 "
        "dataset) or dataset__repo_id=owner/name (a Hub dataset)"
    )


def fetch_dataset(config: dict) -> None:
    """Download dataset.repo_id when no dataset.root is set (nothing when it is cached)."""
    dataset = config["dataset"]
    if not dataset["root"] and dataset["repo_id"]:
        hub.download_dataset(
            dataset["repo_id"], dataset["revision"], dataset_root(config), dataset["only_episodes"]
        )


def model_camera(dataset: LeRobotDataset, camera_key: str | None, modules: list[str]) -> str | None:
    """The camera the plan and interjection prompts show: vlm.camera_key, else the
    dataset's first colour camera (never a depth stream). None when no module shows one."""
    depth = dataset.depth_streams
    if camera_key in depth:
        raise ConfigError(
            f"vlm.camera_key {camera_key!r} of {dataset.root} is a depth stream "
            "(video.is_depth_map in meta/info.json), which the model is never shown; "
            f"set it to one of its cameras: {', '.join(dataset.cameras) or 'none'}"
        )
    if not dataset.cameras:
        showing = [m for m in modules if registry.asks_model(m)]
        if showing:
            switches = sorted({f"{registry.MODULES[m].section}.enabled=false" for m in showing})
            raise DatasetError(
                f"{dataset.root / 'meta/info.json'}: its only video streams are depth maps "
                f"({', '.join(depth)}), and {', '.join(showing)} need a colour camera to show "
                f"the model; annotate a dataset with one, or set {' '.join(switches)} to "
                "derive only the robot's signals"
            )
        return None
    camera = camera_key or dataset.cameras[0]
    if camera not in dataset.cameras:
        raise ConfigError(
            f"vlm.camera_key {camera!r} is not a camera of {dataset.root}; "
            f"its cameras are: {', '.join(dataset.cameras)}"
        )
    return camera


def push_repo(config: dict) -> str | None:
    """The Hub repo output.push_to_hub uploads to (None: no push)."""
    if not config["output"]["push_to_hub"]:
        return None
    repo = config["output"]["new_repo_id"] or config["dataset"]["repo_id"]
    if not repo:
        raise ConfigError(
            "output.push_to_hub needs a repo: set output.new_repo_id=owner/name (or annotate "
            "a Hub dataset with dataset.repo_id to push back to it)"
        )
    return repo


def shard_episodes(episodes: list[int], per_job: int | str, n_modules: int) -> list[Shard]:
    if per_job == "auto":
        within_max_jobs = math.ceil(len(episodes) * max(n_modules, 1) / MAX_JOBS)
        per_job = max(AUTO_EPISODES_PER_JOB, within_max_jobs)
    return [
        Shard(number, tuple(episodes[start : start + per_job]))
        for number, start in enumerate(range(0, len(episodes), per_job))
    ]


class WorkflowPlan:
    def __init__(self, config: dict, prompts_dir: Path):
        output, vlm = config["output"], config["vlm"]
        if output["in_place"] and vlm["backend"] == "fake" and not output["allow_fake_in_place"]:
            raise ConfigError(
                "vlm.backend is fake, whose answers are placeholders, and output.in_place "
                "would write them into your dataset: set output.in_place=false (a new "
                "directory), or output.allow_fake_in_place=true if that is what you want"
            )
        self.push_repo = push_repo(config)
        self.config = config
        self.prompts_dir = prompts_dir
        self.dataset = LeRobotDataset.open(dataset_root(config), config["dataset"]["only_episodes"])
        self.name = dataset_name(config)
        self.paths = Layout(self.name)
        self.episodes = self.dataset.episode_indices(config["dataset"]["only_episodes"])
        self.modules = registry.enabled(config)
        if not self.modules:
            switches = sorted({f"{spec.section}.enabled" for spec in registry.SPECS})
            raise ConfigError(f"every module is disabled ({', '.join(switches)}): nothing to do")
        self.shards = shard_episodes(
            self.episodes, config["workflow"]["episodes_per_job"], len(self.modules)
        )
        camera = model_camera(self.dataset, config["vlm"]["camera_key"], self.modules)
        self.model = model_identity(config["vlm"], camera)
        self._staging_cache: dict[str, list[str]] = {}
        self._sources_cache: dict[Shard, list[str]] = {}
        self._incomplete: dict[str, dict[int, int]] = {}

    # -- paths ---------------------------------------------------------------------
    # At 10,000 episodes the rule files ask for these 100,000+ times while snakemake
    # parses the Snakefile (and again in every cluster job), so they are plain strings,
    # formatted once and kept.
    def staging_outputs(self, module: str, shard: Shard) -> list[str]:
        return staging_paths(self.paths.staging, shard.episodes, module)

    def all_staging(self) -> list[str]:
        return [path for module in self.modules for path in self._all_staging(module)]

    def missing_staging(self) -> list[str]:
        """The staging files of the plan that do not exist (one ``stat`` each)."""
        exists = os.path.exists
        return [path for path in self.all_staging() if not exists(path)]

    def _all_staging(self, module: str) -> list[str]:
        cached = self._staging_cache.get(module)
        if cached is None:
            cached = self._staging_cache[module] = staging_paths(
                self.paths.staging, self.episodes, module
            )
        return cached

    def job_files(self, module: str, shard: Shard) -> dict[str, str]:
        """An annotate job's declared summary and metrics files."""
        return {
            "summary": self.paths.job_summary(module, shard.label),
            "metrics": self.paths.job_metrics(module, shard.label),
        }

    def all_job_files(self, kind: str) -> list[str]:
        """Every current shard's job ``summary`` or ``metrics`` file, module by module."""
        return [self.job_files(m, shard)[kind] for m in self.modules for shard in self.shards]

    def review_dir(self) -> str | None:
        """Where the review server keeps a person's corrections; None when review is off."""
        return str(self.paths.review) if self.config["review"]["enabled"] else None

    def review_files(self) -> list[str]:
        """The plan's episodes' review files that exist now (read at parse time): inputs of
        validate_staging and render_report, so a saved correction re-runs them and the
        write. No job writes them, so no run deletes them."""
        review_dir = self.review_dir()
        if review_dir is None:
            return []
        wanted = set(self.episodes)
        reviewed = [e for e in reviewed_episodes(review_dir) if e in wanted]
        return [str(review_file(review_dir, e)) for e in reviewed]

    def destination(self) -> str | None:
        """None means in place."""
        output = self.config["output"]
        if output["in_place"]:
            return None
        # Kept as given (relative to the working directory by default): an absolute path
        # would change with the checkout's location and re-run the write for nothing.
        return str(Path(output["root"] or self.paths.annotated))

    def provenance(self) -> dict:
        """What produces the annotations, recorded in the written dataset."""
        prompts = {
            Path(path).name: Path(path).read_text(encoding="utf-8")
            for path in self.all_prompt_inputs()
        }
        provenance = {
            "backend": self.config["vlm"]["backend"],
            "fake_annotations": self.config["vlm"]["backend"] == "fake",
            "model": self.model,
            "prompts_sha256": digest(prompts),
        }
        source = self.hub_source()
        if source is not None:
            provenance["source"] = source
        return provenance

    def hub_source(self) -> dict | None:
        """The Hub repo, revision asked, ref resolved and commit annotated (None: local)."""
        dataset = self.config["dataset"]
        if dataset["root"] or not dataset["repo_id"]:
            return None
        record = hub.download_record(self.dataset.root) or {}
        keys = ("repo_id", "revision", "ref", "commit")
        return {key: record.get(key) for key in keys} | {"repo_id": dataset["repo_id"]}

    def push_params(self) -> dict:
        """push_dataset's params: the folder, the repo and what its dataset card says."""
        dataset, output = self.config["dataset"], self.config["output"]
        hub_source = self.hub_source()
        if hub_source is None:
            source = f"a local dataset, `{self.dataset.root.name}`"
        else:
            source = f"`{dataset['repo_id']}` ({hub_source['ref']}, commit {hub_source['commit']})"
        model_id = self.model["model_id"]
        return {
            "folder": self.destination() or str(self.dataset.root),
            "repo_id": self.push_repo,
            "private": output["private"],
            "commit_message": output["commit_message"]
            or f"Add language annotations by {model_id} (episcribe)",
            "card": {
                "repo_id": self.push_repo,
                "source": source,
                "model": self.model,
                "modules": self.modules,
                "episodes": len(self.episodes),
                "total_episodes": len(self.dataset.episode_indices()),
            },
        }

    # -- rule inputs and params ------------------------------------------------------
    def upstream(self, module: str) -> list[str]:
        return [m for m in registry.MODULES[module].upstream if m in self.modules]

    def prompt_inputs(self, module: str) -> list[str]:
        return [str(p) for p in prompt_files(self.prompts_dir, module)]

    def all_prompt_inputs(self) -> list[str]:
        """Every prompt file of the enabled modules, sorted."""
        return sorted({path for module in self.modules for path in self.prompt_inputs(module)})

    def source_inputs(self, shard: Shard) -> list[str]:
        # The same for every module's job of the shard: computed once per shard.
        cached = self._sources_cache.get(shard)
        if cached is None:
            cached = [str(p) for p in self.dataset.source_files(shard.episodes)]
            self._sources_cache[shard] = cached
        return list(cached)

    def incomplete_runs(self, module: str, shard: Shard) -> dict[str, int]:
        """Episode -> its count of incomplete deliveries, for the shard's episodes that
        were ever staged with failed model calls (read, never written, at parse time)."""
        runs = self._incomplete.get(module)
        if runs is None:
            runs = self._incomplete[module] = incomplete_runs(self.paths.cache, module)
        return {str(e): runs[e] for e in shard.episodes if e in runs}

    def module_settings(self, module: str) -> dict:
        spec = registry.MODULES[module]
        settings = self.config[spec.section] if spec.settings else {}
        for other in (m for m in spec.avoids if m in self.modules):
            section = self.config[registry.MODULES[other].section]
            placement = {key: section[key] for key in registry.MODULES[other].placement}
            settings = {**settings, f"{other}_frames": placement}
        return settings

    def module_params(self, module: str, shard: Shard) -> dict:
        """The rule's params: exactly what may change this module's answers."""
        return {
            "module": module,
            # A new behaviour version re-runs the module's jobs (and its downstream modules'
            # through their inputs); its cache entries of other versions are not used.
            "version": registry.MODULES[module].version,
            "episodes": list(shard.episodes),
            "settings": self.module_settings(module),
            # A module that asks no model is not re-run when the model changes.
            "model": self.model if registry.asks_model(module) else {},
            # Only the jobs of modules that draw from the seeded RNG re-run when it changes.
            "seed": self.config["seed"] if registry.MODULES[module].seeded else None,
        }
