"""A Hugging Face Hub on 127.0.0.1 for the tests: just the endpoints huggingface_hub uses to fetch a
model (repo info, the recursive tree listing, HEAD/GET of ``resolve`` with ranges), answered the way
the Hub answers them (``X-Repo-Commit``, ``ETag`` = the sha256 of LFS files or the git blob id,
``X-Error-Code`` on errors), plus a plain file server for models fetched by URL.

Repos hold files in memory. A repo can be ``gated`` (files answer 401 GatedRepo, as on the Hub for a
user who has not accepted the licence, unless the request carries the repo's ``token``); a file can be ``corrupt`` (served bytes differ from the hash
its listing publishes) or ``cut`` after N bytes on its first GET (a dropped connection). Every request
is logged as (method, path, Range header).
"""
from __future__ import annotations

import hashlib
import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
            f"size {len(data)}\n").encode()


def is_lfs(path: str, data: bytes) -> bool:
    return path.endswith((".safetensors", ".bin", ".onnx", ".pth", ".pt")) or len(data) > 10_000


@dataclass
class Repo:
    files: dict[str, bytes]
    gated: bool = False
    license: str | None = None
    token: str | None = None                     # gated, and served to requests that carry this token
    corrupt: set = field(default_factory=set)
    cut: dict = field(default_factory=dict)      # path -> bytes sent before the first GET drops

    @property
    def commit(self) -> str:
        h = hashlib.sha1()
        for p in sorted(self.files):
            h.update(p.encode() + blob_id(self.files[p]).encode())
        return h.hexdigest()

    def entry(self, path: str) -> dict:
        """As the Hub lists it: an LFS file's ``oid`` is the git blob id of its pointer, its content's
        sha256 is under ``lfs``; any other file's ``oid`` is its content's blob id."""
        data = self.files[path]
        if not is_lfs(path, data):
            return {"type": "file", "oid": blob_id(data), "size": len(data), "path": path}
        pointer = lfs_pointer(data)
        return {"type": "file", "oid": blob_id(pointer), "size": len(data), "path": path,
                "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)}}

    def etags(self, path: str) -> dict:
        """The headers the Hub answers a file with: an LFS file's ETag is its pointer's blob id and its
        content's sha256 comes as ``X-Linked-Etag``."""
        e = self.entry(path)
        if "lfs" in e:
            return {"ETag": f'"{e["oid"]}"', "X-Linked-Etag": f'"{e["lfs"]["oid"]}"', "X-Linked-Size": str(e["size"])}
        return {"ETag": f'"{e["oid"]}"'}

    def add_folder(self, root: Path, prefix: str = "") -> "Repo":
        for p in sorted(Path(root).rglob("*")):
            if p.is_file():
                self.files[f"{prefix}{p.relative_to(root).as_posix()}"] = p.read_bytes()
        return self


class Hub:
    """``with Hub({...}) as hub:`` serves the repos at ``hub.endpoint`` and plain files at ``hub.url(name)``."""

    def __init__(self, repos: dict[str, Repo], files: dict[str, bytes] | None = None):
        self.repos, self.files, self.log = repos, dict(files or {}), []
        self._cut_done: set = set()
        self.cut_files: dict = {}    # plain file name -> bytes sent before its first GET drops
        self.down = False            # True: every request answers 503, as the Hub does when it is down
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                hub._answer(self, head=True)

            def do_GET(self):
                hub._answer(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.server.shutdown()
            self.server.server_close()

    def url(self, name: str) -> str:
        return f"{self.endpoint}/files/{name}"

    def requested(self, fragment: str) -> list:
        return [r for r in self.log if fragment in r[1]]

    # ------------------------------------------------------------------------------------------------
    def _answer(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = urllib.parse.unquote(urllib.parse.urlparse(h.path).path)
        self.log.append(("HEAD" if head else "GET", path, h.headers.get("Range")))
        if self.down:
            return self._error(h, 503, "ServiceUnavailable", "Service Unavailable")
        parts = path.strip("/").split("/")
        if parts[0] == "files":
            data = self.files.get("/".join(parts[1:]))
            return self._data(h, head, data, "/".join(parts[1:]), None) if data is not None else \
                self._error(h, 404, "EntryNotFound", "no such file")
        if parts[:2] == ["api", "models"] and len(parts) >= 6:
            repo_id, what, rev, rest = "/".join(parts[2:4]), parts[4], parts[5], "/".join(parts[6:])
            repo = self._repo(h, repo_id, rev)
            if repo is None:
                return
            if what == "revision":
                body = {"id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": False,
                        "gated": "manual" if repo.gated else False, "cardData": {"license": repo.license},
                        "siblings": [{"rfilename": p} for p in sorted(repo.files)]}
            else:  # tree
                body = [repo.entry(p) for p in sorted(repo.files) if not rest or p.startswith(rest + "/")]
            return self._json(h, head, body)
        if len(parts) >= 5 and parts[2] == "resolve":
            repo_id, rev, file = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            repo = self._repo(h, repo_id, rev)
            if repo is None:
                return
            if repo.gated and not (repo.token and h.headers.get("Authorization") == f"Bearer {repo.token}"):
                return self._error(h, 401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have "
                                                       "access to it and be authenticated to access it.")
            if file not in repo.files:
                return self._error(h, 404, "EntryNotFound", f"{file} does not exist")
            data = repo.files[file]
            if file in repo.corrupt:
                data = bytes(reversed(data))
            return self._data(h, head, data, f"{repo_id}/{file}", repo, file)
        self._error(h, 404, "RepoNotFound", "not found")

    def _repo(self, h, repo_id: str, rev: str) -> Repo | None:
        repo = self.repos.get(repo_id)
        if repo is None:  # the Hub says 401 for a repo that does not exist (or is private) to anonymous users
            self._error(h, 401, "RepoNotFound", "Repository not found")
        elif rev not in ("main", repo.commit):
            self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return None
        return repo

    def _json(self, h, head: bool, body) -> None:
        data = json.dumps(body).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if not head:
            h.wfile.write(data)

    def _error(self, h, status: int, code: str, message: str) -> None:
        data = json.dumps({"error": message}).encode()
        h.send_response(status)
        h.send_header("X-Error-Code", code)
        h.send_header("X-Error-Message", message)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _data(self, h, head: bool, data: bytes, key: str, repo: Repo | None, file: str | None = None) -> None:
        start = 0
        rng = h.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0] or 0)
        if start >= len(data) and data:
            h.send_response(416)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        h.send_response(206 if start else 200)
        if repo is not None:
            h.send_header("X-Repo-Commit", repo.commit)
            for k, v in repo.etags(file).items():
                h.send_header(k, v)
        h.send_header("Accept-Ranges", "bytes")
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Content-Length", str(len(data) - start))
        h.end_headers()
        if head:
            return
        body = data[start:]
        cut = (repo.cut.get(file) if repo is not None else None) if file else self.files_cut(key)
        if cut is not None and key not in self._cut_done:
            self._cut_done.add(key)
            h.wfile.write(body[:cut])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)
            return
        h.wfile.write(body)

    def files_cut(self, key: str):
        return self.cut_files.get(key)
