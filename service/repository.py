"""The model repository: ``<root>/<model>/<version>/`` bundles, loaded, watched, swapped without a dropped request.

A new version directory is verified (manifest, checksums, parity verdict), opened, warmed up and test-decoded
in the watcher thread while the current version keeps serving; only then does it become the default. A bundle
that fails any check is refused, logged and reported as FAILED (GetModel shows why); it is retried only when
its files change. The newest ``max_loaded_versions`` READY versions stay loaded, so a request may pin one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from g2p.bundle import BundleError
from g2p.ort_backend import Provider
from service.runtime import ModelVersion, load_version
from service.settings import Settings

log = logging.getLogger("g2p.repository")

LOADING, READY, FAILED, UNLOADED = "LOADING", "READY", "FAILED", "UNLOADED"


class ModelNotFound(LookupError):
    pass


@dataclass(frozen=True)
class VersionRecord:
    """What the repository knows of one version, as an immutable snapshot: a change replaces the record, so a
    reader sees a state and its model together, and the model a request took is never taken from it."""

    version: int
    path: Path
    state: str
    fingerprint: tuple[tuple[str, int, int], ...]
    error: str = ""
    model: ModelVersion | None = None


def fingerprint(path: Path) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime) of each file in a version directory, sorted: changed files change it. Empty if the
    directory cannot be read."""
    try:
        return tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir() if f.is_file()))
    except OSError:
        return ()


def version_directories(root: Path) -> dict[int, Path]:
    """The versions under a model's directory, by number: the subdirectories named by digits that hold a
    ``manifest.json`` (none if ``root`` is not a directory)."""
    if not root.is_dir():
        return {}
    return {
        int(p.name): p for p in root.iterdir() if p.is_dir() and p.name.isdigit() and (p / "manifest.json").exists()
    }


class ModelRepository:
    def __init__(
        self,
        settings: Settings,
        providers: list[Provider],
        on_change: Callable[[ModelRepository], None] | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.model_name
        self.root = settings.model_repository / settings.model_name
        self.providers = providers
        self.on_change = on_change
        self._records: dict[int, VersionRecord] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- queries
    def records(self) -> list[VersionRecord]:
        with self._lock:
            return sorted(self._records.values(), key=lambda r: r.version)

    def ready(self) -> list[ModelVersion]:
        return [r.model for r in self.records() if r.state == READY and r.model is not None]

    def default(self) -> ModelVersion | None:
        ready = self.ready()
        return ready[-1] if ready else None

    def get(self, name: str, version: int = 0) -> ModelVersion:
        """The version asked for (0 = newest READY), or ``ModelNotFound`` with a message naming what exists."""
        if name and name != self.name:
            raise ModelNotFound(f"model {name!r} not found (this server serves {self.name!r})")
        ready = {m.version: m for m in self.ready()}
        if version == 0:
            if not ready:
                raise ModelNotFound(f"model {self.name!r} has no ready version")
            return ready[max(ready)]
        if version not in ready:
            raise ModelNotFound(f"model {self.name!r} version {version} not found (ready: {sorted(ready)})")
        return ready[version]

    # ---------------------------------------------------------------- loading
    def scan(self) -> bool:
        """Load new or changed version directories (the newest ``max_loaded_versions`` + 2 are looked at), unload
        removed and surplus ones. True if anything changed (``on_change`` is then called)."""
        present = version_directories(self.root)
        changed = False
        for version in sorted(present, reverse=True)[: self.settings.max_loaded_versions + 2]:
            changed |= self._load_if_due(version, present[version])
        changed |= self._unload_stale(set(present))
        if changed and self.on_change is not None:
            self.on_change(self)
        return changed

    def _load_if_due(self, version: int, path: Path) -> bool:
        """Load a present version unless its record says not to (:meth:`_is_due`); while it loads (in this thread,
        the current versions serving meanwhile) its record says LOADING. True if it was loaded, READY or FAILED."""
        fp = fingerprint(path)
        if not self._is_due(version, fp):
            return False
        with self._lock:
            self._records[version] = VersionRecord(version, path, LOADING, fp)
        rec = self._load(version, path, fp)
        with self._lock:
            self._records[version] = rec
        return True

    def _is_due(self, version: int, fp: tuple[tuple[str, int, int], ...]) -> bool:
        """Whether to load a version whose files have fingerprint ``fp``: never a READY one (a served version is
        immutable: a change to it is ignored, export writes new versions), nor a FAILED or UNLOADED one whose files
        are the same, nor one older than the newest READY while ``max_loaded_versions`` are READY."""
        with self._lock:
            old = self._records.get(version)
        if old is not None and (old.state == READY or (old.state in (FAILED, UNLOADED) and old.fingerprint == fp)):
            return False
        ready = [r.version for r in self.records() if r.state == READY]
        older_than_kept = bool(ready) and version < max(ready) and len(ready) >= self.settings.max_loaded_versions
        return not older_than_kept

    def _unload_stale(self, present: set[int]) -> bool:
        """Unload the READY versions whose directory is gone, then the oldest READY ones beyond
        ``max_loaded_versions``, all under one hold of the lock. True if any was unloaded."""
        with self._lock:
            removed = [r for r in self._records.values() if r.state == READY and r.version not in present]
            for rec in removed:
                self._unload(rec, "unloaded removed version")
            ready = sorted(r.version for r in self._records.values() if r.state == READY)
            surplus = ready[: max(0, len(ready) - self.settings.max_loaded_versions)]
            for version in surplus:
                self._unload(self._records[version], "unloaded surplus version")
        return bool(removed or surplus)

    def _unload(self, rec: VersionRecord, why: str) -> None:
        """Drop the repository's reference to a version (under the lock). Requests that took the model keep it
        working; its decode threads stop once the last of them lets it go (``ModelVersion``)."""
        self._records[rec.version] = replace(rec, state=UNLOADED, model=None)
        log.info(why, extra={"model": self.name, "version": rec.version})

    def _load(self, version: int, path: Path, fp: tuple[tuple[str, int, int], ...]) -> VersionRecord:
        """Load one version: READY, or FAILED with the reason whatever the loader raised (a bundle check, or an
        onnxruntime error in the warm-up or the test decode). Either way the record keeps the files' fingerprint:
        the same files are never loaded twice, changed files are tried again."""
        try:
            model = load_version(path, self.settings, self.providers)
        except Exception as exc:
            error = str(exc) if isinstance(exc, BundleError) else f"{type(exc).__name__}: {exc}"
            log.error(
                "refused model version",
                extra={"model": self.name, "version": version, "error": error},
                exc_info=not isinstance(exc, BundleError),  # an unexpected failure: its trace helps
            )
            return VersionRecord(version, path, FAILED, fp, error=error)
        log.info(
            "loaded model version",
            extra={
                "model": self.name,
                "version": version,
                "providers": model.providers_used,
                "seconds": round(model.load_seconds, 3),
            },
        )
        return VersionRecord(version, path, READY, fp, model=model)

    def load_initial(self) -> ModelVersion:
        self.scan()
        default = self.default()
        if default is None:
            errors = "; ".join(f"version {r.version}: {r.error}" for r in self.records() if r.error)
            raise BundleError(
                f"no loadable version of model {self.name!r} under {self.root}"
                + (f" ({errors})" if errors else " (export one with `python -m export` or `make export`)")
            )
        return default

    # ---------------------------------------------------------------- watching
    def start_watching(self) -> None:
        if self.settings.watch_interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._watch, name="repository-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.settings.watch_interval_s):
            try:
                self.scan()
            except Exception:
                log.exception("repository scan failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
