"""A small in-memory server speaking enough of the Hugging Face Hub HTTP API for end-to-end tests.

It lets huggingface_hub's REAL client code (``HfApi.create_repo``, ``HfApi.upload_folder`` with the
legacy LFS flow, i.e. ``HF_HUB_DISABLE_XET=1``) and the download path used by
``AutoModel.from_pretrained(repo_id, trust_remote_code=True)`` (``hf_hub_download``: HEAD + GET on
``/resolve/``) run against ``http://127.0.0.1:<port>`` with no internet. Endpoints and headers were read
from huggingface_hub 2.4 (``hf_api.create_repo``, ``_commit_api._fetch_upload_modes`` / ``_send_commit``,
``lfs.post_lfs_batch_info`` / ``lfs_upload``, ``file_download.get_hf_file_metadata``,
``utils._http.hf_raise_for_status``).

Implemented (model, dataset and space repos; everything kept in memory):

- ``POST /api/repos/create`` (409 when it exists)
- ``POST /api/validate-yaml`` (README front matter: YAML mapping, types of the main keys)
- ``GET /api/{type}s/{repo}``, ``GET /api/{type}s/{repo}/revision/{rev}`` (repo info with siblings)
- ``GET /api/{type}s/{repo}/tree/{rev}[/{path}]``, ``POST /api/{type}s/{repo}/paths-info/{rev}``
- ``POST /api/{type}s/{repo}/preupload/{rev}`` (weights and binary files -> "lfs", text -> "regular")
- ``POST /{prefix}{repo}.git/info/lfs/objects/batch`` -> basic transfer: ``PUT /lfs/upload/{oid}`` and
  ``POST /lfs/verify/{oid}`` (content checked against its sha256)
- ``POST /api/{type}s/{repo}/commit/{rev}`` (ndjson: header, file, lfsFile, deletedFile, deletedFolder)
- ``HEAD``/``GET /{prefix}{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag``,
  ``X-Linked-Etag``/``X-Linked-Size`` (LFS files), ``Content-Length`` and ``Range`` support.

Errors carry the ``X-Error-Code`` header the client maps to exceptions (``RepoNotFound``,
``RevisionNotFound``, ``EntryNotFound``). When ``token`` is set, writes (and reads of private repos) need
``Authorization: Bearer <token>``. Every request is recorded in ``server.requests``; requests to routes
this server does not implement, and requests that crashed it (answered 500), are also recorded in
``server.unhandled`` (tests assert it stays empty).
This module lives in tests/ only: it is not a Hub implementation (no git, no permissions model, no xet).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["LocalHub", "RepoFile", "use_local_hub"]

_LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5", ".onnx", ".npy", ".npz")
_LFS_MIN_SIZE = 10 * 1024 * 1024
_TYPE_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def git_blob_oid(content: bytes) -> str:
    """git's blob id: sha1 of ``b"blob <len>\\0" + content`` (what the Hub reports for regular files)."""
    return hashlib.sha1(b"blob %d\x00" % len(content) + content).hexdigest()


@dataclass
class RepoFile:
    """One file of one commit.

    Attributes:
        content: the file bytes.
        lfs: whether the file was committed through LFS (its ``ETag`` is then the sha256 of the content).
    """

    content: bytes
    lfs: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def oid(self) -> str:
        """The oid the Hub reports in trees and preupload answers (sha256 for LFS, git sha1 otherwise)."""
        return self.sha256 if self.lfs else git_blob_oid(self.content)

    def tree_entry(self, path: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "path": path, "size": len(self.content)}
        if self.lfs:
            size = len(self.content)
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {size}\n"
            entry["oid"] = git_blob_oid(pointer.encode())
            entry["lfs"] = {"oid": self.sha256, "size": len(self.content), "pointerSize": len(pointer)}
        else:
            entry["oid"] = self.oid
        return entry


