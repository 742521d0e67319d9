"""LocalStore: the artifact store as a directory tree (the embedded mode's default)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from bobench.errors import InvalidArgument, NotFound
from bobench.store.base import ArtifactStore, ObjectInfo, check_key, check_prefix

_TMP_PREFIX = ".tmp-"


class LocalStore(ArtifactStore):
    """Objects are files under `root`; a put writes a hidden temporary sibling and renames it into
    place (atomic on POSIX), so readers never see a partial object.

    `fsync=True` (default) flushes each object to disk before the rename so that a machine crash
    leaves either the old or the new object; benchmarks that measure CPU cost may turn it off.
    """

    def __init__(self, root: str | Path, *, fsync: bool = True) -> None:
        self.root = Path(root).expanduser().resolve()
        if self.root.exists() and not self.root.is_dir():
            raise InvalidArgument(f"store root {self.root} exists and is not a directory")
        self.root.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _write_atomic(self, target: Path, write) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                if self.fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._write_atomic(self._path(key), lambda fh: fh.write(data))

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"{self.url}: no object {key!r}") from None

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{self.url}: no object {key!r}") from None
        if not path.is_file():
            raise NotFound(f"{self.url}: {key!r} is a prefix, not an object")
        return ObjectInfo(key=key, size_bytes=st.st_size, etag=f"{st.st_size:x}-{st.st_mtime_ns:x}")

    def list(self, prefix: str = "") -> list[str]:
        check_prefix(prefix)
        # walk only the deepest directory the prefix names, then filter by the full prefix
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return []
        keys = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel_dir = os.path.relpath(dirpath, self.root)
            for name in filenames:
                if name.startswith("."):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> bool:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return False
        return True

    def put_file(self, key: str, path: str | Path) -> None:
        src = Path(path)
        if not src.is_file():
            raise NotFound(f"cannot upload {src} to {self.url}/{key}: no such file")
        with src.open("rb") as fh_in:
            self._write_atomic(self._path(key), lambda fh: shutil.copyfileobj(fh_in, fh, 1 << 20))

    def get_file(self, key: str, path: str | Path) -> Path:
        src = self._path(key)
        if not src.is_file():
            raise NotFound(f"{self.url}: no object {key!r}")
        dest = Path(path)
        with src.open("rb") as fh_in:
            self._write_atomic(dest, lambda fh: shutil.copyfileobj(fh_in, fh, 1 << 20))
        return dest
