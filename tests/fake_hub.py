"""A loopback fake of the Hugging Face Hub HTTP API (stdlib only) for tests that use the real `huggingface_hub`
client, transformers' `push_to_hub`/`from_pretrained` and pipelines over HTTP on 127.0.0.1.

It serves the routes huggingface_hub 2.4 and transformers 5.24 call, for model and dataset repos: create repo,
branches, model info, tree listings, preupload, LFS batch + PUT, NDJSON commits (added, LFS and deleted files; a
`parentCommit` that is no longer the branch head is refused with 412, as the Hub does), model-card YAML validation,
and resolve with the Hub's ETag / X-Linked-Etag (sha256 of LFS files) / X-Linked-Size / X-Repo-Commit headers. Repos
keep every commit, so downloads can be pinned to a revision. `commit` seeds a repo directly and `tamper` makes the
server send other bytes than the file's metadata announces, as a broken transfer or CDN would.

huggingface_hub reads `HF_ENDPOINT` when it is imported, so clients run in a fresh process: `client_env` gives the
environment (endpoint, dummy token, no Xet, caches in a tmp dir) and `run_client` runs a script with it. Never set
`HF_HUB_OFFLINE` for these clients: it blocks loopback requests too.
"""

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import parse_qs, unquote, urlsplit


USER = "tester"  # the namespace of repo ids created without one
# Files the fake stores through the LFS path, like the Hub's default .gitattributes does for weights.
LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".pt2", ".ckpt", ".npz")
LFS_THRESHOLD = 1_000_000


