"""The serving side must never import torch: the core modules it uses are checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

CORE = ["g2p.tokenization", "g2p.decoding", "g2p.pipeline", "g2p.metrics", "g2p.lexicon", "g2p.bundle",
        "g2p.ort_backend", "service.server", "service.servicers", "service.engine", "service.repository",
        "service.runtime", "service.settings", "service.client", "service.__main__"]  # fmt: skip


def test_core_modules_do_not_import_torch():
    code = "import sys\n" + "".join(f"import {m}\n" for m in CORE) + "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
