"""Downloads that land only complete and verified: pretrained weights and COCO archives.

    fetch(url, dest, Checksum("sha256", "258fb6c6"))           # weights: a failed try leaves nothing
    fetch(url, dest, Checksum("md5", "442b8d..."), resume=True)  # archives: an interrupted try resumes

The bytes go to a temporary file in `dest`'s folder (same file system, so the final rename
is atomic); the size and checksum are checked, and only then is it renamed onto `dest`.
So `dest` exists only complete and verified, whatever happens in between:
- resume=False: the temporary file is removed on any failure (and on Ctrl-C);
- resume=True: it is `dest.partial` and stays after an interrupted transfer; the next
  call asks the server for the rest (HTTP Range) and starts over when the server ignores
  that. A file that fails its checksum is removed, never resumed.

A file already at `dest` (downloaded before, or put there by hand when the machine is
offline) is checked too before it is used. Every failure is a DownloadError whose message
is one line naming the URL and, for network failures, where to put the file by hand.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from tqdm import tqdm

CHUNK = 1 << 20
USER_AGENT = "frcnn-deploy"


class DownloadError(OSError):
    """A download that failed or did not verify; the message is one line for the user."""


@dataclass(frozen=True)
class Checksum:
    """A published digest: `algorithm` is a hashlib name; `digest` may be a prefix
    (torchvision publishes the first 8 hex digits of a weight file's SHA-256)."""

    algorithm: str
    digest: str

    def matches(self, hexdigest: str) -> bool:
        return hexdigest.startswith(self.digest.lower())


def fetch(url: str, dest: str | os.PathLike, checksum: Checksum | None = None, resume: bool = False,
          timeout: float = 60.0, progress: bool = True) -> Path:
    """`dest`, downloaded from `url` unless already there; verified against `checksum` either way."""
    dest = Path(dest)
    if dest.is_file():
        bad = _mismatch(dest, checksum, progress)
        if bad:
            raise DownloadError(f"{dest} is there but {bad}; delete it (or put the right file there) "
                                f"and run again to download {url}")
        return dest
    part = dest.with_name(f"{dest.name}.partial" if resume else f".{dest.name}.{uuid.uuid4().hex[:8]}.partial")
    keep = False
    try:
        keep = resume
        _transfer(url, part, dest, checksum, resume, timeout, progress)
        keep = False  # complete: from here on it is either verified or wrong
        bad = _mismatch(part, checksum, progress)
        if bad:
            raise DownloadError(f"{url}: the download {bad}; removed it (run again, or check the URL)")
        os.replace(part, dest)
    finally:
        if not keep:
            part.unlink(missing_ok=True)
    return dest


def _transfer(url: str, part: Path, dest: Path, checksum: Checksum | None, resume: bool, timeout: float,
              progress: bool) -> None:
    """Write `url`'s body to `part`, continuing a partial one when `resume`."""
    offset = part.stat().st_size if resume and part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as e:
        if e.code == 416 and offset:  # the partial file is not a prefix of this one: start over
            part.unlink()
            return _transfer(url, part, dest, checksum, resume, timeout, progress)
        raise DownloadError(f"cannot download {url}: HTTP {e.code} {e.reason}{_by_hand(dest)}") from None
    except (URLError, OSError, http.client.HTTPException) as e:  # DNS, refused, timeout, TLS
        raise DownloadError(f"cannot download {url} ({_reason(e)}){_by_hand(dest)}") from None
    with response:
        if offset and (response.status != 206
                       or not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-")):
            offset = 0  # the server sent the whole file instead of the rest
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        # said once connected, so that an offline failure stays one line
        check = f"{checksum.algorithm} {checksum.digest[:16]}" if checksum else "no published checksum: size only"
        print(f"downloading {url} -> {dest} ({'resuming at ' + str(offset) + ' bytes, ' if offset else ''}"
              f"{check})", flush=True)
        part.parent.mkdir(parents=True, exist_ok=True)
        with open(part, "ab" if offset else "wb") as f, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=dest.name, disable=not progress, leave=False) as bar:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:  # reset, timeout, short body
                    raise DownloadError(_stopped(url, f.tell(), total, _reason(e), resume)) from None
                if not chunk:
                    break
                f.write(chunk)
                bar.update(len(chunk))
            written = f.tell()
    if total is not None and written != total:
        raise DownloadError(_stopped(url, written, total, "connection closed", resume))


def _mismatch(path: Path, checksum: Checksum | None, progress: bool) -> str | None:
    """None when `path` matches `checksum` (or there is none), else what is wrong, in words."""
    if checksum is None:
        return None
    digest = file_digest(path, checksum.algorithm, progress)
    if checksum.matches(digest):
        return None
    return f"has {checksum.algorithm} {digest[:16]}..., not the published {checksum.digest[:16]}..."


def file_digest(path: Path, algorithm: str, progress: bool = True) -> str:
    """Hex digest of a file, with a progress bar for big ones."""
    h = hashlib.new(algorithm)
    size = path.stat().st_size
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, leave=False,
                                     desc=f"checking {path.name}", disable=not progress or size < 64 * CHUNK) as bar:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def _reason(e: BaseException) -> str:
    reason = getattr(e, "reason", None) or e
    text = " ".join(str(reason).split()) or type(reason).__name__
    return text if len(text) < 200 else text[:200] + "..."


def _stopped(url: str, written: int, total: int | None, why: str, resume: bool) -> str:
    of = f" of {total}" if total is not None else ""
    then = "; run again to resume it" if resume else "; nothing was kept, run again"
    return f"downloading {url} stopped at {written}{of} bytes ({why}){then}"


def _by_hand(dest: Path) -> str:
    return f"; without internet here, download it elsewhere and put it at {dest}"
