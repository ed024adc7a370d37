"""Where data lives: a local path, or a URI in object storage (``s3://BUCKET/KEY``, ``gs://``, ``hdfs://``,
any scheme pyarrow.fs knows). One filesystem per scheme and bucket, made once per process; credentials
come from the standard chains (environment, profile, instance role) and ``AWS_ENDPOINT_URL`` points at
an S3-compatible store (MinIO, R2, a local test server). Local paths go through the same calls.

The mistakes a user makes with a bucket (it does not exist, no credentials, access denied, a scheme
with no filesystem installed) are ``StorageError``: one line naming the URI. So is a store that does not
keep what was written: every object written is checked after writing (its size; a small one read back).

AWS's SDKs (pyarrow's included) upload with aws-chunked encoding and a trailing CRC checksum by default;
a store that does not speak it (s3rver, older MinIO and Ceph gateways) keeps the chunk framing as the
object's bytes. ``AWS_REQUEST_CHECKSUM_CALCULATION=WHEN_REQUIRED`` (checksums only where an operation
requires them: what AWS and every S3-compatible store accept) is therefore the default here unless the
user sets it; ``WHEN_SUPPORTED`` restores the SDK's own default."""
from __future__ import annotations

import functools
import os
import posixpath
import re
from pathlib import Path
from urllib.parse import urlsplit

SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "az")
CHECKSUMS = "AWS_REQUEST_CHECKSUM_CALCULATION"
os.environ.setdefault(CHECKSUMS, "WHEN_REQUIRED")  # before any S3 client exists (Ray workers inherit it)
READ_BACK = 64 << 10   # objects up to this size are read back after writing; larger ones are sized


class StorageError(FileNotFoundError):
    """A URI that cannot be read: its bucket, its credentials, its permissions or its scheme."""


def is_uri(path) -> bool:
    if isinstance(path, ObjectPath):
        return True
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def join(base, *parts: str) -> str:
    """``base`` with ``parts`` appended ('/'-separated for a URI, the OS's for a path)."""
    if is_uri(base):
        return posixpath.join(str(base).rstrip("/"), *parts)
    return str(Path(base).joinpath(*parts))


@functools.lru_cache(maxsize=None)
def _filesystem(scheme: str, authority: str, endpoint: str | None):  # (the endpoint keys the cache only)
    from pyarrow import fs

    # S3: a file is opened when written, so an object under 5 MiB is one PutObject, not a multipart
    # upload's three requests (a store's round trip each); a missing bucket is then met at close
    options = "?allow_delayed_open=true" if scheme == "s3" else ""
    try:
        return fs.FileSystem.from_uri(f"{scheme}://{authority}/{options}")[0]
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid / ArrowNotImplementedError / OSError
        raise StorageError(f"{scheme}://{authority}: no filesystem for this URI ({first_line(e)})") from None


def resolve(uri: str):
    """(pyarrow filesystem, path inside it) for a URI or a local path."""
    if not is_uri(uri):
        from pyarrow import fs

        return fs.LocalFileSystem(), str(Path(uri).expanduser().absolute())
    uri = str(uri)
    parts = urlsplit(uri)
    if parts.scheme not in SCHEMES:
        raise StorageError(f"{uri}: {parts.scheme}:// is not a storage scheme this engine reads "
                           f"({', '.join(s + '://' for s in SCHEMES)}, or a local path)")
    fs = _filesystem(parts.scheme, parts.netloc, os.environ.get("AWS_ENDPOINT_URL"))
    return fs, f"{parts.netloc}{parts.path}".rstrip("/")


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def storage_error(uri: str, e: BaseException) -> StorageError:
    """The one line for what went wrong reading ``uri`` (pyarrow's S3 messages carry the AWS error code)."""
    text = str(e)
    bucket = urlsplit(uri).netloc if is_uri(uri) else ""
    if "NO_SUCH_BUCKET" in text or "bucket does not exist" in text.lower():
        return StorageError(f"{uri}: the bucket {bucket!r} does not exist (or is not visible at this endpoint)")
    if "ACCESS_DENIED" in text or "AccessDenied" in text or "Forbidden" in text or "403" in text:
        return StorageError(f"{uri}: access denied (the credentials in use, from AWS_ACCESS_KEY_ID, AWS_PROFILE or "
                            "an instance role, may not read it)")
    if "INVALID_ACCESS_KEY" in text or "SIGNATURE_DOES_NOT_MATCH" in text.upper() or "credentials" in text.lower():
        return StorageError(f"{uri}: the credentials were refused or none were found (set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run where an instance role applies)")
    return StorageError(f"{uri}: {first_line(e)}")


