"""Models by name: the one reference every config key and command-line flag naming a model takes.

A reference is written in one of three forms:

- ``hf://OWNER/NAME[@REVISION][/PATH/IN/REPO]``: a Hub model repo (a branch, tag or commit; a
  revision holding ``/`` is written ``%2F``), optionally a file or folder inside it, e.g.
  ``hf://ByteDance/InfiniteYou/infu_flux_v1.0/aes_stage2``. Fetched with huggingface_hub into its
  standard cache (``HF_HOME`` / ``HF_HUB_CACHE``), so weights that diffusers, the official app or
  ``hf download`` already fetched are reused; ``HF_ENDPOINT``, ``HF_TOKEN`` and ``HF_HUB_OFFLINE``
  are honoured.
- ``https://HOST/PATH/FILE#sha256=HEX``: a single file outside the Hub (facexlib's ArcFace), kept in
  ``$HF_HOME/infu/urls/<sha256>/`` and never used unless its bytes match the hash.
- ``s3://BUCKET/KEY`` (any scheme of ``infu_model/storage.py``): a file or folder in object storage,
  such as weights ``infu train`` wrote into a bucket; copied into ``$HF_HOME/infu/stored/``, each
  file fetched again when its object's size or time changed.
- anything else: a local file or folder (``~`` expanded).

A loader says which files it reads (a *selection*: ``FILE``, ``FOLDER``, ``DIFFUSERS``,
``patterns(...)``, ``infu_weights(variant)``), so only those are fetched: FLUX.1-dev's diffusers
folders, not its 23 GB single-file checkpoint. ``resolve(ref, selection)`` gives the local path.
Jobs fetch every model once in the driver (``fetch=True``); Ray workers then read the cache only,
never the network (``INFU_MODELS_FETCH=0`` in their environment).

Every failure is a ``ModelError`` (a ``FileNotFoundError``) whose message is one line naming the
reference and what to do: not cached while offline, gated, no such repo, revision or path, a hash
that does not match (the file is removed, never loaded).
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import posixpath
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from infu_model.storage import SCHEMES

HUB = "hf://"
FETCH_ENV = "INFU_MODELS_FETCH"   # "0": this process reads the cache only (Ray workers)
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
    kind: str                      # local | hub | url | storage
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
        if text.split("://", 1)[0] in SCHEMES:
            return cls(text, "storage", text.rstrip("/"))
        if re.match(r"[a-z][a-z0-9+.-]*://", text):
            raise ModelError(f"{text}: unknown scheme (a model is a path, hf://OWNER/NAME[@REVISION][/PATH], "
                             "https://...#sha256=HEX or s3://BUCKET/KEY)")
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
    """The local path of ``ref`` with the files ``selection`` picks present: fetched when missing
    (unless ``fetch`` is False, or None and this process reads the cache only), checked against their
    published hashes when fetched."""
    ref = ModelRef.parse(ref)
    if ref.kind == "local":
        return _local(ref)
    if fetch is None:
        fetch = os.environ.get(FETCH_ENV, "1") != "0"
    if ref.kind == "url":
        return _url_file(ref, fetch and not offline())
    if ref.kind == "storage":  # (not the Hub's: HF_HUB_OFFLINE does not apply)
        return _stored(ref, selection, fetch)
    return _hub(ref, selection, fetch and not offline())


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


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


def _local(ref: ModelRef) -> Path:
    p = Path(ref.location).expanduser()
    if not p.exists():
        hint = ""
        if re.fullmatch(r"[\w.-]+/[\w.-]+(/.*)?", ref.location) and not ref.location.startswith((".", "/")):
            hint = f" (a Hub model is written hf://{ref.location})"
        raise ModelError(f"model not found: {p}{hint}")
    return p


def _not_cached(ref: ModelRef, why: str) -> ModelNotCached:
    where = {"hub": hub_cache, "url": _url_dir, "storage": _stored_dir}[ref.kind]()
    return ModelNotCached(f"{ref} is not in the model cache ({where})"
                          f" and {why}: fetch it with `infu models pull {ref}` where the Hub can be reached")


def _offline_why() -> str:
    return "HF_HUB_OFFLINE=1 forbids fetching" if offline() else "this process reads the cache only"


# ---------------------------------------------------------------------------------------------- Hub --
@dataclass
class _Listing:
    commit: str
    files: dict            # repo path -> huggingface_hub RepoFile-like (size, blob_id, lfs) or None
    info: object = None    # the Hub's repo info (licence, gated) when it was asked


def _hub(ref: ModelRef, selection: Selection, fetch: bool) -> Path:
    listing = _remote_listing(ref) if fetch else None
    if listing is None:
        listing = _cached_listing(ref, "the Hub cannot be reached" if fetch else _offline_why())
    snapshot = _snapshot(ref, listing.commit)
    wanted = _select(ref, listing, selection, snapshot, fetch)
    missing = [f for f in wanted if not (snapshot / f).exists()]
    if missing and not fetch:
        raise _not_cached(ref, f"{len(missing)} of its files are missing ({missing[0]}, ...); {_offline_why()}"
                          if len(missing) > 1 else f"{missing[0]} is missing; {_offline_why()}")
    if missing:
        _download(ref, listing.commit, missing)
        _verify(ref, listing, missing, snapshot)
    return snapshot / ref.path if ref.path else snapshot


def _remote_listing(ref: ModelRef) -> _Listing | None:
    """The commit and files of the reference's revision on the Hub; None when the Hub cannot be
    reached (the cache may still hold it)."""
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = HfApi(endpoint=_endpoint())
    try:
        info = api.repo_info(ref.location, revision=ref.revision)
        files = {f.path: f for f in api.list_repo_tree(ref.location, recursive=True, revision=info.sha)
                 if hasattr(f, "blob_id")}
    except (httpx2.ConnectError, httpx2.TimeoutException, OfflineModeIsEnabled):
        return None
    except HfHubHTTPError as e:
        if getattr(e.response, "status_code", 0) >= 500:  # the Hub is down: what the cache holds still serves
            return None
        raise _hub_error(ref, e) from None
    return _Listing(info.sha, files, info)


def _cached_listing(ref: ModelRef, why: str) -> _Listing:
    from huggingface_hub import get_cached_repo_tree
    from huggingface_hub.errors import CachedRepoTreeNotFoundError

    storage = hub_cache() / f"models--{ref.location.replace('/', '--')}"
    commit = ref.revision if _COMMIT.fullmatch(ref.revision) else None
    if commit is None and (storage / "refs" / ref.revision).is_file():
        commit = (storage / "refs" / ref.revision).read_text().strip()
    if commit is None or not (storage / "snapshots" / commit).is_dir():
        raise _not_cached(ref, why)
    try:
        files = {f.path: f for f in get_cached_repo_tree(ref.location, revision=commit, cache_dir=hub_cache())}
    except CachedRepoTreeNotFoundError:  # fetched by an older tool: what the snapshot holds is what there is
        root = storage / "snapshots" / commit
        files = {p.relative_to(root).as_posix(): None for p in root.rglob("*") if p.is_file()}
    return _Listing(commit, files)


def _snapshot(ref: ModelRef, commit: str) -> Path:
    return hub_cache() / f"models--{ref.location.replace('/', '--')}" / "snapshots" / commit


def _select(ref: ModelRef, listing: _Listing, selection: Selection, snapshot: Path, fetch: bool) -> list[str]:
    if ref.path in listing.files:
        inside = [""]
    else:
        prefix = f"{ref.path}/" if ref.path else ""
        inside = [f[len(prefix):] for f in listing.files if f.startswith(prefix)]
    if not inside:
        raise ModelError(f"{ref}: {ref.location} has no file or folder {ref.path!r} at revision {ref.revision}")

    def read(name: str) -> bytes:
        repo_path = posixpath.join(ref.path, name) if ref.path else name
        if not (snapshot / repo_path).exists():
            if not fetch:
                raise _not_cached(ref, f"{repo_path} is missing; {_offline_why()}")
            _download(ref, listing.commit, [repo_path])
            _verify(ref, listing, [repo_path], snapshot)
        return (snapshot / repo_path).read_bytes()

    try:
        chosen = selection(inside, read)
    except _SelectionError as e:
        raise ModelError(f"{ref} {e}") from None
    return [posixpath.join(ref.path, n) if n else ref.path for n in chosen]


def _download(ref: ModelRef, commit: str, files: list[str]) -> None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        # at the commit listed (the files checked against are those of the snapshot they land in)
        snapshot_download(ref.location, revision=commit, allow_patterns=files, cache_dir=hub_cache(),
                          endpoint=_endpoint())
    except HfHubHTTPError as e:
        raise _hub_error(ref, e) from None
    except OSError as e:
        raise ModelError(f"{ref}: fetching failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e})"
                         ) from None
    if ref.revision != commit:  # later offline runs find the branch or tag's commit here, as huggingface_hub's own do
        refs = hub_cache() / f"models--{ref.location.replace('/', '--')}" / "refs" / ref.revision
        refs.parent.mkdir(parents=True, exist_ok=True)
        tmp = refs.with_name(f"{refs.name}.{os.getpid()}.tmp")
        tmp.write_text(commit)
        os.replace(tmp, refs)


def _verify(ref: ModelRef, listing: _Listing, files: list[str], snapshot: Path) -> None:
    """Each just-fetched file against its published hash (sha256 for LFS files, the git blob id for
    the rest); a mismatch is removed from the cache before anything can load it."""
    for f in files:
        entry = listing.files.get(f)
        problem = _check_file(snapshot / f, entry)
        if problem:
            _remove_cached(snapshot / f)
            raise ModelCorrupt(f"{ref}: {f} {problem}: removed from the cache, never loaded; fetch it again, "
                               "and if it fails again the download is being altered on the way")


def _check_file(path: Path, entry) -> str | None:
    if entry is None:
        return None  # no published hash known (a snapshot fetched by another tool): nothing to check against
    lfs = getattr(entry, "lfs", None)
    if lfs is not None:
        want, got = lfs.sha256, _sha256(path)
        return None if got == want else f"does not match its sha256 (expected {want[:12]}..., got {got[:12]}...)"
    got = _digest(path, hashlib.sha1(b"blob %d\0" % path.stat().st_size))  # git's blob id
    return None if got == entry.blob_id else f"does not match its git blob id ({entry.blob_id[:12]}...)"


def _remove_cached(link: Path) -> None:
    blob = link.resolve()
    for p in {link, blob}:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _sha256(path: Path) -> str:
    return _digest(path, hashlib.sha256())


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
    status = getattr(getattr(e, "response", None), "status_code", "?")
    if status in (401, 403):
        return ModelError(f"{ref}: the Hub refused access ({status}): {login}, and accept the model's licence "
                          f"on {ref.repo_page} if it asks for one")
    return ModelError(f"{ref}: the Hub answered {status} ({str(e).splitlines()[0]})")


# --------------------------------------------------------------------------------- describe, verify --
@dataclass
class Status:
    """What ``infu models list`` says of a reference: cached (and where), its size, licence and gate."""
    cached: bool
    where: Path | None = None
    size: int | None = None        # bytes of the files its loader reads
    license: str | None = None
    gated: bool | None = None


def describe(ref, selection: Selection = AUTO, online: bool = True) -> Status:
    """The reference's state in the cache; with ``online`` (and HF_HUB_OFFLINE unset) also its size,
    licence and gate from the Hub when it is not cached (``model_index.json`` may be fetched to size
    a diffusers folder). Never downloads weights."""
    ref = ModelRef.parse(ref)
    if ref.kind == "local":
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
        listing = _cached_listing(ref, "")
        cached = True
    except ModelError:
        if not online or offline():
            return Status(False)
        listing, cached, where = _remote_listing(ref), False, None
        if listing is None:
            return Status(False)
    wanted = _select(ref, listing, selection, _snapshot(ref, listing.commit), fetch=not cached)
    sizes = [getattr(listing.files.get(f), "size", None) for f in wanted]
    if None in sizes and cached:
        sizes = [(_snapshot(ref, listing.commit) / f).stat().st_size for f in wanted]
    info = listing.info
    card = getattr(info, "card_data", None)
    return Status(cached, where, sum(sizes) if None not in sizes else None,
                  getattr(card, "license", None) if card is not None else None,
                  bool(getattr(info, "gated", False)) if info is not None else None)


def verify(ref) -> list[str]:
    """Every cached file of ``ref`` against its published hash; returns one line per file that does not
    match (each removed from the cache, so a pull fetches it again)."""
    ref = ModelRef.parse(ref)
    if ref.kind in ("local", "storage"):  # (a stored copy is checked against its objects at each fetch)
        return []
    if ref.kind == "url":
        p = _url_dir() / ref.sha256 / posixpath.basename(urllib.parse.urlparse(ref.location).path)
        if not p.is_file():
            raise _not_cached(ref, "there is nothing to verify")
        if _sha256(p) != ref.sha256:
            p.unlink()
            return [f"{ref}: does not match its sha256: removed"]
        return []
    listing = _cached_listing(ref, "there is nothing to verify")
    snapshot = _snapshot(ref, listing.commit)
    prefix = f"{ref.path}/" if ref.path else ""
    bad = []
    for f in sorted(listing.files):
        if (f == ref.path or f.startswith(prefix)) and (snapshot / f).exists():
            problem = _check_file(snapshot / f, listing.files[f])
            if problem:
                _remove_cached(snapshot / f)
                bad.append(f"{ref}: {f} {problem}: removed")
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
    from filelock import FileLock

    name = posixpath.basename(urllib.parse.urlparse(ref.location).path)
    dest = _url_dir() / ref.sha256 / name
    if dest.is_file():
        return dest
    if not fetch:
        raise _not_cached(ref, _offline_why())
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):  # two jobs starting at once share one download
        if not dest.is_file():
            _http_get(ref, dest.with_name(name + ".incomplete"))
            part = dest.with_name(name + ".incomplete")
            got = _sha256(part)
            if got != ref.sha256:
                part.unlink()
                raise ModelCorrupt(f"{ref}: the file fetched does not match its sha256 (got {got[:12]}...): "
                                   "removed, never loaded")
            os.replace(part, dest)
    return dest


def _http_get(ref: ModelRef, part: Path, attempts: int = 5) -> None:
    """Fetch into ``part``, resuming what an interrupted fetch (this one or a killed one) left there."""
    from huggingface_hub.utils import tqdm

    for attempt in range(attempts):
        have = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(ref.location, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                if have and r.status != 206:   # the server ignored the range: start over
                    have = 0
                total = have + int(r.headers.get("Content-Length") or 0) or None
                with open(part, "ab" if have else "wb") as out, \
                        tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=part.name[:-11]) as bar:
                    shutil.copyfileobj(_Counting(r, bar), out, 1 << 20)
            return
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # already whole: the hash check decides
                return
            raise ModelError(f"{ref}: the server answered {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            if attempt == attempts - 1:
                raise ModelError(f"{ref}: fetching failed ({getattr(e, 'reason', e)}); rerun to resume") from None


class _Counting:
    """A response read through a progress bar."""

    def __init__(self, response, bar):
        self.response, self.bar = response, bar

    def read(self, n: int = -1) -> bytes:
        data = self.response.read(n)
        self.bar.update(len(data))
        return data
