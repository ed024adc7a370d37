"""Models by name: the one reference every config key and command-line flag naming a model takes.

- ``hf://OWNER/NAME[@REVISION][/PATH/IN/REPO]``: a Hub model repo (a branch, tag or commit; a revision
  holding ``/`` is written ``%2F``), optionally a file or folder inside it. Fetched by huggingface_hub
  itself into its standard cache (``HF_HOME`` / ``HF_HUB_CACHE``, shared with diffusers and ``hf
  download``); ``HF_ENDPOINT``, ``HF_TOKEN`` and its offline switch (``HF_HUB_OFFLINE``,
  ``TRANSFORMERS_OFFLINE``) are honoured.
- ``https://HOST/PATH/FILE#sha256=HEX``: one file outside the Hub (facexlib's ArcFace), kept in
  ``$HF_HOME/infu/urls/<sha256>/`` and never used unless its bytes match the hash.
- ``s3://BUCKET/KEY`` (any scheme of ``infu_model/storage.py``): a file or folder in object storage,
  copied into ``$HF_HOME/infu/stored/``, each file fetched again when its object changed.
- ``infu://NAME``: a model that ships inside this package (``infu_model/bundled/NAME``: the watermark
  classifier), each file checked against the sha256 ``infu_model/bundled`` records before it is used.
- anything else: a local file or folder (``~`` expanded).

What is ours on top of huggingface_hub: the reference syntax, each loader's *selection* of the files it
reads (``FILE``, ``FOLDER``, ``DIFFUSERS``, ``patterns(...)``, ``infu_weights(variant)``: FLUX.1-dev's
diffusers folders, not its 23 GB single file), the hash check of every file fetched, the one-line
errors (``ModelError``, a ``FileNotFoundError``) and the fetch once per node in Ray workers.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import posixpath
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from infu_model.storage import SCHEMES, first_line

HUB = "hf://"
BUNDLED = "infu://"
FETCH_ENV = "INFU_MODELS_FETCH"   # "node" in Ray workers: see resolve()
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ModelError(FileNotFoundError):
    """A model reference that cannot be used; the message is one line saying what to do."""


class ModelNotCached(ModelError):
    """Not in the cache, and this process may not (or cannot) fetch it."""


class ModelCorrupt(ModelError):
    """Bytes that do not match their published hash (removed from the cache)."""


# --------------------------------------------------------------------------------------- the reference --
@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference; ``str(ref)`` is the text it was written as."""
    text: str
    kind: str                      # local | hub | url | storage | bundled
    location: str                  # the local path, the Hub repo id, or the URL without its fragment
    revision: str = "main"
    path: str = ""                 # inside the Hub repo
    sha256: str | None = None      # url

    @classmethod
    def parse(cls, text) -> "ModelRef":
        if isinstance(text, ModelRef):
            return text
        if isinstance(text, os.PathLike):
            text = os.fspath(text)
        if not isinstance(text, str) or not text.strip():
            raise ModelError(f"a model reference must be a path, hf://OWNER/NAME[@REVISION][/PATH] or "
                             f"https://...#sha256=HEX, not {text!r}")
        text = text.strip()
        if text.startswith(HUB):
            return cls._hub(text)
        if re.match(r"https?://", text):
            return cls._url(text)
        if text.startswith(BUNDLED):
            from infu_model import bundled

            name = _bundled_name(text)
            if name not in bundled.SHA256:
                raise ModelError(f"{text}: no such model ships in this package (it has {', '.join(map(BUNDLED.__add__, bundled.SHA256))})")
            return cls(text, "bundled", str(bundled.folder(name)))
        if text.split("://", 1)[0] in SCHEMES:
            return cls(text, "storage", text.rstrip("/"))
        if re.match(r"[a-z][a-z0-9+.-]*://", text):
            raise ModelError(f"{text}: unknown scheme (a model is a path, hf://OWNER/NAME[@REVISION][/PATH], "
                             "https://...#sha256=HEX, s3://BUCKET/KEY or infu://NAME)")
        return cls(text, "local", text)

    @classmethod
    def _hub(cls, text: str) -> "ModelRef":
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        parts = text[len(HUB):].split("/")
        syntax = "hf://OWNER/NAME[@REVISION][/PATH/IN/REPO]"
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise ModelError(f"{text}: a Hub model is written {syntax}")
        name, _, revision = parts[1].partition("@")
        repo, path = f"{parts[0]}/{name}", "/".join(parts[2:]).strip("/")
        if "@" in parts[1] and not revision:
            raise ModelError(f"{text}: empty revision after '@' ({syntax})")
        try:
            validate_repo_id(repo)
        except HFValidationError as e:
            raise ModelError(f"{text}: {repo!r} is not a Hub repo id ({str(e).splitlines()[0]})") from None
        if any(p in ("", ".", "..") for p in path.split("/")) and path:
            raise ModelError(f"{text}: the path inside the repo may not hold empty, '.' or '..' parts")
        return cls(text, "hub", repo, urllib.parse.unquote(revision or "main"), path)

    @classmethod
    def _url(cls, text: str) -> "ModelRef":
        url, _, fragment = text.partition("#")
        digest = fragment[len("sha256="):].lower() if fragment.startswith("sha256=") else ""
        if not _SHA256.fullmatch(digest):
            raise ModelError(f"{text}: a model fetched by URL needs its hash: {url}#sha256=<64 hex digits>")
        if not posixpath.basename(urllib.parse.urlparse(url).path):
            raise ModelError(f"{text}: the URL names no file")
        return cls(text, "url", url, sha256=digest)

    def __str__(self) -> str:
        return self.text

    @property
    def key(self) -> str:
        """What names this model wherever the job runs from: a local path made absolute, else the text."""
        return str(Path(self.location).expanduser().resolve()) if self.kind == "local" else self.text

    @property
    def fetched(self) -> bool:
        """Whether the model comes from elsewhere into a cache (not a local path nor one this package ships)."""
        return self.kind in ("hub", "url", "storage")

    @property
    def repo_page(self) -> str:
        return f"{_endpoint()}/{self.location}"

    def at(self, path: str) -> "ModelRef":
        """The reference to ``path`` inside this one (a Hub subfolder or a local sub-path)."""
        if self.kind == "hub":
            rev = "" if self.revision == "main" else "@" + urllib.parse.quote(self.revision, safe="")
            inner = "/".join(p for p in (self.path, path) if p)
            return ModelRef.parse(f"{HUB}{self.location}{rev}/{inner}")
        if self.kind == "local":
            return ModelRef.parse(str(Path(self.location) / path))
        if self.kind == "storage":
            return ModelRef.parse(f"{self.location}/{path}")
        raise ModelError(f"{self}: a URL names one file; it has no {path!r} inside")