def bucket_of(uri) -> str:
    """``SCHEME://BUCKET`` of a URI."""
    scheme, rest = str(uri).split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


def missing(root) -> str:
    """Why ``root`` (not there) is not there, in words: a path, a bucket, or a prefix with nothing under it."""
    if not is_uri(root):
        return f"path does not exist: {root}"
    bucket = bucket_of(root)
    if not exists(bucket):
        return f"the bucket {bucket.split('://', 1)[1]!r} does not exist (or is not visible at this endpoint): {root}"
    return f"nothing under {root} (an empty or mistyped prefix)"


def info(uri: str):
    """pyarrow's FileInfo for ``uri`` (type NotFound when it is not there); a bucket problem is a StorageError."""
    fs, path = resolve(uri)
    try:
        return fs.get_file_info(path)
    except OSError as e:
        raise storage_error(uri, e) from None


def kind(uri: str) -> str:
    """``file``, ``directory`` (a bucket's top level, or a prefix holding objects) or ``missing``."""
    from pyarrow import fs

    return {fs.FileType.File: "file", fs.FileType.Directory: "directory"}.get(info(uri).type, "missing")


def exists(uri: str) -> bool:
    return kind(uri) != "missing"


def is_dir(uri: str) -> bool:
    return kind(uri) == "directory"


def size(uri: str) -> int:
    got = info(uri)
    if got.size is None:
        raise FileNotFoundError(f"not found: {uri}")
    return got.size


def read_bytes(uri) -> bytes:
    if not is_uri(uri):
        with open(uri, "rb") as f:
            return f.read()
    fs, path = resolve(uri)
    try:
        with fs.open_input_file(path) as f:
            return f.read()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise storage_error(uri, e) from None


def listdir(uri: str) -> list[tuple[str, bool]]:
    """(name, is a directory) of the entries right under ``uri``, sorted by name."""
    from pyarrow import fs as pafs

    fs, path = resolve(uri)
    try:
        got = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    except FileNotFoundError:
        raise
    except OSError as e:
        raise storage_error(uri, e) from None
    return sorted((posixpath.basename(i.path.rstrip("/")), i.type == pafs.FileType.Directory) for i in got)


@functools.lru_cache(maxsize=1)
def reader_pool():
    """Threads that read objects for one process: object stores answer each GET after a round trip, so
    a batch's reads overlap instead of queueing (local files need no help)."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(16, thread_name_prefix="infu-read")


def parallel(work, items) -> list:
    """``work(item)`` for each of ``items``, at most 16 at once (object storage: each a round trip or more)."""
    from concurrent.futures import ThreadPoolExecutor

    items = list(items)
    if len(items) <= 1:
        return [work(i) for i in items]
    with ThreadPoolExecutor(min(16, len(items))) as pool:
        return list(pool.map(work, items))


def as_path(path) -> "Path | ObjectPath":
    """``path`` as a handle with pathlib's calls: an ``ObjectPath`` for a URI, else a ``Path``."""
    if isinstance(path, (Path, ObjectPath)):
        return path
    return ObjectPath(path) if is_uri(path) else Path(path).expanduser()


def location(root) -> "Path | ObjectPath":
    """A dataset root as the handle its adapter walks: a ``Path`` for a local folder, an ``ObjectPath``
    (the same calls) for a URI."""
    return ObjectPath(root) if is_uri(root) else Path(root).expanduser().resolve()


