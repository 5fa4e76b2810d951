"""A stand-in for the Hugging Face Hub's HTTP API, its own process (tests and bench).

No machine here reaches the Hub, so tests point ``HF_ENDPOINT`` at this process and drive
the real ``huggingface_hub`` client over real HTTP. Reads are served by olah (a Hub
mirror from PyPI) in offline mode, which serves the git repositories under
``<root>/mirrors/datasets/<owner>/<name>`` through the Hub API; this process forwards
every read to it. olah has no write endpoints, so this process answers the few the
client's upload calls itself, the way the Hub does (Git LFS transfer, no Xet, so tests
set ``HF_HUB_DISABLE_XET=1``):

    POST /api/repos/create                                 create a repo (409 if it exists)
    POST /api/datasets/<repo>/preupload/<rev>              lfs or regular, and the remote oid
    POST /datasets/<repo>.git/info/lfs/objects/batch       upload actions for missing objects
    PUT  /lfs-objects/<sha256>                             store one object (checks its hash)
    POST /api/datasets/<repo>/commit/<rev>                 commit the files to the git repo
    POST /api/validate-yaml                                check a dataset card's header
    POST   /api/datasets/<repo>/tag/<rev>                  tag a revision (409 if it exists)
    DELETE /api/datasets/<repo>/tag/<tag>                  delete a tag (404 if none)
    GET    /api/datasets/<repo>/refs                       olah's, but 404 RepoNotFound for
                                                           a missing repo, as the Hub says

Tags are git tags of the mirror, so olah lists them (``list_repo_refs``) and resolves
them as revisions. ``publish`` tags the published commit with the dataset's
``codebase_version``, as LeRobot's datasets on the Hub are tagged.

Reads of a repo listed in ``<root>/gated`` are refused as the Hub refuses a gated repo,
and tags of a repo listed in ``<root>/tags_refused`` with 403.
When $STANDIN_HUB_TOKEN is set, writes need ``Authorization: Bearer`` it (401 otherwise,
as the Hub answers a bad token). Every request is logged to ``<root>/requests.jsonl``
(method, path, status, bytes received and sent), never its headers. ``--upload-rate``
reads object uploads at most that many bytes per second (a slow uplink), so a test can
interrupt a push half-way.

    STANDIN_HUB_TOKEN=T python tests/hub_standin.py --root DIR --port PORT [--upload-rate B/S]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}


def mirror_repo(root: Path, repo_id: str) -> Path:
    return root / "mirrors" / "datasets" / repo_id


def publish(root: Path, repo_id: str, source: Path) -> str:
    """Make ``source``'s files the ``main`` branch of dataset ``repo_id``; return the commit."""
    repo = mirror_repo(root, repo_id)
    if repo.exists():
        shutil.rmtree(repo)
    shutil.copytree(source, repo)
    for path in repo.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    _git(repo, "init", "-q", "-b", "main")
    commit = _commit_worktree(repo, f"Publish {repo_id}")
    info = repo / "meta" / "info.json"
    if info.is_file():
        _git(repo, "tag", json.loads(info.read_text())["codebase_version"], commit)
    return commit


def commit_files(root: Path, repo_id: str, source: Path, message: str) -> str:
    """Replace ``main``'s files of ``repo_id`` with ``source``'s (tags stay); the commit."""
    repo = mirror_repo(root, repo_id)
    for path in repo.iterdir():
        if path.name != ".git":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    shutil.copytree(source, repo, dirs_exist_ok=True)
    return _commit_worktree(repo, message)