# ------------------------------------------------------------------------------------- selections --
# A selection picks, from the files inside a reference's folder (paths relative to it), the ones its
# loader reads; ``read(name)`` gives a small file's bytes when the choice depends on it.
Selection = Callable[[list[str], Callable[[str], bytes]], list[str]]
_OTHER_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".ot", ".onnx", ".onnx_data", ".gguf",
                  ".tflite", ".mlmodel", ".pb")
_NEVER = (".h5", ".msgpack", ".ot", ".tflite", ".mlmodel", ".pb", ".gguf", ".jpg", ".jpeg", ".png", ".gif",
          ".webp", ".mp4", ".mov", ".avi", ".pdf")


def FOLDER(names: list[str], read=None) -> list[str]:
    """What ``from_pretrained`` reads from a transformers / diffusers model folder: in each directory
    that has safetensors weights no other weight format, and nothing of TensorFlow, Flax, GGUF or media."""
    with_st = {posixpath.dirname(n) for n in names if n.endswith(".safetensors")}
    return [n for n in names if not n.endswith(_NEVER) and not posixpath.basename(n).startswith(".")
            and not (posixpath.dirname(n) in with_st and n.endswith(_OTHER_WEIGHTS))]


def AUTO(names: list[str], read) -> list[str]:
    """A diffusers pipeline folder as ``DIFFUSERS`` reads it, anything else as ``FOLDER``."""
    return DIFFUSERS(names, read) if "model_index.json" in names else FOLDER(names)