class ObjectPath:
    """The part of ``pathlib.Path`` the dataset adapters and the jobs' output folders use, over a URI.
    An object store has no folders: ``mkdir`` does nothing, and a prefix exists while it holds objects."""

    def __init__(self, uri: str):
        self.uri = str(uri).rstrip("/")

    def __truediv__(self, rel) -> "ObjectPath":
        return ObjectPath(join(self.uri, str(rel).replace(os.sep, "/").lstrip("/")))

    def __str__(self) -> str:
        return self.uri

    __repr__ = __str__

    def __eq__(self, other) -> bool:
        return isinstance(other, ObjectPath) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def __fspath__(self) -> str:  # never a local path: a call that wants one fails instead of writing one
        raise TypeError(f"{self.uri} is in object storage, not a local path")

    def __lt__(self, other: "ObjectPath") -> bool:
        return self.uri < other.uri

    @property
    def name(self) -> str:
        return posixpath.basename(self.uri)

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def stem(self) -> str:
        return posixpath.splitext(self.name)[0]

    @property
    def parent(self) -> "ObjectPath":
        return self.parents[0]

    def with_name(self, name: str) -> "ObjectPath":
        return self.parent / name

    def expanduser(self) -> "ObjectPath":
        return self

    resolve = absolute = expanduser

    def is_relative_to(self, other) -> bool:
        return isinstance(other, ObjectPath) and (self.uri == other.uri or self.uri.startswith(other.uri + "/"))

    def is_symlink(self) -> bool:
        return False

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to make: an object's prefix needs no folder."""

    def glob(self, pattern: str) -> list["ObjectPath"]:
        """The objects right under this prefix whose name matches ``pattern``."""
        import fnmatch

        from pyarrow import fs as pafs

        fs, path = resolve(self.uri)
        try:
            found = fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
        except OSError as e:
            raise storage_error(self.uri, e) from None
        return sorted(self / posixpath.basename(i.path) for i in found
                      if i.type == pafs.FileType.File and fnmatch.fnmatch(posixpath.basename(i.path), pattern))

    def write_bytes(self, data: bytes) -> None:
        """``data`` as the object, checked: read back when small, else sized."""
        fs, path = resolve(self.uri)
        try:
            with fs.open_output_stream(path) as f:
                f.write(data)
        except OSError as e:
            raise storage_error(self.uri, e) from None
        check_written(self.uri, len(data), data if len(data) <= READ_BACK else None)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def unlink(self, missing_ok: bool = False) -> None:
        fs, path = resolve(self.uri)
        try:
            fs.delete_file(path)
        except FileNotFoundError:
            if not missing_ok:
                raise
        except OSError as e:
            raise storage_error(self.uri, e) from None

    @property
    def parents(self) -> list["ObjectPath"]:
        scheme, rest = self.uri.split("://", 1)
        parts = rest.split("/")
        return [ObjectPath(f"{scheme}://{'/'.join(parts[:i])}") for i in range(len(parts) - 1, 0, -1)]

    def exists(self) -> bool:
        return exists(self.uri)

    def is_dir(self) -> bool:
        return is_dir(self.uri)

    def is_file(self) -> bool:
        return kind(self.uri) == "file"

    def rglob(self, pattern: str):
        """Objects under this prefix whose name matches ``pattern`` (one recursive listing)."""
        import fnmatch

        from pyarrow import fs as pafs

        fs, path = resolve(self.uri)
        scheme = self.uri.split("://", 1)[0]
        found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        return sorted(ObjectPath(f"{scheme}://{i.path}") for i in found
                      if i.type == pafs.FileType.File and fnmatch.fnmatch(posixpath.basename(i.path), pattern))

    def iterdir(self):
        return (self / n for n, _ in listdir(self.uri))

    def read_bytes(self) -> bytes:
        return read_bytes(self.uri)

    def read_text(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return read_bytes(self.uri).decode(encoding, errors)

    def open(self, mode: str = "r", newline=None, encoding: str = "utf-8", errors: str = "strict"):
        import io

        if mode not in ("r", "rb"):
            raise ValueError(f"{self.uri}: opened for reading only")
        data = io.BytesIO(read_bytes(self.uri))
        return data if mode == "rb" else io.TextIOWrapper(data, encoding=encoding, errors=errors, newline=newline)


def check_written(uri: str, size: int, data: bytes | None = None) -> None:
    """The object ``uri`` holds the ``size`` bytes (``data``, when given) just written, or a
    ``StorageError`` naming what the store did and the setting that fixes it."""
    got = read_bytes(uri) if data is not None else None
    kept = len(got) if got is not None else info(uri).size
    if kept == size and (data is None or got == data):
        return
    framed = got is not None and re.match(rb"[0-9a-fA-F]+\r\n", got) and b"x-amz-checksum" in got
    what = ("it kept the aws-chunked upload's framing and checksum trailer as the object's bytes" if framed
            else f"it holds {kept} bytes, not the {size} written")
    raise StorageError(f"{uri}: the store did not keep what was written ({what}): a store that does not support "
                       f"trailing checksums needs {CHECKSUMS}=WHEN_REQUIRED (now {os.environ.get(CHECKSUMS)})")


def remove_tree(path) -> None:
    """Delete ``path`` and everything under it (every object under the prefix), if it is there."""
    if not is_uri(path):
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        return
    fs, inner = resolve(str(path))
    try:
        fs.delete_dir_contents(inner, missing_dir_ok=True)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise storage_error(str(path), e) from None


def copy(src, dst) -> None:
    """``src`` to ``dst`` within one store (an object store copies on its side: no download; checked)."""
    fs, a = resolve(str(src))
    _, b = resolve(str(dst))
    try:
        fs.copy_file(a, b)
    except OSError as e:
        raise storage_error(str(src), e) from None
    if is_uri(dst):
        check_written(str(dst), info(str(src)).size)


def arrow(files) -> tuple:
    """(pyarrow filesystem, paths inside it) for a list of local paths or URIs of one store."""
    resolved = [resolve(str(f)) for f in files]
    if not resolved:
        return None, []
    return resolved[0][0], [p for _, p in resolved]


def read_parquet(path, **kw):
    """A Parquet file (local or an object) as a table."""
    import pyarrow.parquet as pq

    fs, inner = resolve(str(path))
    return pq.read_table(inner, filesystem=fs, **kw)


def parquet_file(path):
    """A Parquet file (local or an object) opened for reading its footer and row groups."""
    import pyarrow.parquet as pq

    if not is_uri(path):
        return pq.ParquetFile(str(path))
    fs, inner = resolve(str(path))
    return pq.ParquetFile(fs.open_input_file(inner))


def write_parquet(table, path, **kw) -> None:
    """``table`` to ``path``; an object store makes an object visible whole once it is written (and
    it is checked, ``ObjectPath.write_bytes``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not is_uri(path):
        pq.write_table(table, str(path), **kw)
        return
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, **kw)
    ObjectPath(str(path)).write_bytes(buf.getvalue().to_pybytes())


def download_tree(src, dest: Path, skip: tuple = ()) -> Path:
    """Every object under ``src`` copied to the local folder ``dest``, streamed, except those named in
    ``skip``; returns ``dest``."""
    for rel in objects(src):
        if posixpath.basename(rel) not in skip:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            download(join(src, rel), dest / rel)
    return dest


def upload(src: Path, dst) -> None:
    """A local file, or a folder with everything under it, to ``dst`` (streamed; a folder's earlier
    objects under ``dst`` are removed first, so that ``dst`` holds exactly what ``src`` does)."""
    from pyarrow import fs as pafs

    fs, inner = resolve(str(dst))
    if Path(src).is_dir():
        remove_tree(dst)
    try:
        pafs.copy_files(str(src), inner, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    except OSError as e:
        raise storage_error(str(dst), e) from None
    if is_uri(dst):  # every object the size of its file
        files = [Path(src)] if not Path(src).is_dir() else [p for p in Path(src).rglob("*") if p.is_file()]
        kept = objects(dst)
        for f in files:
            rel = "" if f == Path(src) else f.relative_to(src).as_posix()
            if kept.get(rel, (None,))[0] != f.stat().st_size:
                check_written(join(str(dst), rel) if rel else str(dst), f.stat().st_size)


def cached_copy(uri) -> Path:
    """A local copy of the object ``uri`` for readers that memory-map files (safetensors), downloaded once per
    machine into ``~/.cache/infu/objects`` and keyed by the object's size and time: a changed object is
    fetched again. A local path is returned as it is."""
    import hashlib

    if not is_uri(uri):
        return Path(uri)
    got = info(str(uri))
    if got.size is None:
        raise FileNotFoundError(f"not found: {uri}")
    key = hashlib.sha1(f"{uri}|{got.size}|{got.mtime_ns}".encode()).hexdigest()[:20]
    cache = cache_home() / "objects" / key
    path = cache / posixpath.basename(str(uri))
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two workers of one machine may fetch it at once
        download(str(uri), tmp)
        tmp.replace(path)
    return path


def cache_home() -> Path:
    """The engine's own cache on this machine: ``$XDG_CACHE_HOME/infu`` (``~/.cache/infu``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "infu"


def objects(uri) -> dict[str, tuple[int, int]]:
    """Every object under ``uri`` as {name relative to it: (size, time in ns)}, or ``{"": ...}`` when
    ``uri`` is one object; {} when there is nothing."""
    from pyarrow import fs as pafs

    got = info(str(uri))
    if got.type == pafs.FileType.File:
        return {"": (got.size, got.mtime_ns)}
    fs, inner = resolve(str(uri))
    try:
        found = fs.get_file_info(pafs.FileSelector(inner, recursive=True, allow_not_found=True))
    except OSError as e:
        raise storage_error(str(uri), e) from None
    return {posixpath.relpath(f.path, inner): (f.size, f.mtime_ns) for f in found if f.type == pafs.FileType.File}


def download(uri, dest: Path) -> None:
    """The object ``uri`` to the local file ``dest``, streamed."""
    from pyarrow import fs as pafs

    fs, inner = resolve(str(uri))
    try:
        pafs.copy_files(inner, str(dest), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    except OSError as e:
        raise storage_error(uri, e) from None


def local_copy(uri):
    """A context giving a local path for ``uri`` (a temporary download for a URI): for readers such as
    OpenCV's video capture that only open files."""
    import contextlib
    import tempfile

    if not is_uri(uri):
        return contextlib.nullcontext(str(uri))

    @contextlib.contextmanager
    def downloaded():
        with tempfile.NamedTemporaryFile(suffix=posixpath.splitext(uri)[1]) as f:
            f.write(read_bytes(uri))
            f.flush()
            yield f.name

    return downloaded()


# ------------------------------------------------------------------------- exclusive writes (S3) --
# A record only one run may create (an output's live record) needs a write that fails when the object is
# there, or is no longer the version read: S3's conditional writes (If-None-Match / If-Match), which
# pyarrow does not expose; boto3 does. Other schemes, and stores that ignore the conditions, have none.
def _s3():
    """A boto3 S3 client, one per endpoint and credentials in the environment (boto3 reads them itself)."""
    return _s3_client(*(os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_PROFILE")))


@functools.lru_cache(maxsize=None)
def _s3_client(*settings):  # (the settings key the cache only)
    import boto3

    return boto3.session.Session().client("s3")


def _bucket_key(uri: str) -> tuple[str, str]:
    parts = urlsplit(str(uri))
    return parts.netloc, parts.path.lstrip("/")


def put_if(uri: str, data: bytes, *, etag: str | None = None) -> str | None:
    """``data`` as the object ``uri`` only if there is none (``etag`` None) or it is still the version
    ``etag``: its new ETag, or None when the condition did not hold (another writer won)."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _bucket_key(uri)
    cond = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    try:
        return _s3().put_object(Bucket=bucket, Key=key, Body=data, **cond)["ETag"]
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict") or \
                e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
            return None
        raise storage_error(uri, e) from None
    except BotoCoreError as e:  # no credentials, no connection: one line, as pyarrow's errors are
        raise storage_error(uri, e) from None


def read_versioned(uri: str) -> tuple[bytes, str, float] | None:
    """(the object's bytes, its ETag, seconds since it was written by the store's own clock), or None
    when it is not there. Both times come from the store: no host's clock is trusted."""
    from email.utils import parsedate_to_datetime

    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = _bucket_key(uri)
    try:
        got = _s3().get_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise storage_error(uri, e) from None
    except BotoCoreError as e:
        raise storage_error(uri, e) from None
    now = parsedate_to_datetime(got["ResponseMetadata"]["HTTPHeaders"]["date"])
    return got["Body"].read(), got["ETag"], max(0.0, (now - got["LastModified"]).total_seconds())


def conditional_writes(prefix_uri: str) -> bool:
    """Whether the store holding ``prefix_uri`` refuses a conditional write whose condition fails: probed
    once per bucket and process with a throwaway object under ``prefix_uri`` (a prefix the caller owns);
    False for any scheme but s3://."""
    import uuid

    if urlsplit(prefix_uri).scheme != "s3":
        return False
    bucket = bucket_of(prefix_uri)
    if bucket not in _CONDITIONAL:
        probe = f"{prefix_uri.rstrip('/')}/.infu-probe-{uuid.uuid4().hex[:12]}"
        try:
            first = put_if(probe, b"1")
            _CONDITIONAL[bucket] = first is not None and put_if(probe, b"2") is None
        finally:  # (boto3's delete: pyarrow's would leave a folder marker in its place)
            _s3().delete_object(Bucket=_bucket_key(probe)[0], Key=_bucket_key(probe)[1])
    return _CONDITIONAL[bucket]


_CONDITIONAL: dict[str, bool] = {}