@dataclass
class Repo:
    """An in-memory repository: branches point at commits, a commit is a full {path: RepoFile} snapshot."""

    repo_id: str
    repo_type: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, RepoFile]] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))

    def resolve(self, revision: str) -> str | None:
        """Branch name or full commit sha -> commit sha, or None."""
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.commits:
            return revision
        return None


class _HubError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        commit: str | None = None,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit
        self.extra = extra or {}


class LocalHub:
    """The server: start it, point ``HF_ENDPOINT`` at ``hub.url``, stop it.

    Args:
        token: when set, the bearer token required for writes and for reading private repos.
        host: interface to bind (loopback by default).
        port: TCP port; 0 picks a free one.

    Example:
        >>> with LocalHub(token="hf_test") as hub:  # doctest: +SKIP
        ...     HfApi(endpoint=hub.url, token="hf_test").create_repo("user/model")
    """

    def __init__(self, token: str | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[tuple[str, str]] = []
        self._lock = threading.RLock()
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalHub:
        """Serves requests in a daemon thread; returns self."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving and closes the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers for tests
    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, RepoFile]:
        """The files of ``repo_id`` at ``revision`` (KeyError if unknown)."""
        repo = self.repos[f"{repo_type}:{repo_id}"]
        sha = repo.resolve(revision)
        if sha is None:
            raise KeyError(f"{repo_id}: no revision {revision!r}")
        return dict(repo.commits[sha])

    # ------------------------------------------------------------------ internals
    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get(f"{repo_type}:{repo_id}")
        if repo is None:
            raise _HubError(404, f"Repository Not Found: {repo_type} {repo_id}", "RepoNotFound")
        return repo

    def _snapshot(self, repo: Repo, revision: str) -> tuple[str, dict[str, RepoFile]]:
        sha = repo.resolve(revision)
        if sha is None:
            raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha, repo.commits[sha]

    def _new_commit(self, repo: Repo, branch: str, files: dict[str, RepoFile], message: str) -> str:
        parent = repo.branches.get(branch, "")
        digest = hashlib.sha1()
        digest.update(f"{parent}\n{message}\n{time.time_ns()}\n".encode())
        for path in sorted(files):
            digest.update(f"{path}:{files[path].oid}\n".encode())
        sha = digest.hexdigest()
        repo.commits[sha] = files
        repo.messages[sha] = message
        repo.branches[branch] = sha
        return sha


_API_REPO = re.compile(
    r"^/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+|[^/]+)"
    r"(?:/(?P<action>revision|tree|paths-info|preupload|commit)(?:/(?P<rev>[^/]+))?(?:/(?P<path>.*))?)?$"
)
_LFS_BATCH = re.compile(r"^/(?P<prefix>datasets/|spaces/)?(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch$")
_RESOLVE = re.compile(
    r"^/(?P<prefix>datasets/|spaces/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"
)
_LFS_OBJECT = re.compile(r"^/lfs/(?P<action>upload|verify)/(?P<oid>[0-9a-f]{64})$")


class HubHandler(BaseHTTPRequestHandler):
    """The local Hub's HTTP handler; ``hub`` is set per server by :func:`_make_handler`."""

    hub: "LocalHub"

    protocol_version = "HTTP/1.1"
    server_version = "pathfm-local-hub/1"

    # -------------------------------------------------------------- plumbing
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # recorded in hub.requests instead of printed

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _authorised(self) -> bool:
        if self.hub.token is None:
            return True
        return self.headers.get("Authorization", "") == f"Bearer {self.hub.token}"

    def _require_auth(self) -> None:
        if not self._authorised():
            raise _HubError(401, "Invalid credentials in Authorization header")

    def _check_read(self, repo: Repo) -> None:
        if repo.private and not self._authorised():
            # The Hub answers 401 + RepoNotFound for private repos without access.
            raise _HubError(401, "Repository Not Found", "RepoNotFound")

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        path, query = unquote(split.path), parse_qs(split.query)
        with self.hub._lock:
            self.hub.requests.append((self.command, split.path))
        body = self._body() if self.command in ("POST", "PUT") else b""
        try:
            handled = self._route(path, split.path, query, body)
        except _HubError as err:
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            if err.commit:
                headers["X-Repo-Commit"] = err.commit
            self._json(err.status, {"error": err.message, **err.extra}, headers)
            return
        except Exception as err:  # a bug here or a request shape not foreseen: report it, do not hang
            with self.hub._lock:
                self.hub.unhandled.append((self.command, f"{split.path} -> 500 {type(err).__name__}: {err}"))
            self._json(500, {"error": f"local hub: {type(err).__name__}: {err}"})
            return
        if not handled:
            with self.hub._lock:
                self.hub.unhandled.append((self.command, split.path))
            self._json(404, {"error": f"local hub: no route for {self.command} {split.path}"})

    do_GET = do_HEAD = do_POST = do_PUT = _dispatch

    # -------------------------------------------------------------- routing
    def _route(self, path: str, raw_path: str, query: dict[str, list[str]], body: bytes) -> bool:
        method = self.command
        if method == "POST" and path == "/api/repos/create":
            self._create_repo(json.loads(body or b"{}"))
            return True
        if method == "POST" and path == "/api/validate-yaml":
            self._validate_yaml(json.loads(body or b"{}"))
            return True
        if method == "GET" and path == "/api/agent-harnesses":
            # huggingface_hub reads this registry once per process (for its user-agent), from whatever
            # endpoint the first online request goes to: here, an empty one
            self._json(200, {"standardEnvVars": [], "harnesses": {}})
            return True
        match = _LFS_OBJECT.match(path)
        if match:
            if method == "PUT" and match["action"] == "upload":
                self._lfs_upload(match["oid"], body)
                return True
            if method == "POST" and match["action"] == "verify":
                self._lfs_verify(match["oid"], json.loads(body or b"{}"))
                return True
            return False
        match = _LFS_BATCH.match(path)
        if match and method == "POST":
            repo_type = {"datasets/": "dataset", "spaces/": "space"}.get(match["prefix"] or "", "model")
            self._lfs_batch(repo_type, match["repo"], json.loads(body or b"{}"))
            return True
        match = _API_REPO.match(raw_path)
        if match:
            repo_type = match["type"][:-1]
            repo_id = unquote(match["repo"])
            rev = unquote(match["rev"]) if match["rev"] else None
            sub = unquote(match["path"]) if match["path"] else ""
            action = match["action"]
            if method == "GET" and action is None:
                self._repo_info(repo_type, repo_id, "main")
                return True
            if method == "GET" and action == "revision" and rev:
                self._repo_info(repo_type, repo_id, rev)
                return True
            if method == "GET" and action == "tree" and rev:
                self._tree(repo_type, repo_id, rev, sub, query)
                return True
            if method == "POST" and action == "paths-info" and rev:
                self._paths_info(repo_type, repo_id, rev, body)
                return True
            if method == "POST" and action == "preupload" and rev:
                self._preupload(repo_type, repo_id, rev, json.loads(body or b"{}"))
                return True
            if method == "POST" and action == "commit" and rev:
                self._commit(repo_type, repo_id, rev, body)
                return True
            return False
        match = _RESOLVE.match(raw_path)
        if match and method in ("GET", "HEAD"):
            repo_type = {"datasets/": "dataset", "spaces/": "space"}.get(match["prefix"] or "", "model")
            repo_id, rev, file = unquote(match["repo"]), unquote(match["rev"]), unquote(match["path"])
            self._resolve(repo_type, repo_id, rev, file)
            return True
        return False

    # -------------------------------------------------------------- endpoints
    def _create_repo(self, payload: dict[str, Any]) -> None:
        self._require_auth()
        name, organization = payload.get("name"), payload.get("organization")
        if not name:
            raise _HubError(400, "create repo: 'name' is required")
        repo_type = payload.get("type") or "model"
        repo_id = f"{organization}/{name}" if organization else f"local-user/{name}"
        private = payload.get("private") or payload.get("visibility") == "private"
        url = f"{self.hub.url}/{_TYPE_PREFIX[repo_type]}{repo_id}"
        with self.hub._lock:
            key = f"{repo_type}:{repo_id}"
            if key in self.hub.repos:
                # The Hub's 409 body carries the url, which create_repo(exist_ok=True) returns.
                raise _HubError(409, "You already created this model repo", extra={"url": url})
            repo = Repo(repo_id=repo_id, repo_type=repo_type, private=bool(private))
            gitattributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
            self.hub._new_commit(repo, "main", {".gitattributes": RepoFile(gitattributes)}, "initial commit")
            self.hub.repos[key] = repo
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, payload: dict[str, Any]) -> None:
        """Checks a README's front matter as the Hub does before a commit (types of the main keys)."""
        import yaml

        content = payload.get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, flags=re.DOTALL)
        if match is None:
            self._json(200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]})
            return
        try:
            metadata = yaml.safe_load(match[1]) or {}
        except yaml.YAMLError as err:
            self._json(400, {"errors": [{"message": f"invalid YAML: {err}"}], "warnings": []})
            return
        errors = []
        if not isinstance(metadata, dict):
            errors.append("metadata must be a YAML mapping")
        else:
            for key in ("license", "library_name", "pipeline_tag", "model_name"):
                if key in metadata and not isinstance(metadata[key], str):
                    errors.append(f'"{key}" must be a string')
            for key in ("tags", "datasets", "language", "base_model"):
                value = metadata.get(key)
                strings = isinstance(value, list) and all(isinstance(v, str) for v in value)
                if value is not None and not (isinstance(value, str) or strings):
                    errors.append(f'"{key}" must be a string or a list of strings')
        self._json(400 if errors else 200, {"errors": [{"message": e} for e in errors], "warnings": []})

    def _repo_info(self, repo_type: str, repo_id: str, revision: str) -> None:
        with self.hub._lock:
            repo = self.hub._repo(repo_type, repo_id)
            self._check_read(repo)
            sha, files = self.hub._snapshot(repo, revision)
            payload = {
                "id": repo_id,
                "modelId": repo_id,
                "author": repo_id.split("/")[0],
                "sha": sha,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "createdAt": repo.created_at,
                "lastModified": repo.created_at,
                "tags": [],
                "downloads": 0,
                "likes": 0,
                "siblings": [{"rfilename": p, "size": len(f.content)} for p, f in sorted(files.items())],
            }
        self._json(200, payload)

    def _tree(self, repo_type: str, repo_id: str, revision: str, folder: str, query: dict) -> None:
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        folder = folder.strip("/")
        with self.hub._lock:
            repo = self.hub._repo(repo_type, repo_id)
            self._check_read(repo)
            _, files = self.hub._snapshot(repo, revision)
            entries: list[dict[str, Any]] = []
            seen_dirs: set[str] = set()
            prefix = f"{folder}/" if folder else ""
            for path, repo_file in sorted(files.items()):
                if not path.startswith(prefix):
                    continue
                rest = path[len(prefix):]
                parts = rest.split("/")
                for depth in range(1, len(parts)):
                    directory = prefix + "/".join(parts[:depth])
                    if directory not in seen_dirs and (recursive or depth == 1):
                        seen_dirs.add(directory)
                        entries.append(
                            {"type": "directory", "path": directory, "oid": "0" * 40, "size": 0}
                        )
                if recursive or len(parts) == 1:
                    entries.append(repo_file.tree_entry(path))
            if folder and not entries:
                raise _HubError(404, f"{folder} does not exist", "EntryNotFound")
        self._json(200, entries)

    def _paths_info(self, repo_type: str, repo_id: str, revision: str, body: bytes) -> None:
        content_type = self.headers.get("Content-Type", "")
        if "json" in content_type:
            paths = json.loads(body or b"{}").get("paths", [])
        else:
            paths = parse_qs(body.decode()).get("paths", [])
        with self.hub._lock:
            repo = self.hub._repo(repo_type, repo_id)
            self._check_read(repo)
            _, files = self.hub._snapshot(repo, revision)
            entries = [files[p].tree_entry(p) for p in paths if p in files]
        self._json(200, entries)

    def _preupload(self, repo_type: str, repo_id: str, revision: str, payload: dict[str, Any]) -> None:
        self._require_auth()
        with self.hub._lock:
            repo = self.hub._repo(repo_type, repo_id)
            sha = repo.resolve(revision)
            existing = repo.commits[sha] if sha else {}
        answers = []
        for item in payload.get("files", []):
            path, size = item["path"], int(item["size"])
            sample = base64.b64decode(item.get("sample", ""))
            lfs = path.endswith(_LFS_SUFFIXES) or size >= _LFS_MIN_SIZE or b"\x00" in sample
            answer: dict[str, Any] = {
                "path": path,
                "uploadMode": "lfs" if lfs else "regular",
                "shouldIgnore": False,
            }
            if path in existing and existing[path].lfs == lfs:
                answer["oid"] = existing[path].oid
            answers.append(answer)
        self._json(200, {"files": answers, "commitOid": sha})

    def _lfs_batch(self, repo_type: str, repo_id: str, payload: dict[str, Any]) -> None:
        self._require_auth()
        with self.hub._lock:
            self.hub._repo(repo_type, repo_id)
        if payload.get("operation") != "upload":
            raise _HubError(400, "local hub: only the LFS 'upload' operation is implemented")
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            with self.hub._lock:
                present = oid in self.hub.lfs_objects
            if not present:
                entry["actions"] = {
                    "upload": {"href": f"{self.hub.url}/lfs/upload/{oid}", "header": {}},
                    "verify": {"href": f"{self.hub.url}/lfs/verify/{oid}", "header": {}},
                }
            objects.append(entry)
        self._send(
            200,
            json.dumps({"transfer": "basic", "objects": objects}).encode(),
            content_type="application/vnd.git-lfs+json",
        )

    def _lfs_upload(self, oid: str, body: bytes) -> None:
        if hashlib.sha256(body).hexdigest() != oid:
            raise _HubError(400, f"LFS upload: content does not match sha256 {oid}")
        with self.hub._lock:
            self.hub.lfs_objects[oid] = body
        self._send(200, b"", {"ETag": f'"{oid}"'})

    def _lfs_verify(self, oid: str, payload: dict[str, Any]) -> None:
        self._require_auth()
        with self.hub._lock:
            content = self.hub.lfs_objects.get(oid)
        if content is None or len(content) != int(payload.get("size", -1)) or payload.get("oid") != oid:
            raise _HubError(404, f"LFS verify: object {oid} missing or of the wrong size")
        self._json(200, {"success": True})

    def _commit(self, repo_type: str, repo_id: str, revision: str, body: bytes) -> None:
        self._require_auth()
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HubError(400, "commit: the first ndjson line must be the header")
        header = lines[0]["value"]
        with self.hub._lock:
            repo = self.hub._repo(repo_type, repo_id)
            parent_sha, parent_files = self.hub._snapshot(repo, revision)
            if revision not in repo.branches:
                raise _HubError(400, f"commit: revision {revision!r} is not a branch")
            if header.get("parentCommit") and header["parentCommit"] != parent_sha:
                raise _HubError(412, "commit: parentCommit is not the head of the branch")
            files = dict(parent_files)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise _HubError(400, f"commit: unsupported encoding {value.get('encoding')!r}")
                    files[value["path"]] = RepoFile(base64.b64decode(value["content"]))
                elif key == "lfsFile":
                    content = self.hub.lfs_objects.get(value["oid"])
                    if content is None:
                        raise _HubError(422, f"commit: LFS object {value['oid']} was never uploaded")
                    files[value["path"]] = RepoFile(content, lfs=True)
                elif key == "deletedFile":
                    if value["path"] not in files:
                        raise _HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                    del files[value["path"]]
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: f for p, f in files.items() if not p.startswith(prefix)}
                else:
                    raise _HubError(400, f"commit: operation {key!r} is not implemented by the local hub")
            sha = self.hub._new_commit(repo, revision, files, header.get("summary", ""))
        url = f"{self.hub.url}/{_TYPE_PREFIX[repo_type]}{repo_id}/commit/{sha}"
        self._json(200, {"commitUrl": url, "commitOid": sha, "success": True, "pullRequestUrl": None})

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        with self.hub._lock:
            repo = self.hub._repo(repo_type, repo_id)
            self._check_read(repo)
            sha, files = self.hub._snapshot(repo, revision)
            repo_file = files.get(path)
        if repo_file is None:
            raise _HubError(404, f"Entry not found: {path}", "EntryNotFound", commit=sha)
        content = repo_file.content
        headers = {"X-Repo-Commit": sha, "ETag": f'"{repo_file.oid}"', "Accept-Ranges": "bytes"}
        if repo_file.lfs:
            headers["X-Linked-Etag"] = f'"{repo_file.sha256}"'
            headers["X-Linked-Size"] = str(len(content))
        status = 200
        range_header = self.headers.get("Range")
        if range_header and self.command == "GET":
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header.strip())
            if match is None:
                raise _HubError(416, f"unsupported Range {range_header!r}")
            start = int(match[1])
            end = int(match[2]) if match[2] else len(content) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            content, status = content[start : end + 1], 206
        self._send(status, content, headers, content_type="application/octet-stream")