def FILE(names: list[str], read=None) -> list[str]:
    """A reference that names one file (the listing holds just that file, as '')."""
    if names != [""]:
        raise _SelectionError("names a folder, where a single file is expected")
    return names


def DIFFUSERS(names: list[str], read) -> list[str]:
    """A diffusers pipeline folder: ``model_index.json`` and its components' folders only (never the
    single-file checkpoints some repos keep beside them, like FLUX.1-dev's 23 GB one)."""
    if "model_index.json" not in names:
        raise _SelectionError("is not a diffusers pipeline folder (no model_index.json)")
    index = json.loads(read("model_index.json"))
    parts = sorted(k for k, v in index.items() if isinstance(v, list) and v and v[0] is not None)
    return ["model_index.json"] + FOLDER([n for n in names if n.split("/", 1)[0] in parts])


@dataclass(frozen=True)
class patterns:
    """The files matching any of ``globs`` (``*`` crosses folders)."""
    globs: tuple[str, ...]

    def __init__(self, *globs: str):
        object.__setattr__(self, "globs", globs)

    def __call__(self, names, read=None) -> list[str]:
        chosen = [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in self.globs)]
        if not chosen:
            raise _SelectionError(f"holds nothing matching {', '.join(self.globs)}")
        return chosen


@dataclass(frozen=True)
class infu_weights:
    """InfU weights: a published variant folder (``InfuseNetModel/`` + ``image_proj_model.bin``), our
    native layout (``infusenet/`` + ``image_proj/``), or a folder of published variants (``variant``;
    with the ``infu.json`` beside them, where our weights say which face backend they need)."""
    variant: str

    def __call__(self, names, read=None) -> list[str]:
        if {n.split("/", 1)[0] for n in names} & {"InfuseNetModel", "infusenet"}:
            return FOLDER(names)
        inside = [n[len(self.variant) + 1:] for n in names if n.startswith(self.variant + "/")]
        if "InfuseNetModel" not in {n.split("/", 1)[0] for n in inside}:
            raise _SelectionError(f"holds neither InfU weights nor a {self.variant}/InfuseNetModel folder")
        return [f"{self.variant}/{n}" for n in FOLDER(inside)] + [n for n in names if n == "infu.json"]


@dataclass(frozen=True)
class Need:
    """A model a job loads: its reference, the files its loader reads, what it is for, and ``then``:
    the models that depend on what this one's files say (InfU weights name their face backend)."""
    ref: ModelRef
    selection: Selection = FOLDER
    purpose: str = ""
    then: Callable[[Path], list["Need"]] | None = None

    @classmethod
    def of(cls, ref, selection: Selection = FOLDER, purpose: str = "", then=None) -> list["Need"]:
        """``[Need]`` for a configured reference, ``[]`` when it is not set."""
        return [] if ref in (None, "") else [cls(ModelRef.parse(ref), selection, purpose, then)]


class _SelectionError(ValueError):
    """The files a selection needs are not there (turned into a ModelError naming the reference)."""


