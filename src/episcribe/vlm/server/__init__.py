"""Start, reuse and stop the model server: a resource of the run, outside the Snakemake DAG.

Why outside the DAG: if the server were a file that annotate jobs take as input,
re-creating it would make Snakemake re-run every consumer job ("input updated by another
job"), ``temp()``/``service()`` variants make that worse, and ``ancient()`` silently
defers real re-runs. So jobs call :func:`ensure`, which returns the base URLs of a healthy
server (starting it at most once per run), and the Snakefile's ``onsuccess``/``onerror``
hooks call :func:`stop`.

This package alone owns the server's lifetime. Nothing else starts or kills it:

- ``ensure()`` takes ``flock`` on ``run_dir/server.lock``, registers the caller as a
  client, and reuses ``server.json`` when its supervisor is alive (pid *and* start time,
  against pid reuse) and every replica answers ``/health``. Otherwise it spawns a
  supervisor in its own session (``python -m episcribe.vlm.server supervise``), so the
  server outlives the job that happened to start it, and waits until it is up.
- The supervisor starts ``parallel_servers`` replicas (``PR_SET_PDEATHSIG``: a killed
  supervisor takes them along), polls ``/health``, writes ``server.json`` atomically, and
  then stops the replicas and exits when the owner (``EPISCRIBE_OWNER_PID``, the
  snakemake process) dies, when no live client has been registered for
  ``idle_timeout_s``, on SIGTERM/SIGINT, or when a replica dies. After ``kill -9`` of
  snakemake no hook runs; the owner watchdog is what stops a GPU server then.
- ``stop()`` signals the supervisor's process group (start-time verified), waits, and
  kills what is left after a grace period.

Files in ``run_dir`` (keep it on a local filesystem: ``flock`` is unreliable on some
network ones): ``server.lock``, ``supervisor.json`` (written at spawn, so ``stop()`` works
during start-up), ``server.json`` (written when healthy), ``failed.json`` (why a start
failed), ``supervisor.log``, ``replica_{i}.log``, ``clients/<pid>``.

On a cluster (``vlm.server_launcher: slurm``) the supervisor is not a local process but a
SLURM job: ``ensure()`` submits it with ``sbatch --parsable ... --wrap "python -m
episcribe.vlm.server supervise --cross-node ..."`` (plus ``vlm.slurm_server_args``, e.g. a GPU
partition), records the job id in ``supervisor.json`` and waits, without a deadline while the
job is PENDING, for ``server.json``. The supervisor binds its replicas on 0.0.0.0 and
publishes ``http://<its node's hostname>:<port>/v1`` URLs and its job id there, so jobs on any
node reuse it; ``stop()`` ``scancel``s the job. ``run_dir`` must then be on the filesystem
shared by the nodes (the workflow's ``.episcribe/server`` is). A pid on another node cannot
be watched, so liveness is by heartbeat files whose content keeps changing, judged by the
watcher's own clock (nodes' clocks may disagree and NFS caches mtimes):

- the owner (the main snakemake process) calls :func:`start_owner_heartbeat`, a daemon
  thread that rewrites ``owner.heartbeat`` ("<host> <pid> <time>") every
  ``EPISCRIBE_HEARTBEAT_S`` (5 s). The supervisor exits when the heartbeat of its owner pid
  has not changed for ``EPISCRIBE_HEARTBEAT_STALE_S`` (90 s): a SIGKILLed snakemake runs no
  hook, its heartbeat stops, the supervisor exits and the SLURM job ends. If no heartbeat
  of the owner ever appears, only the idle timeout applies (logged).
- every job that calls ``ensure()`` keeps ``clients/<host>-<pid>`` changing from a daemon
  thread while it lives; the idle timeout counts from the last client whose file changed.

CLI, for the Snakefile hooks and shells::

    python -m episcribe.vlm.server ensure --run-dir D --settings-json '{"backend": "fake"}'
    python -m episcribe.vlm.server stop --run-dir D

Modules: ``lifecycle`` (ensure, stop), ``launchers`` (one ``Launcher`` interface; a local
process or a SLURM job), ``supervisor`` (replicas and the watch), ``owner`` (process
identity, heartbeats), ``probe`` (HTTP checks, records), ``__main__`` (the CLI).
"""

from episcribe.vlm.server.launchers import check_local_start, slurm_state
from episcribe.vlm.server.lifecycle import ensure, stop
from episcribe.vlm.server.owner import (
    HEARTBEAT_ENV,
    OWNER_ENV,
    OWNER_HEARTBEAT,
    STALE_ENV,
    alive,
    exit_when_owner_dies,
    set_owner,
    start_owner_heartbeat,
)
from episcribe.vlm.server.probe import answers, check_serves, served_models
from episcribe.vlm.server.supervisor import model_args, serve_command

__all__ = [
    "HEARTBEAT_ENV",
    "OWNER_ENV",
    "OWNER_HEARTBEAT",
    "STALE_ENV",
    "alive",
    "answers",
    "check_local_start",
    "check_serves",
    "ensure",
    "exit_when_owner_dies",
    "model_args",
    "serve_command",
    "set_owner",
    "served_models",
    "slurm_state",
    "start_owner_heartbeat",
    "stop",
]