def refs(root: Path, repo_id: str) -> dict[str, dict[str, str]]:
    """{"branches": {name: commit}, "tags": {name: commit}} of the repo, read from git."""
    out = _git(mirror_repo(root, repo_id), "for-each-ref", "--format=%(refname) %(objectname)")
    listed: dict[str, dict[str, str]] = {"branches": {}, "tags": {}}
    for line in out.splitlines():
        ref, commit = line.split()
        for prefix, group in (("refs/heads/", "branches"), ("refs/tags/", "tags")):
            if ref.startswith(prefix):
                listed[group][ref[len(prefix) :]] = commit
    return listed


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "standin", "GIT_AUTHOR_EMAIL": "standin@localhost"}
    env |= {"GIT_COMMITTER_NAME": "standin", "GIT_COMMITTER_EMAIL": "standin@localhost"}
    out = subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def _commit_worktree(repo: Path, message: str) -> str:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Hub:
    def __init__(self, root: Path, port: int, token: str | None, upload_rate: int):
        self.root = root
        self.port = port
        self.token = token
        self.upload_rate = upload_rate
        self.lfs = root / "lfs"
        self.lfs.mkdir(parents=True, exist_ok=True)
        (root / "mirrors" / "datasets").mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.log_lock = threading.Lock()
        self.olah_port = _free_port()
        self.olah = self._start_olah()

    def _start_olah(self) -> subprocess.Popen:
        cfg = self.root / "olah.toml"
        cfg.write_text(
            "[basic]\n"
            f'host = "127.0.0.1"\nport = {self.olah_port}\n'
            f'repos-path = "{self.root / "olah-cache"}"\n'
            f'mirrors-path = ["{self.root / "mirrors"}"]\n'
            # Links olah builds point back at this process, which forwards them.
            f'mirror-netloc = "127.0.0.1:{self.port}"\n'
            f'mirror-lfs-netloc = "127.0.0.1:{self.port}"\n'
            # A pushed commit must be visible to the next read at once.
            "metadata-cache-ttl = 0\n"
            "[accessibility]\noffline = true\n"
        )
        log = open(self.root / "olah.log", "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "olah.server", "-c", str(cfg)],
            cwd=self.root,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"olah exited at start; see {self.root / 'olah.log'}")
            try:
                socket.create_connection(("127.0.0.1", self.olah_port), timeout=1).close()
                return proc
            except OSError:
                time.sleep(0.1)
        proc.kill()
        raise SystemExit("olah did not start within 60 s")

    def record(self, entry: dict) -> None:
        with self.log_lock, open(self.root / "requests.jsonl", "a") as fh:
            fh.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: Hub

    def log_message(self, *args) -> None:  # requests.jsonl instead (no headers)
        pass

    # -- plumbing ------------------------------------------------------------------
    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _throttled_body(self) -> bytes:
        size = int(self.headers.get("Content-Length") or 0)
        if not self.hub.upload_rate:
            return self.rfile.read(size)
        chunks, left, step = [], size, 64 * 1024
        while left > 0:
            chunk = self.rfile.read(min(step, left))
            if not chunk:  # the client went away: a partial object is never stored
                break
            chunks.append(chunk)
            left -= len(chunk)
            time.sleep(len(chunk) / self.hub.upload_rate)
        return b"".join(chunks)

    def _send(self, status: int, payload=None, headers: dict | None = None) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: str, message: str) -> None:
        headers = {"X-Error-Message": message} | ({"X-Error-Code": code} if code else {})
        self._send(status, {"error": message}, headers)

    def _authorized(self) -> bool:
        if self.hub.token is None:
            return True
        if self.headers.get("Authorization") == f"Bearer {self.hub.token}":
            return True
        self._error(401, "", "Invalid credentials in Authorization header")
        return False

    def _log(self, status: int, received: int = 0, sent: int = 0) -> None:
        self.hub.record(
            {
                "t": time.time(),
                "method": self.command,
                "path": self.path,
                "status": status,
                "received": received,
                "sent": sent,
            }
        )

    def _repo_path(self, prefix: str, suffix: str) -> tuple[str, str] | None:
        """``/api/datasets/o/n/commit/main`` -> ("o/n", "main") for prefix/suffix given."""
        path = self.path.split("?")[0]
        if not path.startswith(prefix) or f"/{suffix}" not in path:
            return None
        repo, _, rev = path[len(prefix) :].partition(f"/{suffix}")
        return repo, rev.lstrip("/")

    # -- routes --------------------------------------------------------------------
    def do_GET(self) -> None:
        if self._refused_as_gated():
            return
        # list_repo_refs: olah lists the mirror's git refs, but answers a missing repo
        # with a bare 404 where the Hub says RepoNotFound (what the client turns into
        # RepositoryNotFoundError).
        found = self._repo_path("/api/datasets/", "refs")
        if found and not mirror_repo(self.hub.root, found[0]).exists():
            self._log(404)
            return self._error(404, "RepoNotFound", "Repository not found")
        self._forward(b"")

    def do_HEAD(self) -> None:
        if not self._refused_as_gated():
            self._forward(b"")

    def _refused_as_gated(self) -> bool:
        """Repos listed in <root>/gated answer reads as a gated repo does without access."""
        listed = self.hub.root / "gated"
        path = self.path.split("?")[0] + "/"
        for repo_id in listed.read_text().split() if listed.exists() else []:
            if f"/datasets/{repo_id}/" in path:
                self._log(403)
                message = f"Access to dataset {repo_id} is restricted: you are not authorized."
                self._error(403, "GatedRepo", message)
                return True
        return False

    def do_POST(self) -> None:
        body = self._body()
        path = self.path.split("?")[0]
        if path == "/api/repos/create":
            return self._create(body)
        if path == "/api/validate-yaml":
            return self._validate_yaml(body)
        if path.startswith("/datasets/") and path.endswith(".git/info/lfs/objects/batch"):
            return self._lfs_batch(body)
        for suffix, handler in (
            ("preupload", self._preupload),
            ("commit", self._commit),
            ("tag", self._create_tag),
        ):
            found = self._repo_path("/api/datasets/", suffix)
            if found:
                return handler(*found, body)
        self._forward(body)

    def do_DELETE(self) -> None:
        self._body()
        found = self._repo_path("/api/datasets/", "tag")
        if not found:
            self._log(404)
            return self._error(404, "", f"no route {self.path}")
        repo_id, tag = found
        repo = self._writable(repo_id)
        if repo is None:
            return
        tag = urllib.parse.unquote(tag)
        with self.hub.lock:
            if tag not in refs(self.hub.root, repo_id)["tags"]:
                self._log(404)
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {tag}")
            _git(repo, "tag", "-d", tag)
        self._log(200)
        self._send(200, {})

    def _create_tag(self, repo_id: str, rev: str, body: bytes) -> None:
        repo = self._writable(repo_id)
        if repo is None:
            return
        refused = self.hub.root / "tags_refused"  # a test's way to make tagging fail
        if refused.exists() and repo_id in refused.read_text().split():
            self._log(403, len(body))
            return self._error(403, "", "You are not allowed to create tags in this repo")
        tag, rev = json.loads(body)["tag"], urllib.parse.unquote(rev)
        with self.hub.lock:
            if tag in refs(self.hub.root, repo_id)["tags"]:
                self._log(409, len(body))
                return self._error(409, "", "Tag already exists")
            try:
                commit = _git(repo, "rev-parse", "--verify", f"{rev}^{{commit}}")
            except subprocess.CalledProcessError:
                self._log(404, len(body))
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            _git(repo, "tag", tag, commit)
        self._log(200, len(body))
        self._send(200, {})

    def do_PUT(self) -> None:
        path = self.path.split("?")[0]
        if not path.startswith("/lfs-objects/"):
            self._body()
            self._log(404)
            return self._error(404, "", f"no route {path}")
        oid = path.rsplit("/", 1)[1]
        data = self._throttled_body()
        if hashlib.sha256(data).hexdigest() != oid:
            self._log(400, len(data))
            return self._error(400, "", "object does not match its oid")
        tmp = self.hub.lfs / f".{oid}.tmp-{threading.get_ident()}"
        tmp.write_bytes(data)
        tmp.replace(self.hub.lfs / oid)
        self._log(200, len(data))
        self._send(200, {})

    def _create(self, body: bytes) -> None:
        if not self._authorized():
            return self._log(401)
        req = json.loads(body)
        repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
        repo = mirror_repo(self.hub.root, repo_id)
        url = f"http://127.0.0.1:{self.hub.port}/datasets/{repo_id}"
        with self.hub.lock:
            if repo.exists():
                self._log(409)
                # The Hub's 409 names the existing repo's url; the client reads it.
                message = "You already created this dataset repo"
                return self._send(409, {"error": message, "url": url}, {"X-Error-Message": message})
            repo.mkdir(parents=True)
            _git(repo, "init", "-q", "-b", "main")
            (repo / ".gitattributes").write_text("*.parquet filter=lfs diff=lfs merge=lfs -text\n")
            _commit_worktree(repo, "initial commit")
        self._log(200)
        self._send(200, {"url": url, "name": repo_id})

    def _validate_yaml(self, body: bytes) -> None:
        """The card's YAML header must parse to a mapping (the Hub checks more)."""
        import yaml

        content = json.loads(body)["content"]
        header = content.split("---")[1] if content.startswith("---") else ""
        try:
            ok = isinstance(yaml.safe_load(header) or {}, dict)
        except yaml.YAMLError:
            ok = False
        status = 200 if ok else 400
        self._log(status, len(body))
        errors = [] if ok else [{"message": "README.md metadata is not a YAML mapping"}]
        self._send(status, {"errors": errors, "warnings": []})

    def _writable(self, repo_id: str) -> Path | None:
        """The repo a write goes to, or None after answering 401 / 404 as the Hub does."""
        if not self._authorized():
            self._log(401)
            return None
        repo = mirror_repo(self.hub.root, repo_id)
        if not repo.exists():
            self._log(404)
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        return repo

    def _preupload(self, repo_id: str, rev: str, body: bytes) -> None:
        repo = self._writable(repo_id)
        if repo is None:
            return
        files = []
        for entry in json.loads(body)["files"]:
            sample = base64.b64decode(entry["sample"])
            lfs = b"\0" in sample or entry["size"] > 10 * 2**20
            current = repo / entry["path"]
            oid = None
            if current.is_file():
                data = current.read_bytes()
                header = b"blob %d\0" % len(data)
                oid = (
                    hashlib.sha256(data).hexdigest()
                    if lfs
                    else hashlib.sha1(header + data).hexdigest()
                )
            files.append(
                {
                    "path": entry["path"],
                    "uploadMode": "lfs" if lfs else "regular",
                    "shouldIgnore": False,
                    "oid": oid,
                }
            )
        self._log(200, len(body))
        self._send(200, {"files": files, "commitOid": _git(repo, "rev-parse", "HEAD")})

    def _lfs_batch(self, body: bytes) -> None:
        if not self._authorized():
            return self._log(401)
        objects = []
        for obj in json.loads(body)["objects"]:
            item = {"oid": obj["oid"], "size": obj["size"]}
            if not (self.hub.lfs / obj["oid"]).is_file():
                href = f"http://127.0.0.1:{self.hub.port}/lfs-objects/{obj['oid']}"
                item["actions"] = {"upload": {"href": href, "header": {}}}
            objects.append(item)
        self._log(200, len(body))
        self._send(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _commit(self, repo_id: str, rev: str, body: bytes) -> None:
        repo = self._writable(repo_id)
        if repo is None:
            return
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        summary = "commit"
        with self.hub.lock:
            for line in lines:
                key, value = line["key"], line["value"]
                if key == "header":
                    summary = value.get("summary") or summary
                    continue
                target = repo / value["path"]
                if key in ("deletedFile", "deletedFolder"):
                    if target.is_dir():
                        shutil.rmtree(target)
                    elif target.exists():
                        target.unlink()
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if key == "file":
                    target.write_bytes(base64.b64decode(value["content"]))
                elif key == "lfsFile":
                    stored = self.hub.lfs / value["oid"]
                    if not stored.is_file():
                        self._log(422)
                        return self._error(422, "", f"LFS object {value['oid']} was not uploaded")
                    # Plain git blobs: olah serves a mirror's blobs as the files' bytes.
                    shutil.copyfile(stored, target)
            oid = _commit_worktree(repo, summary)
        self._log(200, len(body))
        self._send(
            200,
            {
                "commitOid": oid,
                "commitUrl": f"http://127.0.0.1:{self.hub.port}/datasets/{repo_id}/commit/{oid}",
            },
        )

    def _forward(self, body: bytes) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.hub.olah_port, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(self.command, self.path, body=body or None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        self._log(resp.status, len(body), len(data))
        self.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in HOP_HEADERS:
                self.send_header(key, value)
        length = resp.getheader("Content-Length") if self.command == "HEAD" else len(data)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class Standin:
    """Start the stand-in as a process (tests, bench); ``stop()`` ends it and olah."""

    def __init__(self, root: Path, *, token: str | None = None, upload_rate: int = 0):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "STANDIN_HUB_TOKEN"}
        if token:
            env["STANDIN_HUB_TOKEN"] = token
        cmd = [sys.executable, __file__, "--root", str(self.root), "--port", str(self.port)]
        cmd += ["--upload-rate", str(upload_rate)]
        self.proc = subprocess.Popen(cmd, env=env, stderr=open(self.root / "standin.log", "ab"))
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"hub stand-in did not start: {self.root}") from None
                time.sleep(0.1)

    def publish(self, repo_id: str, source: Path, *, gated: bool = False) -> str:
        if gated:
            with open(self.root / "gated", "a") as fh:
                fh.write(repo_id + "\n")
        return publish(self.root, repo_id, source)

    def commit_files(self, repo_id: str, source: Path, message: str = "Update") -> str:
        return commit_files(self.root, repo_id, source, message)

    def refs(self, repo_id: str) -> dict[str, dict[str, str]]:
        return refs(self.root, repo_id)

    def requests(self) -> list[dict]:
        log = self.root / "requests.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line]

    def lfs_objects(self) -> set[str]:
        return {p.name for p in (self.root / "lfs").iterdir() if not p.name.startswith(".")}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upload-rate", type=int, default=0, help="bytes/s (0 = no limit)")
    args = parser.parse_args()
    # From the environment, like a real token: never on a command line.
    token = os.environ.get("STANDIN_HUB_TOKEN") or None
    hub = Hub(args.root.resolve(), args.port, token, args.upload_rate)
    Handler.hub = hub
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True

    def stop(*_):
        hub.olah.terminate()
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        hub.olah.terminate()
        hub.olah.wait(timeout=10)


if __name__ == "__main__":
    main()
