"""Where capture lives: a local directory, or any filesystem pyarrow or fsspec can open by URI.

The writer and the reader see one small interface (list a directory, read a file, publish a whole file,
append to a local file) over two implementations:

* **local** (a path or ``file://``): plain ``os`` calls, so the writer controls permissions exactly
  (files 0640 and directories 0750 by default, whatever the process umask) and every path is confined to
  the root after resolving symlinks.
* **remote** (``s3://``, ``gs://``, ``hdfs://``, ``abfs://`` through pyarrow's native filesystems, and any
  other fsspec protocol through ``pyarrow.fs.PyFileSystem(FSSpecHandler(...))``): objects are immutable,
  so nothing is ever appended; every flush publishes whole objects, which an object store makes visible
  atomically when the upload completes.

Credentials never travel in the URI: pyarrow resolves them from the usual AWS (or GCP, Azure) environment,
config files and instance metadata. A URI with a user, password or key in it is refused, and URIs are
shown redacted in logs, errors and ``/health``. For S3-compatible stores (MinIO, moto) the endpoint comes
from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (the variables boto3 and the AWS CLI read) or from an
``endpoint_override`` query parameter of the URI.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from airflow_saga.core.errors import CaptureError

if TYPE_CHECKING:
    import pyarrow.fs as pafs

DEFAULT_FILE_MODE = 0o640
DEFAULT_DIR_MODE = 0o750
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_PYARROW_SCHEMES = {"s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss"}
_SECRET_QUERY = re.compile(r"key|secret|token|password|credential|sas|sig", re.I)


def parse_mode(value: Any, field: str, *, directory: bool) -> int:
    """A permission mode from an int or an octal string (``"0640"``, ``"640"``, ``"0o640"``).

    The owner must keep read and write (and, for directories, search) permission, or the writer could not
    use what it creates.
    """
    if isinstance(value, bool):
        raise CaptureError(f"{field} must be an octal permission mode such as 0640, got {value!r}")
    if isinstance(value, int):
        mode = value
    elif isinstance(value, str) and re.fullmatch(r"(0o?)?[0-7]{1,4}", value.strip()):
        text = value.strip()
        mode = int(text[2:] if text.startswith("0o") else text, 8)
    else:
        raise CaptureError(f"{field} must be an octal permission mode such as 0640, got {value!r}")
    if not 0 <= mode <= 0o777:
        raise CaptureError(
            f'{field} must be between 000 and 777 (octal), got {value!r}; write it as a string: "0640"'
        )
    need = 0o700 if directory else 0o600
    if mode & need != need:
        raise CaptureError(
            f"{field} {mode:04o} must give the owner {'rwx' if directory else 'rw'} (at least {need:04o})"
        )
    return mode


def is_remote(root: str | os.PathLike[str]) -> bool:
    m = _SCHEME.match(str(root))
    return bool(m) and m.group(1).lower() != "file"


def redact_uri(uri: str) -> str:
    """``uri`` without a user, password or secret-looking query parameter (for logs, errors, /health).

    The package-wide ``core.redaction.redact`` masks user info and known key=value secrets; pyarrow's own
    URI parameters (``secret_key=``, ``session_token=``) are masked here too.
    """
    from airflow_saga.core.redaction import MASK, redact

    text = str(uri)
    if not _SCHEME.match(text):
        return redact(text)
    parts = urlsplit(text)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = urlencode([(k, MASK if _SECRET_QUERY.search(k) else v) for k, v in pairs], safe="*")
    return redact(urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment)))


def _error(message: str, exc: BaseException) -> CaptureError:
    """A CaptureError whose text (ours and the library's) has every recognisable credential masked."""
    from airflow_saga.core.redaction import redact

    return CaptureError(redact(f"{message}: {exc}"))


def _check_no_credentials(uri: str) -> None:
    parts = urlsplit(uri)
    secret_params = [k for k, _ in parse_qsl(parts.query) if _SECRET_QUERY.search(k)]
    if "@" in parts.netloc or secret_params:
        raise CaptureError(
            f"capture URI {redact_uri(uri)} carries credentials; remove them and use the environment or "
            "config chain instead (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance role; "
            "AWS_ENDPOINT_URL for S3-compatible stores)"
        )


def _s3_uri_with_endpoint(uri: str) -> str:
    """Add the endpoint of an S3-compatible store from the environment, unless the URI names one."""
    parts = urlsplit(uri)
    query = dict(parse_qsl(parts.query))
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if "endpoint_override" in query or not endpoint:
        return uri
    ep = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    query["endpoint_override"] = ep.netloc + ep.path.rstrip("/")
    query.setdefault("scheme", ep.scheme)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def _remote_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    import pyarrow.fs as pafs

    scheme = uri.split("://", 1)[0].lower()
    if scheme in ("s3", "s3a"):
        uri = _s3_uri_with_endpoint("s3" + uri[len(scheme) :])
    try:
        if scheme in _PYARROW_SCHEMES or scheme == "s3a":
            fs, path = pafs.FileSystem.from_uri(uri)
        else:
            import fsspec.core

            ffs, path = fsspec.core.url_to_fs(uri)
            fs = pafs.PyFileSystem(pafs.FSSpecHandler(ffs))
    except (OSError, ValueError, ImportError, TypeError) as exc:
        raise _error(f"cannot open capture location {redact_uri(uri)}", exc) from exc
    return fs, path.rstrip("/")


class Store:
    """One capture root. Paths passed around are plain strings relative to nothing: ``join`` builds them."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        file_mode: int = DEFAULT_FILE_MODE,
        dir_mode: int = DEFAULT_DIR_MODE,
    ) -> None:
        text = str(root)
        if not text.strip():
            raise CaptureError("capture location is empty")
        self.file_mode = file_mode
        self.dir_mode = dir_mode
        self.remote = is_remote(text)
        self.fs: pafs.FileSystem | None = None
        self._made: set[str] = set()
        if self.remote:
            from airflow_saga.core.redaction import register_secret

            _check_no_credentials(text)
            for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):  # never echoed by any saga message
                register_secret(os.environ.get(name))
            self.uri = redact_uri(text)
            self.fs, self.root = _remote_filesystem(text)
            self._is_s3 = type(self.fs).__name__ == "S3FileSystem"
        else:
            if text.startswith("file://"):
                text = urlsplit(text).path
            self.root = str(Path(text).resolve())
            self.uri = self.root
            self._is_s3 = False

    def __repr__(self) -> str:
        return f"Store({self.uri})"

    # --- paths -------------------------------------------------------------------------------------------
    def join(self, base: str, *parts: str) -> str:
        """``base/parts...``; locally, refusing a result that resolves outside the root (symlinks too)."""
        for p in parts:
            if not p or p in (".", "..") or "/" in p or "\\" in p or "\x00" in p:
                raise CaptureError(f"invalid capture path component {p!r}")
        if not self.remote:
            path = Path(base).joinpath(*parts).resolve()
            root = Path(self.root)
            if path != root and not path.is_relative_to(root):
                raise CaptureError(f"capture path {path} escapes capture root {root}")
            return str(path)
        return "/".join([base.rstrip("/"), *parts]) if base else "/".join(parts)

    def name(self, path: str) -> str:
        return path.rstrip("/").rsplit("/", 1)[-1]

    # --- reading -----------------------------------------------------------------------------------------
    def listdir(self, path: str) -> list[tuple[str, bool]]:
        """``(name, is_dir)`` of the entries of ``path``, sorted; a missing directory is empty."""
        if not self.remote:
            try:
                with os.scandir(path) as it:
                    return sorted((e.name, e.is_dir()) for e in it)
            except (FileNotFoundError, NotADirectoryError):
                return []
        import pyarrow.fs as pafs

        try:
            infos = self.fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
        except OSError as exc:
            raise _error(f"cannot list {self.uri} ({self.relative(path)})", exc) from exc
        return sorted((i.base_name, i.type == pafs.FileType.Directory) for i in infos)

    def read_bytes(self, path: str) -> bytes:
        if not self.remote:
            with open(path, "rb") as fh:
                return fh.read()
        try:
            with self.fs.open_input_stream(path) as fh:
                return fh.read()
        except OSError as exc:
            raise _error(f"cannot read {self.uri} ({self.relative(path)})", exc) from exc

    def relative(self, path: str) -> str:
        return path[len(self.root) :].lstrip("/") if path.startswith(self.root) else path

    # --- writing -----------------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Fail early and clearly: a local root is created (0750); a remote bucket must exist."""
        if not self.remote:
            self.makedirs(self.root)
            return
        import pyarrow.fs as pafs

        bucket = self.root.split("/", 1)[0]
        try:
            info = self.fs.get_file_info(bucket if self._is_s3 else self.root)
        except OSError as exc:
            raise _error(f"cannot reach capture location {self.uri}", exc) from exc
        if self._is_s3 and info.type == pafs.FileType.NotFound:
            raise CaptureError(f"capture bucket {bucket!r} of {self.uri} does not exist; create it first")
        if not self._is_s3:
            self.makedirs(self.root)

    def makedirs(self, path: str) -> None:
        """Create ``path`` and missing parents; directories we create get ``dir_mode`` exactly."""
        if path in self._made:
            return
        if self.remote:
            if not self._is_s3:  # S3 prefixes need no directory markers
                try:
                    self.fs.create_dir(path, recursive=True)
                except OSError as exc:
                    raise _error(f"cannot create {self.uri} ({self.relative(path)})", exc) from exc
            self._made.add(path)
            return
        make_local_dirs(Path(path), self.dir_mode)
        if not os.path.isdir(path):
            raise CaptureError(f"capture path {path} exists and is not a directory")
        self._made.add(path)

    def publish(self, directory: str, name: str, data: bytes) -> None:
        """Make ``directory/name`` hold ``data``, all at once: readers never see part of it.

        Locally: a hidden temporary file (created with ``file_mode``) renamed into place. Remotely: one
        upload, which the object store makes visible only when it completes. Publishing the same name
        again replaces it, so a replay after a crash never duplicates a file.
        """
        self.makedirs(directory)
        path = self.join(directory, name)
        if not self.remote:
            tmp = self.join(directory, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
            try:
                fd = open_new_file(tmp, self.file_mode, append=False)
                try:
                    write_all(fd, data)
                finally:
                    os.close(fd)
                os.replace(tmp, path)
            except OSError:
                self._made.discard(directory)  # someone may have removed it: make it again next time
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            return
        try:
            with self.fs.open_output_stream(path) as out:
                out.write(data)
        except OSError as exc:
            raise _error(f"cannot write {self.uri} ({self.relative(path)})", exc) from exc

    def open_append(self, directory: str, name: str) -> int:
        """A file descriptor appending to a local file (created with ``file_mode``)."""
        if self.remote:
            raise CaptureError(f"cannot append to objects in {self.uri}")
        self.makedirs(directory)
        try:
            return open_new_file(self.join(directory, name), self.file_mode, append=True)
        except OSError:
            self._made.discard(directory)
            raise


# --- local file helpers, shared with the spool ---------------------------------------------------------


def make_local_dirs(path: Path, mode: int) -> None:
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, mode)
        except FileExistsError:  # another writer made it first: its mode is its own business
            continue
        os.chmod(d, mode)  # mkdir applies the umask; the configured mode must not depend on it


def open_new_file(path: str | Path, mode: int, *, append: bool) -> int:
    """Open for writing; a file we create gets exactly ``mode`` (independent of the umask)."""
    flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return os.open(path, flags)
    try:
        os.fchmod(fd, mode)
    except OSError:
        os.close(fd)
        raise
    return fd


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until every byte is written (a regular file may take a short write)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def append_record(fd: int, data: bytes) -> None:
    """Append ``data`` (whole lines); on failure cut the file back so no half line stays behind."""
    start = os.lseek(fd, 0, os.SEEK_END)
    try:
        write_all(fd, data)
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        raise
