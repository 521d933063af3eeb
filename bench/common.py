"""What the benchmark scripts share: how a run ends (its report printed, its files written); a process's memory."""

from __future__ import annotations

import json
from pathlib import Path


def finish(text: str, result: dict, out: Path, failed: str = "", quick: bool = False) -> int:
    """The end of a bench run, its exit status: the report ``text`` printed; then ``FAILED: <failed>`` and 1 when
    ``failed`` says why; a smoke run (``quick``) writes nothing; else ``out``.md (the report) and ``out``.json
    (``result``, every figure), the folder made when missing."""
    print(text)
    if failed:
        print(f"FAILED: {failed}")
        return 1
    if quick:
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


def memory_mib(pid: int) -> dict[str, float]:
    """A process's resident memory now (``VmRSS``) and its peak (``VmHWM``), in MiB; NaN for a field not found."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(rest.split()[0]) / 1024
    return {k: found.get(k, float("nan")) for k in ("VmRSS", "VmHWM")}


def rss_mb(pid: int) -> float:
    """A process's resident memory now, in MiB (NaN where not found)."""
    return memory_mib(pid)["VmRSS"]
