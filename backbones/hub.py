"""Resolving checkpoint sources to verified local files: zoo names, URLs and paths.

`resolve_checkpoint(source)` → local path. A zoo name (`backbones.zoo`) tries the entry's direct sources in
order; on HTTP errors, timeouts or a hash mismatch it falls back to the next source and logs which one was
used. Downloads resume interrupted transfers (HTTP Range), are written to `<file>.part` and renamed
atomically, and run under a file lock so that several processes (DDP ranks) download once.

Verification: the full sha256 where the table knows it; the 8-hex sha256 prefix of OpenMMLab file names;
otherwise trust-on-first-use — the sha256 of the first download is recorded in `<cache>/records.json` and
every later use is checked against it (the log says which of these applied).

Environment:
    BACKBONES_CACHE    cache directory (default `$XDG_CACHE_HOME/backbones` or `~/.cache/backbones`)
    BACKBONES_OFFLINE  `1`: never touch the network; use cached files only
    BACKBONES_MIRROR   base URL of a mirror, tried before the original hosts: the file of
                       `https://host/a/b.pth` is fetched from `$BACKBONES_MIRROR/host/a/b.pth`
    BACKBONES_TIMEOUT  socket timeout in seconds (default 30)
Files already downloaded by torch.hub or mmengine (`$TORCH_HOME/hub/checkpoints`) are used in place
when their name matches and they pass verification.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import json
import logging
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator, Optional

from .zoo import Checkpoint, Source, all_checkpoints, get_checkpoint

logger = logging.getLogger('backbones')

ENV_CACHE = 'BACKBONES_CACHE'
ENV_OFFLINE = 'BACKBONES_OFFLINE'
ENV_MIRROR = 'BACKBONES_MIRROR'
ENV_TIMEOUT = 'BACKBONES_TIMEOUT'
RECORDS = 'records.json'
CHUNK = 1 << 16
RETRIES_PER_SOURCE = 3


class DownloadError(RuntimeError):
    """No source of a checkpoint could be fetched and verified."""


class HashMismatchError(DownloadError):
    """A downloaded or cached file does not have the expected sha256."""


class OfflineError(DownloadError, FileNotFoundError):
    """Offline mode and the file is not in the cache."""


@dataclasses.dataclass
class Fetched:
    """Where a checkpoint file came from and how it was verified."""
    path: str
    url: str
    sha256: str
    verification: str   # 'sha256', 'sha256-prefix', 'first-use (recorded)', 'recorded', 'local file'
    downloaded: bool


# ---- configuration ----------------------------------------------------------------------------------
def cache_dir() -> Path:
    """The cache directory (`$BACKBONES_CACHE`, else `$XDG_CACHE_HOME/backbones`, else ~/.cache/backbones)."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return Path(base) / 'backbones'


def is_offline() -> bool:
    return os.environ.get(ENV_OFFLINE, '').strip().lower() in ('1', 'true', 'yes', 'on')


def _timeout() -> float:
    return float(os.environ.get(ENV_TIMEOUT, '30'))


def torch_hub_checkpoint_dir() -> Path:
    """Where torch.hub and mmengine's `load_from_http` put downloads."""
    torch_home = os.environ.get('TORCH_HOME') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache'), 'torch')
    return Path(torch_home) / 'hub' / 'checkpoints'


def cache_file_name(url: str) -> str:
    """`<sha256(url)[:12]>-<basename>`: two different URLs never share a cache file."""
    base = os.path.basename(urllib.parse.urlparse(url).path) or 'checkpoint'
    return f'{hashlib.sha256(url.encode()).hexdigest()[:12]}-{base}'


def cache_path(url: str) -> Path:
    return cache_dir() / 'checkpoints' / cache_file_name(url)


def mirror_url(url: str) -> Optional[str]:
    mirror = os.environ.get(ENV_MIRROR, '').rstrip('/')
    if not mirror:
        return None
    parts = urllib.parse.urlparse(url)
    return f'{mirror}/{parts.netloc}{parts.path}'


