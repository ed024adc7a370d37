"""A Hub we did not write, on 127.0.0.1: olah (PyPI, a self-hosted Hugging Face mirror) serving local
git repositories, offline, with their weights in git LFS as git-lfs lays them: each large file
committed as its pointer (``version ... / oid sha256:... / size ...``), its bytes in
``.git/lfs/objects/<aa>/<bb>/<sha256>``, and a ``.gitattributes`` naming the LFS patterns, as on the Hub.
The tree listing, ETags and file bytes are olah's answers, not ours."""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
LFS = ("*.safetensors", "*.bin", "*.onnx", "*.pth", "*.pt")
ATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS)


def git_repo(root: Path, files: dict[str, bytes]) -> str:
    """A git repository at ``root`` holding ``files`` (LFS patterns as pointers); returns its commit.
    Called again on the same ``root``, it commits ``files`` on top (the branch moves on)."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}

    def git(*args) -> str:
        return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True,
                              env=env).stdout.strip()

    if not root.exists():
        root.mkdir(parents=True)
        git("init", "-q", "-b", "main")
        files = {".gitattributes": ATTRIBUTES.encode(), **files}
    for path, data in files.items():
        f = root / path
        f.parent.mkdir(parents=True, exist_ok=True)
        if any(Path(path).match(p) for p in LFS):
            sha = hashlib.sha256(data).hexdigest()
            obj = root / ".git" / "lfs" / "objects" / sha[:2] / sha[2:4] / sha
            obj.parent.mkdir(parents=True, exist_ok=True)
            obj.write_bytes(data)
            data = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()
        f.write_bytes(data)
    git("add", "-A")
    git("commit", "-q", "-m", "upload")
    return git("rev-parse", "HEAD")


class Olah:
    """``with Olah({repo_id: {path: bytes}}) as hub:`` serves the repos at ``hub.endpoint``."""

    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.dir = Path(tempfile.mkdtemp(prefix="olah-"))
        self.commits = {repo_id: git_repo(self.dir / "mirrors" / "models" / repo_id, files)
                        for repo_id, files in repos.items()}
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        (self.dir / "olah.toml").write_text(
            f'[basic]\nhost = "127.0.0.1"\nport = {self.port}\nrepos-path = "{self.dir / "repos"}"\n'
            f'mirrors-path = ["{self.dir / "mirrors"}"]\nmirror-netloc = "127.0.0.1:{self.port}"\n'
            f'mirror-lfs-netloc = "127.0.0.1:{self.port}"\n[accessibility]\noffline = true\n')

    def __enter__(self):
        self.proc = subprocess.Popen([str(BIN / "olah-cli"), "-c", str(self.dir / "olah.toml"), "--log-path",
                                      str(self.dir / "logs")], cwd=self.dir, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/api/models/{next(iter(self.commits))}/revision/main",
                                       timeout=2)
                return self
            except OSError:
                assert self.proc.poll() is None and time.time() < deadline, "olah did not start"
                time.sleep(0.3)

    def commit(self, repo_id: str, files: dict[str, bytes]) -> str:
        """A new commit on ``repo_id``'s main holding ``files`` too; returns it."""
        self.commits[repo_id] = git_repo(self.dir / "mirrors" / "models" / repo_id, files)
        return self.commits[repo_id]

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait(30)
