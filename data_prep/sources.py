"""Source files: their sha256, and the members of a directory or a .tar.gz archive by name.

CIFAR arrives as an archive (cifar-10-python.tar.gz) or its extracted folder; both are read
the same way, so users need not unpack 170 MB before converting.
"""
from __future__ import annotations

import hashlib
import os
import tarfile


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Members:
    """Files found by base name in a directory (or its release subfolder) or an archive."""

    def __init__(self, src: str, subfolders=()):
        self.src = src
        self.files: dict[str, str] = {}
        if os.path.isdir(src):
            self.archive = None
            for folder in [src] + [os.path.join(src, s) for s in subfolders]:
                if os.path.isdir(folder):
                    for name in sorted(os.listdir(folder)):
                        path = os.path.join(folder, name)
                        if os.path.isfile(path):
                            self.files.setdefault(name, path)
        elif os.path.isfile(src) and tarfile.is_tarfile(src):
            self.archive = tarfile.open(src)
            for member in self.archive.getmembers():
                if member.isfile():
                    self.files.setdefault(os.path.basename(member.name), member.name)
        else:
            raise ValueError(f"{src}: not a directory or a tar archive")

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def read(self, name: str) -> bytes:
        if self.archive is None:
            with open(self.files[name], "rb") as fh:
                return fh.read()
        return self.archive.extractfile(self.files[name]).read()

    def checksums(self, names) -> dict:
        """{name: sha256} of the files used; for an archive, of the archive itself."""
        if self.archive is not None:
            return {os.path.basename(self.src): sha256_file(self.src)}
        return {name: sha256_file(self.files[name]) for name in names}