# ---- locking and the record file --------------------------------------------------------------------
@contextlib.contextmanager
def file_lock(path: Path, timeout: float = 3600) -> Iterator[None]:
    """An inter-process lock on `path` (filelock if installed, else fcntl)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        from filelock import FileLock
    except ImportError:
        FileLock = None
    if FileLock is not None:
        with FileLock(str(path), timeout=timeout):
            yield
        return
    import fcntl
    with open(path, 'a+') as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f'could not lock {path} within {timeout}s')
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _records_path() -> Path:
    return cache_dir() / RECORDS


def read_records() -> dict[str, dict]:
    """Cache file name → {'url', 'sha256', 'size', 'verification', 'time'} for every recorded file."""
    path = _records_path()
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DownloadError(f'the cache record {path} is corrupt ({err}); delete it to start over '
                            '(files will be re-verified on first use)') from None


def _write_record(file_name: str, record: dict) -> None:
    path = _records_path()
    with file_lock(path.with_suffix('.json.lock')):
        records = read_records()
        records[file_name] = record
        tmp = path.with_suffix(f'.json.tmp{os.getpid()}')
        tmp.write_text(json.dumps(records, indent=1, sort_keys=True))
        os.replace(tmp, path)


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


# ---- verification -----------------------------------------------------------------------------------
def _expected(source: Source) -> tuple[Optional[str], Optional[str]]:
    return source.sha256, source.name_hash


def verify_file(path: Path, source: Source, record_name: Optional[str] = None) -> tuple[str, str]:
    """Check `path` against the published hash, the file-name prefix or the first-use record.

    Returns (sha256, how it was verified); raises HashMismatchError naming both hashes.
    """
    actual = sha256_of(path)
    full, prefix = _expected(source)
    if full and actual != full:
        raise HashMismatchError(f'{path.name}: sha256 {actual} but the zoo table says {full} ({source.url})')
    if prefix and not actual.startswith(prefix):
        raise HashMismatchError(f'{path.name}: sha256 {actual} does not start with {prefix}, the hash '
                                f'prefix in the published file name ({source.url})')
    record = read_records().get(record_name or path.name)
    if record and record.get('sha256') != actual:
        raise HashMismatchError(f'{path.name}: sha256 {actual} differs from {record["sha256"]} recorded at '
                                f'its first download (trust on first use); the file changed on disk or '
                                f'upstream. Delete it and the entry in {_records_path()} to accept the new file')
    if full:
        return actual, 'sha256'
    if prefix:
        return actual, 'sha256-prefix'
    return actual, 'recorded' if record else 'first-use (recorded)'


def _record(path: Path, url: str, sha: str, how: str) -> None:
    _write_record(path.name, dict(url=url, sha256=sha, size=path.stat().st_size, verification=how,
                                  time=time.strftime('%Y-%m-%dT%H:%M:%S')))


# ---- HTTP -------------------------------------------------------------------------------------------
class _Progress:
    """tqdm when installed (the project's progress library), else a silent counter."""

    def __init__(self, total: Optional[int], initial: int, desc: str):
        try:
            from tqdm import tqdm
            self._bar = tqdm(total=total, initial=initial, unit='B', unit_scale=True, unit_divisor=1024,
                             desc=desc, disable=None, file=sys.stderr, leave=False)
        except ImportError:
            self._bar = None

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _download_once(url: str, part: Path) -> bool:
    """Fetch `url` into `part`, resuming from its current size. True when complete."""
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={'User-Agent': 'backbones-zoo'})
    if start:
        request.add_header('Range', f'bytes={start}-')
    try:
        response = urllib.request.urlopen(request, timeout=_timeout())
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # nothing left to fetch: the part file is complete or bogus
            return True
        raise
    with response:
        if start and response.status != 206:  # the server ignored Range: start over
            start = 0
        length = response.headers.get('Content-Length')
        total = start + int(length) if length is not None else None
        bar = _Progress(total, start, os.path.basename(url)[:40])
        received = start
        try:
            with open(part, 'ab' if start else 'wb') as handle:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    handle.write(block)
                    received += len(block)
                    bar.update(len(block))
        finally:
            bar.close()
    if total is not None and received < total:
        raise http.client.IncompleteRead(b'', total - received)
    return True