# --------------------------------------------------------------------------------------- resolving --
def resolve(ref, selection: Selection = FOLDER, fetch: bool | None = None) -> Path:
    """The local path of ``ref`` with the files ``selection`` picks present. ``fetch``: True asks the
    Hub for the revision's files and fetches what is missing (a job's driver); False reads the cache
    only; None follows ``INFU_MODELS_FETCH`` (``node`` in Ray workers: the cache first, and what this
    node lacks fetched once, under a lock, through the same code). Every fetched file is checked
    against its published hash before it is returned."""
    ref = ModelRef.parse(ref)
    if ref.kind == "local":
        return _local(ref)
    if ref.kind == "bundled":
        return _bundled(ref)
    if fetch is None and os.environ.get(FETCH_ENV) == "node":
        try:
            return resolve(ref, selection, fetch=False)
        except ModelNotCached:
            with _node_lock(ref):  # the other actors of this node wait, then find it cached
                try:
                    return resolve(ref, selection, fetch=False)
                except ModelNotCached:
                    return resolve(ref, selection, fetch=True)
    fetch = fetch is not False
    if ref.kind == "url":
        return _url_file(ref, fetch and not offline())
    if ref.kind == "storage":  # (not the Hub's: HF_HUB_OFFLINE does not apply)
        return _stored(ref, selection, fetch)
    return _hub(ref, selection, fetch and not offline())


def offline() -> bool:
    """huggingface_hub's own switch: HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE."""
    from huggingface_hub import is_offline_mode

    return is_offline_mode()


# Where a worker's token comes from when it fetches (pipelines.models sets it on a cluster's workers:
# the driver's token, never put in the environment Ray's dashboard shows); None: huggingface_hub's own.
token_source: Callable[[], str | None] | None = None


def _token() -> str | None:
    return token_source() if token_source is not None else None


def hub_cache() -> Path:
    """huggingface_hub's cache, read from the environment at each call (tests and users may change it)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    return hf_home() / "hub"


def hf_home() -> Path:
    return Path(os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "huggingface"
                ).expanduser()


def _endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _node_lock(ref: ModelRef):
    from filelock import FileLock

    path = hf_home() / "infu" / "locks" / hashlib.sha1(ref.text.encode()).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))


def _local(ref: ModelRef) -> Path:
    p = Path(ref.location).expanduser()
    if not p.exists():
        hint = ""
        if re.fullmatch(r"[\w.-]+/[\w.-]+(/.*)?", ref.location) and not ref.location.startswith((".", "/")):
            hint = f" (a Hub model is written hf://{ref.location})"
        raise ModelError(f"model not found: {p}{hint}")
    return p


def _bundled_name(text: str) -> str:
    return text[len(BUNDLED):].strip("/")


def _bundled(ref: ModelRef) -> Path:
    """The package's own copy, each file checked against the sha256 the package records."""
    if wrong := _bundled_mismatches(ref):
        raise ModelCorrupt(f"{ref}: {wrong[0]} (reinstall the package)")
    return Path(ref.location)


def _bundled_mismatches(ref: ModelRef) -> list[str]:
    from infu_model import bundled

    folder, wrong = Path(ref.location), []
    for name, expected in bundled.SHA256[_bundled_name(ref.text)].items():
        f = folder / name
        if not f.is_file():
            wrong.append(f"{name} is missing from {folder}")
        elif _digest(f, hashlib.sha256()) != expected:
            wrong.append(f"{name} does not match the sha256 the package records")
    return wrong


def _not_cached(ref: ModelRef, why: str) -> ModelNotCached:
    where = {"hub": hub_cache, "url": _url_dir, "storage": _stored_dir}[ref.kind]()
    return ModelNotCached(f"{ref} is not in the model cache ({where})"
                          f" and {why}: fetch it with `infu models pull {ref}` where the Hub can be reached")


def _offline_why() -> str:
    return "HF_HUB_OFFLINE=1 forbids fetching" if offline() else "this process reads the cache only"


# ---------------------------------------------------------------------------------------------- Hub --
@dataclass
class _Revision:
    """A reference's revision as a commit, and the paths of the files in it: from the Hub when it
    answers, else from huggingface_hub's cache (``online`` says which)."""
    commit: str
    paths: list[str]
    online: bool
    sizes: dict = field(default_factory=dict)   # path -> bytes (from the Hub)


