"""A small, threaded server that speaks the Hugging Face Hub's HTTP protocol, for offline tests.

It implements what the real ``huggingface_hub`` 2.4 client and transformers 5.24 send for a push / pull
round trip (see ``/work/shared/hub-protocol.md``), with real git-like history so tests can assert on it:

- users and tokens (``whoami-v2``; an unknown token is a 401, a read token cannot write, a user can
  write only to their own namespace and their orgs');
- model / space / dataset repos held in memory: commits with 40-hex ids and parent chains, branches,
  private repos (invisible without the owner's token: 401 anonymous, 404 authenticated, as the Hub does);
- create (409 with ``url`` when it exists) / delete repo, settings (visibility), ``validate-yaml``,
  ``preupload`` (always ``regular``, with the git blob ``oid`` of the file already at that revision, so
  the client drops unchanged files and an all-unchanged push makes no commit), ``commit`` (ndjson
  ``header`` / ``file`` / ``deletedFile`` / ``deletedFolder``), repo info (+ ``revision``), ``tree``
  (recursive or not, paginated with ``Link``), ``paths-info``, ``refs``, ``commits``, ``branch``, Space
  ``variables``;
- downloads: ``HEAD``/``GET /{[spaces/|datasets/]}ns/name/resolve/{rev}/{path}`` with ``X-Repo-Commit``,
  ``ETag``, ``Content-Length``, ``Range`` (206), and the ``X-Error-Code`` headers the client maps to
  ``RepositoryNotFoundError`` / ``RevisionNotFoundError`` / ``EntryNotFoundError``.

Every request is logged (method, path, query, headers incl. ``Authorization``, body, status) and
faults can be injected: the next N matching requests answer with an HTTP status or drop the
connection, either before or after the server applied them (a "lost response").

A commit whose tree equals its parent's is still recorded, with ``noop=True``, so a test can tell
"the client sent an empty commit" apart from "the client sent nothing".
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlencode

import yaml

REPO_TYPES = {"models": "model", "spaces": "space", "datasets": "dataset"}
URL_PREFIX = {"model": "", "space": "spaces/", "dataset": "datasets/"}
SPACE_SDKS = ("gradio", "docker", "static", "streamlit")
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"

# Test users. Token strings are long and unique so "the token never appears in X" checks cannot pass by
# accident. alice: write token (member of org "acme") and a read-only token; bob: write token.
ALICE_TOKEN = "hf_aliceWRITEtoken_0f1e2d3c4b5a69788796a5b4c3d2e1f0"
ALICE_READ_TOKEN = "hf_aliceREADtoken_aa11bb22cc33dd44ee55ff6677889900"
BOB_TOKEN = "hf_bobWRITEtoken_1234567890abcdef1234567890abcdef"
ALL_TOKENS = (ALICE_TOKEN, ALICE_READ_TOKEN, BOB_TOKEN)


def git_blob_oid(data: bytes) -> str:
    """The git blob sha1 of ``data`` (what the client computes for a regular file's ``_local_oid``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def hub_date(ts: float) -> str:
    """A timestamp in the Hub's format: ``2024-01-01T00:00:00.000Z``."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def front_matter(text: str) -> dict | None:
    """The YAML metadata block of a README, or None when it has none. Raises yaml.YAMLError."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.DOTALL)
    if match is None:
        return None
    data = yaml.safe_load(match.group(1))
    return data if data is not None else {}


@dataclass
class User:
    name: str
    orgs: tuple[str, ...] = ()
    role: str = "write"  # "read" tokens cannot create repos nor commit

    def can_read(self, repo: Repo) -> bool:
        return repo.namespace == self.name or repo.namespace in self.orgs

    def can_write(self, namespace: str) -> bool:
        return self.role == "write" and (namespace == self.name or namespace in self.orgs)


@dataclass
class Commit:
    oid: str
    parent: str | None
    files: dict[str, bytes]
    title: str
    message: str
    author: str
    date: float
    noop: bool = False  # tree identical to the parent's


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    sdk: str | None = None
    created_at: float = field(default_factory=time.time)
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    variables: dict[str, dict] = field(default_factory=dict)  # Space variables: key -> {"value", "description", ...}

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]

    def resolve(self, revision: str) -> Commit | None:
        """A branch name or a full 40-hex commit id → the commit, or None."""
        revision = revision.removeprefix("refs/heads/")
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        return self.commits.get(revision)

    def history(self, oid: str) -> list[Commit]:
        out, cursor = [], oid
        while cursor is not None:
            out.append(self.commits[cursor])
            cursor = self.commits[cursor].parent
        return out


