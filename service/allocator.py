"""The C allocator the server runs on (``allocator`` setting).

glibc's malloc keeps freed chunks in its arenas: under mixed traffic the server's RSS rose 2.6-6.9 % over its first
minutes and held there while the memory in use stayed flat (fragmentation); jemalloc held the 10-minute soak within
3 % (docs/notes/2026-11-30-allocator.md). A process cannot change its allocator once started, so ``python -m
service`` re-executes itself (same PID: a container's PID 1 stays PID 1) with jemalloc in ``LD_PRELOAD`` before it
loads anything. The images install Debian's libjemalloc2; elsewhere ``auto`` uses it where it is installed and the
C library's malloc otherwise.
"""

from __future__ import annotations

import ctypes.util
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

AllocatorChoice = Literal["auto", "jemalloc", "system"]
_REEXEC_MARK = "G2P_ALLOCATOR_REEXEC"  # set on the re-executed process: never loop
# jemalloc's options unless MALLOC_CONF says otherwise: a background thread returns freed pages after 1 s even when
# the server is idle (by default they wait up to 10 s for the next allocations to trigger it: the RSS after a burst
# of wide beams stayed 1.3x the warm RSS). Side by side with glibc: bench/results/allocator.md.
MALLOC_CONF = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0"


def active(maps: Path = Path("/proc/self/maps")) -> str:
    """``jemalloc`` when the library is mapped into this process, else ``system`` (also where /proc is absent)."""
    try:
        text = maps.read_text()
    except OSError:
        return "system"
    return "jemalloc" if "libjemalloc" in text else "system"


def jemalloc_library() -> str | None:
    """The installed jemalloc's shared object name (``libjemalloc.so.2``; the dynamic loader finds it), or None."""
    return ctypes.util.find_library("jemalloc")


@functools.cache
def _mallctl() -> Any:
    """jemalloc's ``mallctl`` (looked up once: a process does not change its allocator), or None."""
    try:
        fn = ctypes.CDLL(None).mallctl  # in the process's global namespace when jemalloc is preloaded
    except AttributeError:
        return None
    fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def thread_cache_enabled() -> bool | None:
    """Whether jemalloc keeps a cache for the calling thread; None where the process is not on jemalloc."""
    mallctl = _mallctl()
    if mallctl is None:
        return None
    value, size = ctypes.c_bool(), ctypes.c_size_t(ctypes.sizeof(ctypes.c_bool))
    mallctl(b"thread.tcache.enabled", ctypes.byref(value), ctypes.byref(size), None, 0)
    return value.value


def _set_thread_cache(enabled: bool) -> None:
    mallctl = _mallctl()
    if mallctl is not None:
        value = ctypes.c_bool(enabled)
        mallctl(b"thread.tcache.enabled", None, None, ctypes.byref(value), ctypes.sizeof(value))


def disable_thread_cache() -> None:
    """Turn jemalloc's per-thread cache off for the calling thread (a no-op elsewhere): the RPC threads' initializer.

    A thread's cache is trimmed only by that thread's own allocations, so the hundreds of RPC threads an overload
    wakes each kept theirs filled once idle: the overload suite's RSS 2 s after the load was 1.25x warm with them,
    1.05x with no cache in any thread. The engine's workers, which run onnxruntime's many small allocations, keep
    theirs, and an RPC thread that decodes its request inline has one for that time (``thread_cache``)."""
    _set_thread_cache(False)


@contextmanager
def thread_cache() -> Iterator[None]:
    """jemalloc's cache for the calling thread while the block runs (an RPC thread decoding inline: 150 single words
    over the wire took 1.09x glibc's time without it), handed back (flushed) when it ends."""
    if thread_cache_enabled() is not False:  # already on, or not jemalloc
        yield
        return
    _set_thread_cache(True)
    try:
        yield
    finally:
        _set_thread_cache(False)


class AllocatorError(RuntimeError):
    """``allocator=jemalloc`` asked for where it cannot be loaded."""


def preload_env(choice: AllocatorChoice, environ: dict[str, str] | None = None) -> dict[str, str] | None:
    """The environment to re-execute with so that jemalloc serves this process's mallocs, or None when no re-exec
    is due: ``system`` asked for, jemalloc already mapped, ``auto`` where it is not installed. Raises
    AllocatorError for ``jemalloc`` where the library is missing or a re-exec already failed to load it."""
    env = dict(os.environ if environ is None else environ)
    if choice == "system" or active() == "jemalloc":
        return None
    library = None if env.get(_REEXEC_MARK) else jemalloc_library()
    if library is None:
        if choice == "jemalloc":
            raise AllocatorError(
                "allocator=jemalloc (G2P_ALLOCATOR): libjemalloc is not installed or could not be preloaded "
                "(Debian/Ubuntu: apt-get install libjemalloc2); allocator=auto falls back to the C library's malloc"
            )
        return None
    env["LD_PRELOAD"] = " ".join(filter(None, [library, env.get("LD_PRELOAD", "")]))
    env.setdefault("MALLOC_CONF", MALLOC_CONF)
    env[_REEXEC_MARK] = "1"
    return env