def _api():
    from huggingface_hub import HfApi

    return HfApi(endpoint=_endpoint(), token=_token())


def _revision(ref: ModelRef, online: bool, why: str | None = None) -> _Revision:
    from huggingface_hub import RepoFile, get_cached_repo_tree
    from huggingface_hub.errors import CachedRepoTreeNotFoundError, RevisionResolutionError

    api, why = _api(), why or (_offline_why() if not online else "the Hub cannot be reached")
    try:
        # a Hub that answers 5xx fails this one request at once; resolve_revision would fall back on the
        # cached ref without saying so, and the listing after it would retry for about 20 s
        if online:
            api.repo_info(ref.location, revision=ref.revision)
        commit = api.resolve_revision(ref.location, revision=ref.revision, cache_dir=hub_cache(),
                                      local_files_only=not online).resolved
        if online:
            tree = [f for f in api.list_repo_tree(ref.location, recursive=True, revision=commit)
                    if isinstance(f, RepoFile)]
            return _Revision(commit, [f.path for f in tree], True, {f.path: f.size for f in tree})
    except RevisionResolutionError:
        raise _not_cached(ref, why) from None
    except Exception as e:  # noqa: BLE001 - the Hub went away between two calls, or answered an error
        if not _unreachable(e):
            raise _hub_error(ref, e) from None
        return _revision(ref, online=False, why="the Hub cannot be reached")
    snapshot = _snapshot(ref, commit)
    if not snapshot.is_dir():
        raise _not_cached(ref, why)
    try:
        paths = [f.path for f in get_cached_repo_tree(ref.location, revision=commit, cache_dir=hub_cache())]
    except CachedRepoTreeNotFoundError:  # fetched by an older tool: what the snapshot holds is what there is
        paths = [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]
    return _Revision(commit, paths, False)