def _make_handler(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (HubHandler,), {"hub": hub})


@contextmanager
def use_local_hub(monkeypatch: Any, hub: LocalHub, hf_home: Path, token: str | None = None) -> Iterator[None]:
    """Points huggingface_hub and transformers at ``hub`` inside a ``with`` block of one test.

    huggingface_hub reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HUB_DISABLE_XET`` and ``HF_HOME`` once,
    into ``huggingface_hub.constants``, when it is first imported (tests/conftest.py has already set
    ``HF_HUB_OFFLINE=1``), so the environment variables AND the constants are patched; transformers copies
    its remote-code folder (``HF_MODULES_CACHE``) at import too. The patches are undone by ``monkeypatch``;
    the ``transformers_modules.*`` modules imported from the temporary folder are dropped on exit.

    Args:
        monkeypatch: the test's ``pytest.MonkeyPatch``.
        hub: a started `LocalHub`.
        hf_home: an empty temporary folder used as ``HF_HOME`` (download cache, token file, remote code).
        token: if given, exported as ``HF_TOKEN``; otherwise ``HF_TOKEN`` is removed from the environment.
    """
    import sys

    from huggingface_hub import constants
    from transformers import dynamic_module_utils

    hf_home = Path(hf_home)
    hub_cache = hf_home / "hub"
    modules_cache = hf_home / "modules"
    env = {
        "HF_ENDPOINT": hub.url,
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hub_cache),
        "HF_MODULES_CACHE": str(modules_cache),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    if token is not None:
        monkeypatch.setenv("HF_TOKEN", token)
    patched = {
        "ENDPOINT": hub.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": hub.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hub_cache),
        "HUGGINGFACE_HUB_CACHE": str(hub_cache),
        "HF_TOKEN_PATH": str(hf_home / "token"),
        "HF_STORED_TOKENS_PATH": str(hf_home / "stored_tokens"),
    }
    for name, value in patched.items():
        monkeypatch.setattr(constants, name, value)
    # Remote code: a fresh modules folder, importable ahead of any folder an earlier test put on sys.path,
    # and no stale `transformers_modules` package object pointing at that other folder.
    previous_modules_cache = dynamic_module_utils.HF_MODULES_CACHE
    monkeypatch.setattr(dynamic_module_utils, "HF_MODULES_CACHE", str(modules_cache))
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != previous_modules_cache])

    def remote_code_modules() -> list[str]:
        return [m for m in sys.modules if m.split(".")[0] == "transformers_modules"]

    for name in remote_code_modules():
        monkeypatch.delitem(sys.modules, name)
    try:
        yield
    finally:
        for name in remote_code_modules():
            del sys.modules[name]
