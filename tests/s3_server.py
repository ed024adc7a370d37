"""S3-compatible servers on 127.0.0.1 for the tests, with the environment a user would set for such an
endpoint: moto's standalone server (S3's semantics: no rename, listing after write), and a second
implementation, s3rver (node.js, from npm: ``tests/node``), which like many stores does not take the
AWS SDKs' aws-chunked uploads with a trailing checksum."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


S3RVER = Path(__file__).resolve().parent / "node" / "node_modules" / ".bin" / "s3rver"


class S3Server:
    key = "testing"

    def __init__(self, unauthenticated_actions: int | None = None, latency_ms: float = 0):
        """``unauthenticated_actions``: that many requests are served to anyone, then only to known IAM
        users (moto's INITIAL_NO_AUTH_ACTION_COUNT): a store that refuses the test's keys. ``latency_ms``:
        added to every request (a real store's round trip; bench/storage.py)."""
        self.latency_ms = latency_ms
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {"AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.key,
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
        self.proc = self.start(unauthenticated_actions)
        deadline = time.time() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                assert self.proc.poll() is None and time.time() < deadline, "the S3 server did not start"
                time.sleep(0.1)

    def start(self, unauthenticated_actions) -> subprocess.Popen:
        auth = {} if unauthenticated_actions is None else {"INITIAL_NO_AUTH_ACTION_COUNT": str(unauthenticated_actions)}
        cmd = ([sys.executable, __file__, str(self.port), str(self.latency_ms)] if self.latency_ms
               else [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)])
        return subprocess.Popen(cmd, env={**os.environ, **auth}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=self.key, aws_secret_access_key=self.key,
                            region_name="us-east-1")

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"

    def upload(self, folder: Path, uri: str) -> str:
        """Every file under ``folder`` as objects under ``uri`` (s3://BUCKET/PREFIX); returns ``uri``."""
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        c = self.client()
        for f in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            key = "/".join(filter(None, [prefix.strip("/"), f.relative_to(folder).as_posix()]))
            c.upload_file(str(f), bucket, key)
        return uri

    def keys(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def run_env(self) -> dict:
        return {**os.environ, **self.env, "RAY_AUTH_MODE": "disabled"}


class S3rver(S3Server):
    """s3rver: objects on disk in a folder of its own, its default keys (S3RVER)."""
    key = "S3RVER"

    def start(self, unauthenticated_actions) -> subprocess.Popen:
        import tempfile

        assert S3RVER.exists(), "s3rver is not installed: scripts/test.sh installs it (npm install --prefix tests/node)"
        # its listing's continuation token is DES, which OpenSSL 3 (Node >= 17) keeps in its legacy provider
        env = {**os.environ, "NODE_OPTIONS": "--openssl-legacy-provider"}
        return subprocess.Popen([str(S3RVER), "-d", tempfile.mkdtemp(prefix="s3rver-"), "-a", "127.0.0.1", "-p",
                                 str(self.port), "--silent"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)


def serve_slowly(port: int, latency_ms: float) -> None:
    """moto's S3 on 127.0.0.1:``port``, every request answered ``latency_ms`` later (threaded, as
    moto_server is: requests in flight overlap, as on a real store)."""
    from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)

    def slow(environ, start_response):
        time.sleep(latency_ms / 1000)
        return app(environ, start_response)

    make_server("127.0.0.1", port, slow, threaded=True, request_handler=MotoRequestHandler).serve_forever()


if __name__ == "__main__":
    serve_slowly(int(sys.argv[1]), float(sys.argv[2]))