def _unreachable(e: Exception) -> bool:
    """No answer, offline, or a 5xx: what the cache holds still serves."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(e, (httpx2.TransportError, OfflineModeIsEnabled)):
        return True
    return isinstance(e, HfHubHTTPError) and getattr(e.response, "status_code", 0) >= 500


def _hub(ref: ModelRef, selection: Selection, fetch: bool) -> Path:
    rev = _revision(ref, online=fetch)
    wanted = _select(ref, rev, selection)
    missing = [f for f in wanted if not _cached(ref, rev.commit, f)]
    if missing and not rev.online:
        why = "the Hub cannot be reached" if fetch else _offline_why()
        raise _not_cached(ref, f"{len(missing)} of its files are missing ({missing[0]}, ...); {why}"
                          if len(missing) > 1 else f"{missing[0]} is missing; {why}")
    if missing:
        _download(ref, rev.commit, missing)
    snapshot = _snapshot(ref, rev.commit)
    return snapshot / ref.path if ref.path else snapshot


def _snapshot(ref: ModelRef, commit: str) -> Path:
    return hub_cache() / f"models--{ref.location.replace('/', '--')}" / "snapshots" / commit


def _cached(ref: ModelRef, commit: str, path: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(ref.location, path, cache_dir=hub_cache(), revision=commit), str)


def _select(ref: ModelRef, rev: _Revision, selection: Selection) -> list[str]:
    if ref.path in rev.paths:
        inside = [""]
    else:
        prefix = f"{ref.path}/" if ref.path else ""
        inside = [f[len(prefix):] for f in rev.paths if f.startswith(prefix)]
    if not inside:
        raise ModelError(f"{ref}: {ref.location} has no file or folder {ref.path!r} at revision {ref.revision}")

    def read(name: str) -> bytes:  # a small file the choice depends on (model_index.json)
        path = posixpath.join(ref.path, name) if ref.path else name
        if not _cached(ref, rev.commit, path):
            if not rev.online:
                raise _not_cached(ref, f"{path} is missing; {_offline_why()}")
            _download(ref, rev.commit, [path])
        return (_snapshot(ref, rev.commit) / path).read_bytes()

    try:
        chosen = selection(inside, read)
    except _SelectionError as e:
        raise ModelError(f"{ref} {e}") from None
    return [posixpath.join(ref.path, n) if n else ref.path for n in chosen]


def _download(ref: ModelRef, commit: str, files: list[str]) -> None:
    """``files`` at ``commit`` into the cache with huggingface_hub, then each checked against the hash
    it was published under; a mismatch is removed before anything can load it."""
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(ref.location, revision=commit, allow_patterns=files, cache_dir=hub_cache(),
                          endpoint=_endpoint(), token=_token())
    except Exception as e:  # noqa: BLE001 - huggingface_hub's HTTP errors, or OSError from the disk
        raise _hub_error(ref, e) from None
    for f in files:
        problem = _check(_snapshot(ref, commit) / f)
        if problem:
            _remove_cached(_snapshot(ref, commit) / f)
            raise ModelCorrupt(f"{ref}: {f} {problem}: removed from the cache, never loaded; fetch it again, "
                               "and if it fails again the download is being altered on the way")


def _check(link: Path) -> str | None:
    """A cached file against the hash huggingface_hub stored it under (its blob's name is the ETag the
    Hub published: the sha256 of an LFS file, the git blob id of any other); None when it matches or
    there is no such name to check against (a cache without symlinks)."""
    name = link.resolve().name
    if _SHA256.fullmatch(name):
        return _mismatch("sha256", name, _digest(link, hashlib.sha256()))
    if _COMMIT.fullmatch(name):
        return _mismatch("git-sha1", name, _digest(link, hashlib.sha1(b"blob %d\0" % link.stat().st_size)))
    return None


def _mismatch(algorithm: str, expected: str, got: str) -> str | None:
    what = "git blob id" if algorithm == "git-sha1" else algorithm
    return None if got == expected else \
        f"does not match its published {what} (expected {expected[:12]}..., got {got[:12]}...)"


def _remove_cached(link: Path) -> None:
    for p in {link.resolve(), link}:
        p.unlink(missing_ok=True)


def _digest(path: Path, h) -> str:
    """``h`` (a hashlib object, perhaps primed) over the file's bytes, read a MiB at a time."""
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _hub_error(ref: ModelRef, e) -> ModelError:
    from huggingface_hub.errors import (GatedRepoError, RemoteEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    login = "log in with `hf auth login` or set HF_TOKEN"
    if isinstance(e, GatedRepoError):
        return ModelError(f"{ref}: {ref.location} is gated: accept its licence on {ref.repo_page} and {login}")
    if isinstance(e, RepositoryNotFoundError):
        return ModelError(f"{ref}: no model repo {ref.location} on {_endpoint()} (check the name; if it is "
                          f"private, {login})")
    if isinstance(e, RevisionNotFoundError):
        return ModelError(f"{ref}: {ref.location} has no revision {ref.revision!r}")
    if isinstance(e, RemoteEntryNotFoundError):
        return ModelError(f"{ref}: {ref.location} has no file {ref.path!r} at revision {ref.revision}")
    if _unreachable(e):
        return ModelNotCached(f"{ref}: the Hub cannot be reached ({first_line(e)})")
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status is None:  # not an answer of the Hub's: the disk, or the connection
        return ModelError(f"{ref}: fetching failed ({type(e).__name__}: {first_line(e)})")
    if status in (401, 403):
        return ModelError(f"{ref}: the Hub refused access ({status}): {login}, and accept the model's licence "
                          f"on {ref.repo_page} if it asks for one")
    return ModelError(f"{ref}: the Hub answered {status} ({first_line(e)})")


# --------------------------------------------------------------------------------- describe, verify --
@dataclass
class Status:
    """What ``infu models list`` says of a reference: its state, where it is cached, the size of the
    files its loader reads, licence and gate; ``problem``: why it cannot be fetched (one line)."""
    cached: bool
    where: Path | None = None
    size: int | None = None
    license: str | None = None
    gated: bool | None = None
    problem: str | None = None


def describe(ref, selection: Selection = AUTO, online: bool = True) -> Status:
    """The reference's state in the cache; with ``online`` (and not offline) what the Hub says of a
    model not cached: the size of the files its loader would fetch, licence and gate, or why it cannot
    be fetched (no such repo, gated...). Never fetches weights (``model_index.json`` may be fetched to
    size a diffusers folder) and never raises for the model's own state."""
    ref = ModelRef.parse(ref)
    if ref.kind in ("local", "bundled"):
        p = Path(ref.location).expanduser()
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else []
        return Status(p.exists(), p if p.exists() else None, sum(f.stat().st_size for f in files) or None)
    if ref.kind == "url":
        p = _url_dir() / ref.sha256 / posixpath.basename(urllib.parse.urlparse(ref.location).path)
        return Status(p.is_file(), p if p.is_file() else None, p.stat().st_size if p.is_file() else None)
    if ref.kind == "storage":
        p, record = _stored_path(ref)
        cached = record.is_file()
        return Status(cached, p if cached else None,
                      sum(size for size, _ in json.loads(record.read_text()).values()) if cached else None)
    try:
        where = resolve(ref, selection, fetch=False)
        files = [where] if where.is_file() else [f for f in where.rglob("*") if f.is_file()]
        return Status(True, where, sum(f.stat().st_size for f in files))
    except ModelError:
        if not online or offline():
            return Status(False)
    try:
        info = _api().model_info(ref.location, revision=ref.revision)
        rev = _revision(ref, online=True)
        size = sum(rev.sizes.get(f, 0) for f in _select(ref, rev, selection)) if rev.online else None
    except Exception as e:  # noqa: BLE001 - ours, or huggingface_hub's HTTP errors: one line each
        e = e if isinstance(e, ModelError) else _hub_error(ref, e)
        return Status(False, problem=str(e).removeprefix(f"{ref}: ").removeprefix(f"{ref} "))
    card = getattr(info, "card_data", None)
    return Status(False, None, size, getattr(card, "license", None) if card is not None else None,
                  bool(getattr(info, "gated", False)))


def verify(ref) -> list[str]:
    """Every cached file of ``ref`` against its published hash: the Hub's own listing through
    ``HfApi.verify_repo_checksums`` when the Hub answers, else the hash each file was stored under.
    Returns one line per file proven wrong, each removed from the cache (a pull fetches it again);
    nothing else is ever removed."""
    ref = ModelRef.parse(ref)
    if ref.kind in ("local", "storage"):  # (a stored copy is checked against its objects at each fetch)
        return []
    if ref.kind == "bundled":  # (never removed: they are the package's files)
        return [f"{ref}: {line} (reinstall the package)" for line in _bundled_mismatches(ref)]
    if ref.kind == "url":
        p = _url_dir() / ref.sha256 / posixpath.basename(urllib.parse.urlparse(ref.location).path)
        if not p.is_file():
            raise _not_cached(ref, "there is nothing to verify")
        if _digest(p, hashlib.sha256()) != ref.sha256:
            p.unlink()
            return [f"{ref}: does not match its sha256: removed"]
        return []
    rev = _revision(ref, online=False)  # the commit the cache holds, even where the branch has moved on
    snapshot = _snapshot(ref, rev.commit)
    mine = [f for f in rev.paths if (f == ref.path or f.startswith(f"{ref.path}/") or not ref.path)
            and (snapshot / f).exists()]
    wrong = None
    if not offline():
        try:
            found = _api().verify_repo_checksums(ref.location, revision=rev.commit, cache_dir=hub_cache())
            wrong = {m["path"]: _mismatch(m["algorithm"], m["expected"], m["actual"]) for m in found.mismatches}
        except Exception as e:  # noqa: BLE001 - the Hub's errors, one line; unreachable: the offline check
            if not _unreachable(e):
                raise _hub_error(ref, e) from None
    if wrong is None:
        wrong = {f: _check(snapshot / f) for f in mine}
    bad = []
    for f in mine:
        if wrong.get(f):
            _remove_cached(snapshot / f)
            bad.append(f"{ref}: {f} {wrong[f]}: removed")
    return bad


# ------------------------------------------------------------------------------------ object storage --
def _stored_dir() -> Path:
    return hf_home() / "infu" / "stored"


def _stored_path(ref: ModelRef) -> tuple[Path, Path]:
    """(the local copy of a model in object storage, the record of the objects it was copied from)."""
    home = _stored_dir() / hashlib.sha1(ref.location.encode()).hexdigest()[:20]
    return home / posixpath.basename(ref.location), home / "objects.json"


def _stored(ref: ModelRef, selection: Selection, fetch: bool) -> Path:
    """The files of a model in object storage that ``selection`` picks, copied here; a file whose object
    changed (size or time) since it was copied is copied again. Without ``fetch``: the copy as it is."""
    from infu_model import storage

    dest, record = _stored_path(ref)
    if not fetch:
        if record.is_file():
            return dest
        raise _not_cached(ref, _offline_why())
    found = storage.objects(ref.location)
    if not found:
        raise ModelError(f"{ref}: {storage.missing(ref.location)}")

    def at(name: str) -> str:  # ("" names the object itself, when the reference is one file)
        return f"{ref.location}/{name}" if name else ref.location

    def read(name: str) -> bytes:
        return storage.read_bytes(at(name))

    try:
        chosen = selection(sorted(found), read)
    except _SelectionError as e:
        raise ModelError(f"{ref} {e}") from None
    copied = json.loads(record.read_text()) if record.is_file() else {}
    for name in chosen:
        target = dest / name if name else dest
        if copied.get(name) != list(found[name]) or not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(f"{target.name}.{os.getpid()}.incomplete")
            storage.download(at(name), part)
            os.replace(part, target)
    record.write_text(json.dumps({**copied, **{n: list(found[n]) for n in chosen}}))
    return dest


# ---------------------------------------------------------------------------------------------- URL --
def _url_dir() -> Path:
    return hf_home() / "infu" / "urls"


def _url_file(ref: ModelRef, fetch: bool) -> Path:
    """A file by URL, fetched with huggingface_hub's HTTP download (retries, and a range request that
    goes on from what an interrupted fetch left), kept only when it matches its sha256."""
    from filelock import FileLock
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.file_download import http_get

    name = posixpath.basename(urllib.parse.urlparse(ref.location).path)
    dest = _url_dir() / ref.sha256 / name
    if dest.is_file():
        return dest
    if not fetch:
        raise _not_cached(ref, _offline_why())
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(name + ".incomplete")
    with FileLock(str(dest) + ".lock"):  # two jobs starting at once share one download
        if dest.is_file():
            return dest
        have = part.stat().st_size if part.exists() else 0
        try:
            with open(part, "ab") as out:
                http_get(ref.location, out, resume_size=have, displayed_filename=name)
        except HfHubHTTPError as e:
            if getattr(e.response, "status_code", 0) != 416:  # 416: already whole, the hash decides
                raise ModelError(f"{ref}: the server answered {first_line(e)}") from None
        except Exception as e:  # noqa: BLE001 - connection errors after huggingface_hub's retries
            raise ModelError(f"{ref}: fetching failed ({first_line(e)}); rerun to go on from what it has") from None
        got = _digest(part, hashlib.sha256())
        if got != ref.sha256:
            part.unlink()
            raise ModelCorrupt(f"{ref}: the file fetched does not match its sha256 (got {got[:12]}...): "
                               "removed, never loaded")
        os.replace(part, dest)
    return dest