_TRANSIENT = (urllib.error.URLError, http.client.HTTPException, socket.timeout, ConnectionError, TimeoutError)


def download_url(url: str, dest: Path, *, retries: int = RETRIES_PER_SOURCE) -> None:
    """Download `url` to `dest` via `dest.part` (kept for resuming) and an atomic rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + '.part')
    last: Optional[BaseException] = None
    for attempt in range(retries):
        try:
            _download_once(url, part)
            os.replace(part, dest)
            return
        except urllib.error.HTTPError as err:
            if err.code in (404, 403, 410, 401):
                raise  # no point retrying
            last = err
        except _TRANSIENT as err:
            last = err
        logger.info('download of %s interrupted (%s); resuming (attempt %d/%d)', url, last, attempt + 2,
                    retries)
    raise DownloadError(f'{url}: gave up after {retries} attempts: {last}')


# ---- fetching ---------------------------------------------------------------------------------------
def _existing_copies(source: Source) -> list[Path]:
    """Our cache file, then a torch.hub / mmengine download of the same file name — the latter only when
    a published hash (full or file-name prefix) can prove it is the same file."""
    candidates = [cache_path(source.url)]
    if source.sha256 or source.name_hash:
        candidates.append(torch_hub_checkpoint_dir() / os.path.basename(urllib.parse.urlparse(source.url).path))
    return [p for p in candidates if p.is_file()]


def fetch_source(source: Source) -> Fetched:
    """One source → a verified local file (cache hit, torch.hub copy, or download)."""
    dest = cache_path(source.url)
    for existing in _existing_copies(source):
        try:
            sha, how = verify_file(existing, source, record_name=dest.name)
        except HashMismatchError as err:
            if existing == dest and (source.sha256 or source.name_hash):
                logger.warning('%s; deleting the cached copy and downloading again', err)
                dest.unlink()
                continue
            raise
        if how == 'first-use (recorded)':
            _write_record(dest.name, dict(url=source.url, sha256=sha, size=existing.stat().st_size,
                                          verification=how, time=time.strftime('%Y-%m-%dT%H:%M:%S'),
                                          path=str(existing)))
        return Fetched(str(existing), source.url, sha, how, downloaded=False)
    if is_offline():
        raise OfflineError(f'{dest} is not cached')
    with file_lock(dest.with_name(dest.name + '.lock')):
        if dest.is_file():  # another process finished it while we waited for the lock
            sha, how = verify_file(dest, source)
            return Fetched(str(dest), source.url, sha, how, downloaded=False)
        errors, mismatch = [], False
        for url in (u for u in (mirror_url(source.url), source.url) if u):
            try:
                download_url(url, dest)
            except (urllib.error.HTTPError, DownloadError, *_TRANSIENT) as err:
                errors.append(f'{url}: {err}')
                continue
            try:
                sha, how = verify_file(dest, source)
            except HashMismatchError as err:
                dest.unlink()
                errors.append(f'{url}: {err} (deleted)')
                mismatch = True
                continue
            _record(dest, source.url, sha, how)
            if url != source.url:
                logger.info('fetched %s from the mirror %s', source.url, url)
            return Fetched(str(dest), url, sha, how, downloaded=True)
        raise (HashMismatchError if mismatch else DownloadError)('; '.join(errors))


def fetch_checkpoint(name: str) -> Fetched:
    """A zoo checkpoint → a verified local file, trying its sources in order."""
    entry = get_checkpoint(name)
    errors = []
    for index, source in enumerate(entry.direct_sources):
        try:
            fetched = fetch_source(source)
        except OfflineError:
            errors.append(f'{source.url}: not in the cache ({cache_path(source.url)})')
            continue
        except (DownloadError, HashMismatchError) as err:
            errors.append(f'{source.url}: {err}')
            logger.warning('checkpoint %s: source %d (%s) failed: %s; trying the next one', name, index + 1,
                           source.host, err)
            continue
        _log_fetched(name, entry, source, fetched, fell_back=bool(errors))
        return fetched
    raise _no_source_error(entry, errors)


def _log_fetched(name: str, entry: Checkpoint, source: Source, fetched: Fetched, fell_back: bool) -> None:
    note = {'sha256': 'sha256 verified against the zoo table',
            'sha256-prefix': 'sha256 prefix from the published file name verified',
            'first-use (recorded)': 'no hash was ever published: recorded its sha256 on first use '
                                    f'({fetched.sha256[:12]}…) and will verify against it from now on',
            'recorded': 'no published hash; matches the sha256 recorded at first use'}[fetched.verification]
    level = logging.WARNING if fell_back or fetched.verification == 'first-use (recorded)' else logging.INFO
    logger.log(level, 'checkpoint %s: using %s source %s (%s)%s', name, source.host, fetched.url, note,
               ' after falling back' if fell_back else '')


def _no_source_error(entry: Checkpoint, errors: list[str]) -> DownloadError:
    manual = [s.url for s in entry.sources if not s.direct]
    lines = [f'could not get checkpoint {entry.name!r}:'] + [f'  - {e}' for e in errors]
    if is_offline():
        lines.append(f'  offline mode ({ENV_OFFLINE}=1): on a machine with network run '
                     f'`backbones download {entry.name}` and copy {cache_dir()} here (or point '
                     f'{ENV_CACHE} at the copy)')
    if manual:
        lines.append('  download by hand from ' + ' or '.join(manual)
                     + f' and run `backbones download {entry.name} --from-file FILE`')
    cls = OfflineError if is_offline() else DownloadError
    return cls('\n'.join(lines))


def import_file(name: str, file: str | os.PathLike) -> Fetched:
    """Put a hand-downloaded file of checkpoint `name` into the cache (first source whose hash fits)."""
    entry = get_checkpoint(name)
    file = Path(file)
    sha = sha256_of(file)
    for source in entry.sources:
        if (source.sha256 and source.sha256 != sha) or (source.name_hash and not sha.startswith(source.name_hash)):
            continue
        dest = cache_path(source.url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + f'.import{os.getpid()}')
        shutil.copyfile(file, tmp)
        os.replace(tmp, dest)
        how = 'sha256' if source.sha256 else 'sha256-prefix' if source.name_hash else 'first-use (recorded)'
        _record(dest, source.url, sha, how)
        return Fetched(str(dest), source.url, sha, how, downloaded=False)
    raise HashMismatchError(f'{file}: sha256 {sha} matches no source of {name}')


def fetch_url(url: str, sha256: Optional[str] = None) -> Fetched:
    """A plain URL (not in the table) → verified local file (trust on first use unless `sha256`)."""
    return fetch_source(Source(url, 'openmmlab' if 'download.openmmlab.com' in url else 'url', 'ours',
                               sha256=sha256))


def resolve_checkpoint(source: str) -> str:
    """Zoo name, http(s) URL or path → local file path (downloaded and verified when needed)."""
    if os.path.isfile(source):
        return source
    if source in all_checkpoints():
        return fetch_checkpoint(source).path
    if source.startswith(('http://', 'https://')):
        try:
            fetched = fetch_url(source)
        except OfflineError:
            raise OfflineError(f'{source} is not cached and {ENV_OFFLINE}=1; download it on a machine with '
                               f'network (`backbones download {source}`) and copy {cache_dir()}') from None
        logger.info('checkpoint %s → %s (%s)', source, fetched.path, fetched.verification)
        return fetched.path
    try:
        get_checkpoint(source)  # raises a KeyError with close names
    except KeyError as err:
        raise FileNotFoundError(f'checkpoint {source!r} is neither a file, a URL nor a zoo name: '
                                f'{err.args[0]}') from None
    raise AssertionError('unreachable')


def cached_status(entry: Checkpoint) -> list[tuple[Source, Optional[Path]]]:
    """For every direct source of `entry`: the cached copy, if any."""
    out = []
    for source in entry.direct_sources:
        copies = _existing_copies(source)
        out.append((source, copies[0] if copies else None))
    return out