@dataclass
class Fault:
    method: str
    path: re.Pattern
    times: int
    status: int = 500
    drop: bool = False  # close the connection without an answer
    after: bool = False  # apply the request first, then fail (the client never learns it succeeded)
    message: str = "Injected fault"
    hits: int = 0


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    status: int | None = None  # None when the connection was dropped

    @property
    def token(self) -> str | None:
        auth = self.headers.get("authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else None


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, payload, headers: dict | None = None) -> Response:
    return Response(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})


def error(status: int, message: str, code: str | None = None, extra: dict | None = None, **headers) -> Response:
    # Header values must be latin-1: escape anything else (paths and labels may be unicode).
    h = {"X-Error-Message": message.encode("ascii", "backslashreplace").decode(), **headers}
    if code is not None:
        h["X-Error-Code"] = code
    return json_response(status, {"error": message, **(extra or {})}, h)


class HubState:
    """Users, repos, faults and the request log; every mutation holds ``lock``."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.tokens: dict[str, User] = {}
            self.repos: dict[tuple[str, str], Repo] = {}
            self.faults: list[Fault] = []
            self.requests: list[LoggedRequest] = []
            self.tree_page_size = 1000
            self._counter = 0

    # ---- set-up helpers for tests
    def add_token(self, token: str, user: str, *, orgs: tuple[str, ...] = (), role: str = "write") -> None:
        with self.lock:
            self.tokens[token] = User(user, tuple(orgs), role)

    def add_test_users(self) -> None:
        self.add_token(ALICE_TOKEN, "alice", orgs=("acme",))
        self.add_token(ALICE_READ_TOKEN, "alice", role="read")
        self.add_token(BOB_TOKEN, "bob")

    def inject_fault(
        self,
        path: str,
        *,
        method: str = "POST",
        times: int = 1,
        status: int = 500,
        drop: bool = False,
        after: bool = False,
        message: str = "Injected fault",
    ) -> Fault:
        """Make the next ``times`` requests whose raw path matches the regex ``path`` fail: answer ``status``
        with ``message``, or (``drop``) close the connection; ``after``: only once the server applied them."""
        fault = Fault(method.upper(), re.compile(path), times, status, drop, after, message)
        with self.lock:
            self.faults.append(fault)
        return fault

    def create_repo(self, repo_id: str, *, repo_type: str = "model", private: bool = False, sdk: str | None = None,
                    author: str = "hub") -> Repo:
        with self.lock:
            repo = Repo(repo_type, repo_id, private, sdk)
            files = {".gitattributes": GITATTRIBUTES}
            if repo_type == "space":
                title = repo_id.split("/")[1]
                files["README.md"] = f"---\ntitle: {title}\nsdk: {sdk}\n---\n\n# {title}\n".encode()
            self._new_commit(repo, "main", files, "initial commit", "", author)
            self.repos[(repo_type, repo_id)] = repo
            return repo

    def seed_repo(self, repo_id: str, files: dict[str, bytes] | Path, *, repo_type: str = "model",
                  private: bool = False, author: str | None = None) -> Commit:
        """Create ``repo_id`` holding ``files`` (a dict, or every file under a folder) without going through HTTP."""
        if isinstance(files, Path):
            files = {p.relative_to(files).as_posix(): p.read_bytes() for p in sorted(files.rglob("*")) if p.is_file()}
        with self.lock:
            owner = author or repo_id.split("/")[0]
            repo = self.create_repo(repo_id, repo_type=repo_type, private=private, author=owner)
            head = repo.commits[repo.branches["main"]]
            return self._new_commit(repo, "main", {**head.files, **files}, "seed", "", owner)

    # ---- inspection helpers for tests
    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def commits(self, repo_id: str, repo_type: str = "model", branch: str = "main") -> list[Commit]:
        """The history of ``branch``, newest first."""
        with self.lock:
            repo = self.repo(repo_id, repo_type)
            return repo.history(repo.branches[branch])

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        with self.lock:
            commit = self.repo(repo_id, repo_type).resolve(revision)
            if commit is None:
                raise KeyError(revision)
            return dict(commit.files)

    def requests_to(self, pattern: str, method: str | None = None) -> list[LoggedRequest]:
        with self.lock:
            return [r for r in self.requests if re.search(pattern, r.path) and (method is None or r.method == method)]

    # ---- internals
    def _new_commit(self, repo: Repo, branch: str, files: dict[str, bytes], title: str, message: str,
                    author: str) -> Commit:
        parent = repo.branches.get(branch)
        self._counter += 1
        digest = hashlib.sha1()
        digest.update(f"{repo.repo_id}\0{parent}\0{title}\0{time.time()}\0{self._counter}".encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + git_blob_oid(files[path]).encode())
        noop = parent is not None and repo.commits[parent].files == files
        commit = Commit(digest.hexdigest(), parent, files, title, message, author, time.time(), noop)
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return commit

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.hits < fault.times and fault.method == method and fault.path.search(path):
                    fault.hits += 1
                    return fault
        return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubServerHTTP

    # ---- plumbing
    def log_message(self, format, *args):  # silence the default stderr log
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        state = self.server.state
        raw_path, _, query = self.path.partition("?")
        body = self._read_body()  # always read it first, or the keep-alive connection desyncs
        entry = LoggedRequest(self.command, raw_path, query, {k.lower(): v for k, v in self.headers.items()}, body)
        with state.lock:
            state.requests.append(entry)
        fault = state._take_fault(self.command, raw_path)
        if fault is not None and not fault.after:
            response = None if fault.drop else error(fault.status, fault.message)
        else:
            try:
                response = Router(state, self, raw_path, parse_qs(query), body).route()
            except Exception as exc:  # noqa: BLE001 - a server bug: answer 500 and say what broke
                response = error(500, f"test hub server error: {type(exc).__name__}: {exc}")
            if fault is not None:
                response = None if fault.drop else error(fault.status, fault.message)
        if response is None:
            self.close_connection = True
            return
        entry.status = response.status
        self.send_response(response.status)
        headers = {"Content-Length": str(len(response.body)), **response.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle


class Router:
    """Maps one request to one :class:`Response`."""

    API_REPO = re.compile(r"^/api/(models|spaces|datasets)/([^/]+)/([^/]+)(?:/(.*))?$")
    RESOLVE = re.compile(r"^/(?:(spaces|datasets)/)?([^/]+)/([^/]+)/resolve/([^/]+)/(.+)$")

    def __init__(self, state: HubState, handler: Handler, path: str, query: dict, body: bytes) -> None:
        self.state, self.handler, self.path, self.query, self.body = state, handler, path, query, body
        self.method = handler.command
        self.base = f"http://{handler.headers.get('Host')}"
        self.bad_token = False
        self.user: User | None = None
        auth = handler.headers.get("Authorization")
        if auth is not None:
            token = auth[7:] if auth.startswith("Bearer ") else None
            self.user = state.tokens.get(token) if token else None
            self.bad_token = self.user is None

    def json(self) -> dict:
        return json.loads(self.body or b"{}")

    def route(self) -> Response:
        if self.bad_token:
            return error(401, INVALID_CREDENTIALS)
        path, method = self.path, self.method
        if path == "/api/whoami-v2" and method == "GET":
            return self.whoami()
        if path == "/api/repos/create" and method == "POST":
            return self.create_repo()
        if path == "/api/repos/delete" and method == "DELETE":
            return self.delete_repo()
        if path == "/api/validate-yaml" and method == "POST":
            return self.validate_yaml()
        if m := self.API_REPO.match(path):
            repo_type, repo_id = REPO_TYPES[m.group(1)], f"{unquote(m.group(2))}/{unquote(m.group(3))}"
            return self.repo_api(repo_type, repo_id, m.group(4) or "")
        if (m := self.RESOLVE.match(path)) and method in ("GET", "HEAD"):
            repo_type = REPO_TYPES[m.group(1)] if m.group(1) else "model"
            return self.resolve(repo_type, f"{m.group(2)}/{m.group(3)}", unquote(m.group(4)), unquote(m.group(5)))
        return error(404, f"Not found: {method} {path}")

    # ---- access control
    def readable(self, repo_type: str, repo_id: str) -> tuple[Repo | None, Response | None]:
        repo = self.state.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not (self.user and self.user.can_read(repo))):
            status = 401 if self.user is None else 404
            return None, error(status, "Repository not found", "RepoNotFound")
        return repo, None

    def writable(self, repo_type: str, repo_id: str) -> tuple[Repo | None, Response | None]:
        repo, err = self.readable(repo_type, repo_id)
        if err is not None:
            return None, err
        if self.user is None:
            return None, error(401, "You must be authenticated to write to this repo")
        if not self.user.can_write(repo.namespace):
            return None, error(403, f"You don't have the rights to write to {repo_type} repo {repo_id} "
                                    f"(user '{self.user.name}', role '{self.user.role}')")
        return repo, None

    # ---- endpoints without a repo
    def whoami(self) -> Response:
        if self.user is None:
            return error(401, "You must be authenticated to call whoami")
        return json_response(200, {
            "type": "user", "name": self.user.name, "fullname": self.user.name,
            "orgs": [{"type": "org", "name": org} for org in self.user.orgs],
            "auth": {"type": "access_token", "accessToken": {"displayName": "test-token", "role": self.user.role}},
        })

    def create_repo(self) -> Response:
        if self.user is None:
            return error(401, "You must be authenticated to create a repo")
        payload = self.json()
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIX:
            return error(400, f"Invalid repo type {repo_type!r}")
        namespace = payload.get("organization") or self.user.name
        name = payload.get("name") or ""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", name):
            return error(400, f"Invalid repo name {name!r}")
        repo_id = f"{namespace}/{name}"
        url = f"{self.base}/{URL_PREFIX[repo_type]}{repo_id}"
        if not self.user.can_write(namespace):
            return error(403, f"You don't have the rights to create a {repo_type} under the namespace '{namespace}'")
        sdk = payload.get("sdk")
        if repo_type == "space" and sdk not in SPACE_SDKS:
            return error(400, f"Invalid sdk {sdk!r} for a Space: one of {SPACE_SDKS}")
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        with self.state.lock:
            if (repo_type, repo_id) in self.state.repos:
                return error(409, f"You already created this {repo_type} repo", extra={"url": url})
            self.state.create_repo(repo_id, repo_type=repo_type, private=private, sdk=sdk, author=self.user.name)
        return json_response(200, {"url": url, "name": repo_id})

    def delete_repo(self) -> Response:
        payload = self.json()
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or (self.user.name if self.user else '')}/{payload.get('name')}"
        with self.state.lock:
            _, err = self.writable(repo_type, repo_id)
            if err is not None:
                return err
            del self.state.repos[(repo_type, repo_id)]
        return Response(200)

    def validate_yaml(self) -> Response:
        payload = self.json()
        try:
            meta = front_matter(payload.get("content", ""))
        except yaml.YAMLError as exc:
            return json_response(400, {"errors": [{"message": f"Invalid YAML: {exc}"}], "warnings": []})
        problems = validate_metadata(meta or {}, payload.get("repoType") or "model")
        if problems:
            return json_response(400, {"errors": [{"message": p} for p in problems], "warnings": []})
        warnings = [] if meta else [{"message": "Empty or missing yaml metadata in repo card"}]
        return json_response(200, {"errors": [], "warnings": warnings})

    # ---- /api/{type}s/{ns}/{name}/...
    def repo_api(self, repo_type: str, repo_id: str, rest: str) -> Response:
        method = self.method
        action, _, arg = rest.partition("/")
        with self.state.lock:
            if rest == "" and method == "GET":
                return self.repo_info(repo_type, repo_id, "main")
            if action == "revision" and method == "GET":
                return self.repo_info(repo_type, repo_id, unquote(arg))
            if action == "preupload" and method == "POST":
                return self.preupload(repo_type, repo_id, unquote(arg))
            if action == "commit" and method == "POST":
                return self.commit(repo_type, repo_id, unquote(arg))
            if action == "tree" and method == "GET":
                revision, _, sub = arg.partition("/")
                return self.tree(repo_type, repo_id, unquote(revision), unquote(sub).strip("/"))
            if action == "paths-info" and method == "POST":
                return self.paths_info(repo_type, repo_id, unquote(arg))
            if action == "branch" and method in ("POST", "DELETE"):
                return self.branch(repo_type, repo_id, unquote(arg))
            if action == "refs" and method == "GET":
                return self.refs(repo_type, repo_id)
            if action == "commits" and method == "GET":
                return self.list_commits(repo_type, repo_id, unquote(arg))
            if action == "settings" and method == "PUT":
                return self.settings(repo_type, repo_id)
            if action == "variables" and repo_type == "space" and method in ("GET", "POST", "DELETE"):
                return self.variables(repo_type, repo_id)
        return error(404, f"Not found: {method} {self.path}")

    def _revision(self, repo: Repo, revision: str) -> tuple[Commit | None, Response | None]:
        commit = repo.resolve(revision)
        if commit is None:
            return None, error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit, None

    def _repo_at(self, repo_type: str, repo_id: str, revision: str, *, write: bool = False):
        """(repo, commit, None) when the caller may read (or ``write``) the repo and the revision exists,
        else (None, None, the error response)."""
        repo, err = (self.writable if write else self.readable)(repo_type, repo_id)
        if err is not None:
            return None, None, err
        commit, err = self._revision(repo, revision)
        return (repo, commit, None) if err is None else (None, None, err)

    def repo_info(self, repo_type: str, repo_id: str, revision: str) -> Response:
        repo, commit, err = self._repo_at(repo_type, repo_id, revision)
        if err is not None:
            return err
        info = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id, "author": repo.namespace,
            "sha": commit.oid, "lastModified": hub_date(commit.date), "createdAt": hub_date(repo.created_at),
            "private": repo.private, "gated": False, "disabled": False, "likes": 0, "downloads": 0, "tags": [],
            "siblings": [{"rfilename": p, "size": len(d), "blobId": git_blob_oid(d)}
                         for p, d in sorted(commit.files.items())],
        }
        try:
            card = front_matter(commit.files.get("README.md", b"").decode("utf-8", "replace"))
        except yaml.YAMLError:
            card = None
        if card:
            info["cardData"] = card
            info["tags"] = list(card.get("tags") or [])
            for key in ("pipeline_tag", "library_name", "model-index"):
                if key in card:
                    info[key] = card[key]
        if repo_type == "space":
            info.update(sdk=repo.sdk, runtime={"stage": "BUILDING", "hardware": {"current": None, "requested": None}},
                        subdomain=repo_id.replace("/", "-").lower(), models=(card or {}).get("models", []))
        return json_response(200, info)

    def preupload(self, repo_type: str, repo_id: str, revision: str) -> Response:
        repo, commit, err = self._repo_at(repo_type, repo_id, revision, write=True)
        if err is not None:
            return err
        files = []
        for entry in self.json().get("files", []):
            existing = commit.files.get(entry["path"])
            files.append({
                "path": entry["path"], "uploadMode": "regular", "shouldIgnore": False,
                "oid": git_blob_oid(existing) if existing is not None else None,
            })
        return json_response(200, {"files": files, "commitOid": commit.oid})

    def commit(self, repo_type: str, repo_id: str, revision: str) -> Response:
        repo, err = self.writable(repo_type, repo_id)
        if err is not None:
            return err
        if self.query.get("create_pr"):
            return error(400, "Pull requests are not supported by the test hub server")
        branch = revision.removeprefix("refs/heads/")
        if branch not in repo.branches:
            if repo.resolve(revision) is not None:
                return error(400, f"Cannot commit to a commit id ({revision}): use a branch")
            return error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        try:
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            return error(400, f"Invalid ndjson payload: {exc}")
        if not lines or lines[0].get("key") != "header":
            return error(400, "The first ndjson line must be the commit header")
        header = lines[0]["value"]
        head = repo.commits[repo.branches[branch]]
        parent = header.get("parentCommit")
        if parent and parent != head.oid:
            return error(412, f"A commit has happened since {parent}: the head of {branch} is {head.oid}")
        files = dict(head.files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = value.get("path", "")
            if key in ("file", "deletedFile", "deletedFolder") and (
                not path or path.startswith("/") or ".." in path.split("/")
            ):
                return error(400, f"Invalid path {path!r}")
            if key == "file":
                if value.get("encoding") != "base64":
                    return error(400, f"Unsupported encoding {value.get('encoding')!r}")
                files[path] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if path not in files:
                    return error(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del files[path]
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                gone = [p for p in files if p.startswith(prefix)]
                if not gone:
                    return error(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in gone:
                    del files[p]
            elif key == "lfsFile":
                return error(400, "LFS files are not supported by the test hub server (preupload says 'regular')")
            else:
                return error(400, f"Unknown ndjson key {key!r}")
        commit = self.state._new_commit(repo, branch, files, header.get("summary") or "",
                                        header.get("description") or "", self.user.name)
        return json_response(200, {
            "success": True, "commitOid": commit.oid, "hookOutput": "", "pullRequestUrl": None,
            "commitUrl": f"{self.base}/{URL_PREFIX[repo_type]}{repo_id}/commit/{commit.oid}",
        })

    def _entries(self, commit: Commit, sub: str, recursive: bool) -> list[dict] | None:
        """Tree entries under ``sub`` ('' = root), or None when ``sub`` is neither a folder nor a file."""
        prefix = f"{sub}/" if sub else ""
        if sub and sub in commit.files:
            return [file_entry(sub, commit.files[sub])]
        under = {p: d for p, d in commit.files.items() if p.startswith(prefix)}
        if sub and not under:
            return None
        out, folders = [], set()
        for path, data in sorted(under.items()):
            rel = path[len(prefix):].split("/")
            for depth in range(1, len(rel)):
                if not recursive and depth > 1:
                    break
                folders.add(prefix + "/".join(rel[:depth]))
            if recursive or len(rel) == 1:
                out.append(file_entry(path, data))
        for folder in folders:
            content = sorted((p, git_blob_oid(d)) for p, d in under.items() if p.startswith(folder + "/"))
            out.append({"type": "directory", "path": folder,
                        "oid": hashlib.sha1(json.dumps(content).encode()).hexdigest()})
        return sorted(out, key=lambda e: e["path"])

    def tree(self, repo_type: str, repo_id: str, revision: str, sub: str) -> Response:
        repo, commit, err = self._repo_at(repo_type, repo_id, revision)
        if err is not None:
            return err
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("true", "1")
        entries = self._entries(commit, sub, recursive)
        if entries is None:
            return error(404, f"Entry not found: {sub}", "EntryNotFound", **{"X-Repo-Commit": commit.oid})
        start = int(self.query.get("cursor", ["0"])[0])
        size = self.state.tree_page_size
        page, headers = entries[start:start + size], {}
        if start + size < len(entries):
            query = {k: v[0] for k, v in self.query.items()} | {"cursor": str(start + size)}
            headers["Link"] = f'<{self.base}{self.path}?{urlencode(query)}>; rel="next"'
        return json_response(200, page, headers)

    def paths_info(self, repo_type: str, repo_id: str, revision: str) -> Response:
        repo, commit, err = self._repo_at(repo_type, repo_id, revision)
        if err is not None:
            return err
        content_type = self.handler.headers.get("Content-Type", "")
        if "json" in content_type:
            paths = self.json().get("paths", [])
        else:
            paths = parse_qs(self.body.decode()).get("paths", [])
        out = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files:
                out.append(file_entry(path, commit.files[path]))
            else:
                entries = self._entries(commit, path, recursive=True)
                if entries is not None:
                    content = sorted((e["path"], e["oid"]) for e in entries if e["type"] == "file")
                    out.append({"type": "directory", "path": path,
                                "oid": hashlib.sha1(json.dumps(content).encode()).hexdigest()})
        return json_response(200, out)

    def branch(self, repo_type: str, repo_id: str, name: str) -> Response:
        repo, err = self.writable(repo_type, repo_id)
        if err is not None:
            return err
        if self.method == "DELETE":
            if name not in repo.branches or name == "main":
                return error(404 if name not in repo.branches else 403, f"Cannot delete branch {name}")
            del repo.branches[name]
            return Response(200)
        if name in repo.branches:
            return error(409, f"Reference already exists: refs/heads/{name}")
        start = self.json().get("startingPoint") or "main"
        commit, err = self._revision(repo, start)
        if err is not None:
            return err
        repo.branches[name] = commit.oid
        return Response(200)

    def refs(self, repo_type: str, repo_id: str) -> Response:
        repo, err = self.readable(repo_type, repo_id)
        if err is not None:
            return err
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": oid} for n, oid in repo.branches.items()]
        return json_response(200, {"branches": branches, "tags": [], "converts": [], "pullRequests": []})

    def list_commits(self, repo_type: str, repo_id: str, revision: str) -> Response:
        repo, commit, err = self._repo_at(repo_type, repo_id, revision or "main")
        if err is not None:
            return err
        return json_response(200, [
            {"id": c.oid, "title": c.title, "message": c.message, "authors": [{"user": c.author}],
             "date": hub_date(c.date)}
            for c in repo.history(commit.oid)
        ])

    def settings(self, repo_type: str, repo_id: str) -> Response:
        repo, err = self.writable(repo_type, repo_id)
        if err is not None:
            return err
        payload = self.json()
        if "visibility" in payload:
            repo.private = payload["visibility"] == "private"
        elif "private" in payload:
            repo.private = bool(payload["private"])
        return json_response(200, {})

    def variables(self, repo_type: str, repo_id: str) -> Response:
        repo, err = self.writable(repo_type, repo_id)
        if err is not None:
            return err
        if self.method == "POST":
            payload = self.json()
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", payload.get("key") or ""):
                return error(400, f"Invalid variable name {payload.get('key')!r}")
            repo.variables[payload["key"]] = {"value": str(payload.get("value", "")),
                                              "description": payload.get("description"),
                                              "updatedAt": hub_date(time.time())}
        elif self.method == "DELETE":
            repo.variables.pop(self.json().get("key"), None)
        return json_response(200, repo.variables)

    # ---- downloads
    def resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> Response:
        with self.state.lock:
            repo, commit, err = self._repo_at(repo_type, repo_id, revision)
            if err is not None:
                return err
            data = commit.files.get(path)
        if data is None:
            return error(404, f"Entry not found: {path}", "EntryNotFound", **{"X-Repo-Commit": commit.oid})
        headers = {
            "X-Repo-Commit": commit.oid, "ETag": f'"{git_blob_oid(data)}"', "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        range_header = self.handler.headers.get("Range")
        if range_header and self.method == "GET":
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())
            if m is None or m.group(1) == "" or int(m.group(1)) >= max(len(data), 1):
                return Response(416, b"", {**headers, "Content-Range": f"bytes */{len(data)}"})
            start = int(m.group(1))
            end = min(int(m.group(2)), len(data) - 1) if m.group(2) else len(data) - 1
            return Response(206, data[start:end + 1], {**headers, "Content-Range": f"bytes {start}-{end}/{len(data)}"})
        return Response(200, data, headers)


def file_entry(path: str, data: bytes) -> dict:
    return {"type": "file", "path": path, "size": len(data), "oid": git_blob_oid(data)}


def validate_metadata(meta: dict, repo_type: str) -> list[str]:
    """The subset of the Hub's metadata checks that catches broken cards: a mapping, a sane model-index,
    and the Space keys the Spaces runtime needs."""
    if not isinstance(meta, dict):
        return ["The YAML metadata must be a mapping"]
    problems = []
    index = meta.get("model-index")
    if index is not None:
        if not isinstance(index, list):
            problems.append('"model-index" must be a list')
        for model in index if isinstance(index, list) else []:
            if not isinstance(model, dict) or "name" not in model or not isinstance(model.get("results"), list):
                problems.append('"model-index[]" needs "name" and a "results" list')
                continue
            for result in model["results"]:
                if not isinstance(result.get("task"), dict) or "type" not in result["task"]:
                    problems.append('"model-index[].results[].task.type" is required')
                for metric in result.get("metrics") or []:
                    if "type" not in metric or "value" not in metric:
                        problems.append('"model-index[].results[].metrics[]" needs "type" and "value"')
    if repo_type == "space" and meta.get("sdk") not in SPACE_SDKS:
        problems.append(f'"sdk" must be one of {SPACE_SDKS}')
    for key in ("tags", "datasets", "models"):
        if key in meta and not isinstance(meta[key], (list, str)):
            problems.append(f'"{key}" must be a list or a string')
    return problems


class HubServerHTTP(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, state: HubState) -> None:
        self.state = state
        super().__init__(address, Handler)


class HubServer:
    """Start with ``HubServer().start()`` (or as a context manager); ``url`` is the ``HF_ENDPOINT``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = HubState()
        self._httpd = HubServerHTTP((host, port), self.state)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="test-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def resolve_url(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> str:
        return f"{self.url}/{URL_PREFIX[repo_type]}{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"