class FakeHub:
    """In-memory Hub, serving while used as a context manager; `url` is its endpoint."""

    def __init__(self):
        self.repos: dict[str, dict] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.tampered: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- helpers for tests -----------------------------------------------------------------------------------

    def commit(self, repo_id: str, files: dict[str, bytes]) -> str:
        """Commits files to main directly (creating the repo if needed); returns the commit sha."""
        with self._lock:
            if repo_id not in self.repos:
                self._create(repo_id)
            blobs = {path: _Blob(data, _is_lfs(path, len(data))) for path, data in files.items()}
            return self._commit(repo_id, "main", blobs)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        return {path: blob.data for path, blob in self._snapshot(repo_id, revision).items()}

    def history(self, repo_id: str) -> list[str]:
        """Commit shas of the main branch, oldest first."""
        return list(self.repos[repo_id]["history"])

    def tamper(self, repo_id: str, path: str, data: bytes) -> None:
        """Serve `data` for this file while its metadata (size, sha256) still describes the committed file."""
        self.tampered[(repo_id, path)] = data

    # -- storage ---------------------------------------------------------------------------------------------

    def _create(self, repo_id: str) -> None:
        self.repos[repo_id] = {"branches": {}, "snapshots": {}, "history": []}
        attributes = _Blob(b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n", lfs=False)
        self._commit(repo_id, "main", {".gitattributes": attributes})

    def _commit(self, repo_id: str, branch: str, added: dict, deleted=()) -> str:
        repo = self.repos[repo_id]
        parent = repo["branches"].get(branch)
        snapshot = dict(repo["snapshots"][parent]) if parent else {}
        for path in deleted:
            snapshot.pop(path, None)
        snapshot.update(added)
        sha = uuid.uuid4().hex + uuid.uuid4().hex[:8]
        repo["snapshots"][sha] = snapshot
        repo["branches"][branch] = sha
        if branch == "main":
            repo["history"].append(sha)
        return sha

    def _commit_sha(self, repo_id: str, revision: str) -> str | None:
        repo = self.repos[repo_id]
        revision = unquote(revision)
        if revision in repo["branches"]:
            return repo["branches"][revision]
        return revision if revision in repo["snapshots"] else None

    def _snapshot(self, repo_id: str, revision: str) -> dict:
        return self.repos[repo_id]["snapshots"][self._commit_sha(repo_id, revision)]


def _is_lfs(path: str, size: int) -> bool:
    return path.endswith(LFS_SUFFIXES) or size > LFS_THRESHOLD


class _Blob:
    def __init__(self, data: bytes, lfs: bool):
        self.data = data
        self.lfs = lfs
        self.sha256 = hashlib.sha256(data).hexdigest()
        # A git blob id, which is what the Hub uses as the ETag of non-LFS files.
        self.git_oid = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def entry(self, path: str) -> dict:
        entry = {"type": "file", "path": path, "size": len(self.data), "oid": self.git_oid}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": 134}
        return entry


class _HttpError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


_REPO = r"(?P<repo>[^/]+/[^/]+)"
_REV = r"(?P<rev>[^/]+)"
_KIND = r"(?:models|datasets)"  # one namespace for model and dataset repos (the tests never reuse a name)


def _handler_for(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the client expects

        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):
            self._dispatch("GET")

        def do_HEAD(self):
            self._dispatch("HEAD")

        def do_POST(self):
            self._dispatch("POST")

        def do_PUT(self):
            self._dispatch("PUT")

        # -- plumbing --------------------------------------------------------------------------------------

        def _dispatch(self, method: str) -> None:
            url = urlsplit(self.path)
            self.query = parse_qs(url.query)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                for pattern, route_method, handler in ROUTES:
                    match = re.fullmatch(pattern, url.path)
                    if match and route_method == ("GET" if method == "HEAD" else method):
                        with hub._lock:
                            return handler(self, method, body, **match.groupdict())
                raise _HttpError(404, "NotFound", f"fake hub has no route for {method} {url.path}")
            except _HttpError as error:
                self._send(error.status, {"error": error.message}, head=method == "HEAD",
                           headers={"X-Error-Code": error.code, "X-Error-Message": error.message})

        def _send(self, status: int, payload, headers=None, head=False, ctype="application/json") -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if not head:  # a HEAD response with a body corrupts the keep-alive stream
                self.wfile.write(data)

        def _repo(self, repo: str) -> dict:
            if repo not in hub.repos:
                raise _HttpError(404, "RepoNotFound", f"Repository {repo} not found")
            return hub.repos[repo]

        def _sha(self, repo: str, rev: str) -> str:
            self._repo(repo)
            sha = hub._commit_sha(repo, rev)
            if sha is None:
                raise _HttpError(404, "RevisionNotFound", f"Invalid rev id: {unquote(rev)}")
            return sha

        # -- account and repos -----------------------------------------------------------------------------

        def validate_yaml(self, method, body):
            self._send(200, {"errors": [], "warnings": []})

        def create_repo(self, method, body):
            request = json.loads(body)
            repo = f"{request.get('organization') or USER}/{request['name']}"
            exists = repo in hub.repos
            if not exists:
                hub._create(repo)
            # The Hub answers 409 with the repo URL, which `create_repo(exist_ok=True)` reads.
            payload = {"url": f"{hub.url}/{repo}", "name": repo, "id": repo}
            if exists:
                payload["error"] = "You already created this model repo"
            self._send(409 if exists else 200, payload, headers={"X-Error-Code": "RepoExists"} if exists else None)

        def create_branch(self, method, body, repo, branch):
            branches = self._repo(repo)["branches"]
            if unquote(branch) in branches:
                raise _HttpError(409, "BranchExists", f"Branch {branch} already exists")
            branches[unquote(branch)] = branches["main"]
            self._send(200, {})

        def model_info(self, method, body, repo, rev="main"):
            sha = self._sha(repo, rev or "main")
            snapshot = hub.repos[repo]["snapshots"][sha]
            with_blobs = self.query.get("blobs") == ["True"] or "expand" in self.query
            siblings = [
                {"rfilename": path, **({"size": len(b.data), "blobId": b.git_oid, "lfs": b.entry(path).get("lfs")}
                                       if with_blobs else {})}
                for path, b in sorted(snapshot.items())
            ]
            self._send(200, {"id": repo, "modelId": repo, "sha": sha, "private": False, "tags": [],
                             "siblings": siblings}, head=method == "HEAD")

        # -- listing ---------------------------------------------------------------------------------------

        def _entries(self, repo: str, rev: str, prefix: str, recursive: bool) -> list[dict]:
            snapshot = hub.repos[repo]["snapshots"][self._sha(repo, rev)]
            prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
            files, folders = [], set()
            for path, blob in sorted(snapshot.items()):
                if not path.startswith(prefix):
                    continue
                rest = path[len(prefix) :].split("/")
                for depth in range(1, len(rest)):
                    if recursive or depth == 1:
                        folders.add(prefix + "/".join(rest[:depth]))
                if recursive or len(rest) == 1:
                    files.append(blob.entry(path))
            if prefix and not files and not folders:
                raise _HttpError(404, "EntryNotFound", f"{prefix} does not exist on {rev}")
            return [{"type": "directory", "path": p, "oid": "0" * 40, "size": 0} for p in sorted(folders)] + files

        def tree(self, method, body, repo, rev, path=""):
            recursive = self.query.get("recursive", ["false"])[0].lower() == "true"
            self._send(200, self._entries(repo, rev, unquote(path or ""), recursive))

        # -- downloads -------------------------------------------------------------------------------------

        def resolve(self, method, body, repo, rev, path):
            sha = self._sha(repo, rev)
            path = unquote(path)
            blob = hub.repos[repo]["snapshots"][sha].get(path)
            if blob is None:
                raise _HttpError(404, "EntryNotFound", f"{path} does not exist on {unquote(rev)}")
            headers = {"X-Repo-Commit": sha, "ETag": f'"{blob.git_oid}"', "Accept-Ranges": "bytes"}
            if blob.lfs:
                headers.update({"X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": str(len(blob.data))})
            data = hub.tampered.get((repo, path), blob.data) if method == "GET" else blob.data
            self._send(200, data, headers=headers, head=method == "HEAD", ctype="application/octet-stream")

        # -- uploads ---------------------------------------------------------------------------------------

        def preupload(self, method, body, repo, rev):
            self._sha(repo, rev)
            files = [
                {"path": f["path"], "shouldIgnore": False,
                 "uploadMode": "lfs" if _is_lfs(f["path"], f["size"]) else "regular"}
                for f in json.loads(body)["files"]
            ]
            self._send(200, {"files": files, "commitOid": self._sha(repo, rev)})

        def lfs_batch(self, method, body, repo):
            self._repo(repo)
            objects = []
            for obj in json.loads(body).get("objects", []):
                entry = {"oid": obj["oid"], "size": obj["size"]}
                if obj["oid"] not in hub.lfs_objects:
                    entry["actions"] = {"upload": {"href": f"{hub.url}/__lfs/{obj['oid']}"}}
                objects.append(entry)
            self._send(200, {"transfer": "basic", "objects": objects}, ctype="application/vnd.git-lfs+json")

        def lfs_put(self, method, body, oid):
            if hashlib.sha256(body).hexdigest() != oid:
                raise _HttpError(400, "BadRequest", "sha256 of the uploaded object does not match its oid")
            hub.lfs_objects[oid] = body
            self._send(200, b"")

        def commit(self, method, body, repo, rev):
            self._sha(repo, rev)
            if "create_pr" in self.query:
                raise _HttpError(400, "BadRequest", "the fake hub does not implement pull requests")
            added, deleted, summary, parent = {}, [], "", None
            for line in body.splitlines():
                item = json.loads(line)
                key, value = item["key"], item["value"]
                if key == "header":
                    summary, parent = value.get("summary", ""), value.get("parentCommit")
                elif key == "file":
                    added[value["path"]] = _Blob(base64.b64decode(value["content"]), lfs=False)
                elif key == "lfsFile":
                    if value["oid"] not in hub.lfs_objects:
                        raise _HttpError(400, "BadRequest", f"LFS object {value['oid']} was never uploaded")
                    added[value["path"]] = _Blob(hub.lfs_objects[value["oid"]], lfs=True)
                elif key in ("deletedFile", "deletedFolder"):
                    deleted.append(value["path"])
                else:
                    raise _HttpError(400, "BadRequest", f"unsupported commit operation {key}")
            if parent is not None and parent != self._sha(repo, rev):
                # As the Hub: a commit pinned to a parent fails when the branch has moved since.
                raise _HttpError(412, "PreconditionFailed", f"{unquote(rev)} is no longer at {parent}")
            snapshot = hub._snapshot(repo, rev)
            missing = [p for p in deleted if p not in snapshot]
            if missing:
                raise _HttpError(404, "EntryNotFound", f"cannot delete missing files {missing}")
            sha = hub._commit(repo, unquote(rev), added, deleted)
            self._send(200, {"success": True, "commitOid": sha, "commitUrl": f"{hub.url}/{repo}/commit/{sha}",
                             "commitMessage": summary, "pullRequestUrl": None})

    ROUTES = [
        (r"/api/validate-yaml", "POST", Handler.validate_yaml),
        (r"/api/repos/create", "POST", Handler.create_repo),
        (rf"/api/{_KIND}/{_REPO}/branch/(?P<branch>[^/]+)", "POST", Handler.create_branch),
        (rf"/api/{_KIND}/{_REPO}(?:/revision/{_REV})?", "GET", Handler.model_info),
        (rf"/api/{_KIND}/{_REPO}/tree/{_REV}(?:/(?P<path>.*))?", "GET", Handler.tree),
        (rf"/api/{_KIND}/{_REPO}/preupload/{_REV}", "POST", Handler.preupload),
        (rf"/api/{_KIND}/{_REPO}/commit/{_REV}", "POST", Handler.commit),
        (rf"(?:/datasets)?/{_REPO}\.git/info/lfs/objects/batch", "POST", Handler.lfs_batch),
        (r"/__lfs/(?P<oid>[0-9a-f]{64})", "PUT", Handler.lfs_put),
        (rf"(?:/datasets)?/{_REPO}/resolve/{_REV}/(?P<path>.+)", "GET", Handler.resolve),
    ]
    return Handler



def client_env(hub: FakeHub, home) -> dict:
    """Environment for a client process of `hub`: its endpoint, a dummy token, no Xet, and fresh caches under `home`
    (HF_* variables of the calling environment, e.g. HF_HUB_OFFLINE, are dropped)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(
        HF_ENDPOINT=hub.url, HF_TOKEN="hf_fake_token", HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HOME=str(home), HF_HUB_CACHE=str(Path(home) / "hub"),
        HF_MODULES_CACHE=str(Path(home) / "modules"), SAPIENS_HF_CACHE=str(Path(home) / "sapiens-hf"),
    )
    return env


def run_client(code: str, env: dict, cwd, timeout: float = 180) -> str:
    """Runs `code` in a fresh Python process (so huggingface_hub reads `env` at import) and returns its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd, capture_output=True, text=True,
        timeout=timeout, check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"client process failed with exit code {result.returncode}:\n{result.stderr[-8000:]}")
    return result.stdout