def client_env(endpoint: str, hf_home: str | Path, *, token: str | None = ALICE_TOKEN, base: dict | None = None) -> dict:
    """An environment for a Hub client process aimed at ``endpoint``: ambient HF_* variables removed (including
    ``HF_HUB_OFFLINE``, which would block the local Hub too), a fresh ``HF_HOME``, ``HF_TOKEN`` (unless None), telemetry and progress bars off, no proxy for the local server."""
    import os

    env = {k: v for k, v in (base if base is not None else os.environ).items()
           if not k.startswith(("HF_", "HUGGING_FACE_"))}
    env.update({
        "HF_HOME": str(hf_home), "HF_ENDPOINT": endpoint, "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
        "HF_DATASETS_OFFLINE": "1",  # local data never needs the network
    })
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def run_python(code: str, env: dict[str, str], *, timeout: float = 300, cwd=None,
               check: bool = True) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with ``env`` (e.g. the ``hub_env`` fixture); on failure (when
    ``check``) raise with its output, so a test shows why the client failed."""
    proc = subprocess.run([sys.executable, "-c", code], check=False, env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


if __name__ == "__main__":  # a manual server: python tests/hubserver.py [port] ; token "hf_test" = user "me"
    import sys

    server = HubServer(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0).start()
    server.state.add_token("hf_test", "me")
    print(f"HF_ENDPOINT={server.url} HF_TOKEN=hf_test", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
