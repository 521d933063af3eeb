"""Run in its own interpreter by test_service.py: tritonclient's generated `inference` protos clash with the
server's in one process (same package, as the protocol requires), exactly as a separate client app would run.

    python tests/v2_probe.py TARGET WORD... -> one JSON object of results on stdout
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException, serialize_byte_tensor


def raw_bytes_input(name: str, items: list[bytes], datatype: str = "BYTES", shape: list[int] | None = None):
    t = tc.InferInput(name, shape or [len(items)], datatype)
    t._raw_content = serialize_byte_tensor(np.array(items, dtype=object)).item()
    return t


def status(fn) -> list[str]:
    try:
        fn()
    except InferenceServerException as exc:
        return [str(exc.status()), exc.message()]
    return ["OK", ""]


def main() -> None:
    target, words = sys.argv[1], sys.argv[2:]
    c = tc.InferenceServerClient(target)
    out: dict = {
        "live": c.is_server_live(),
        "ready": c.is_server_ready(),
        "model_ready": [c.is_model_ready("g2p"), c.is_model_ready("g2p_encoder"), c.is_model_ready("g2p", "99")],
        "server_metadata": c.get_server_metadata().name,
    }
    meta = c.get_model_metadata("g2p")
    out["metadata"] = {"platform": meta.platform, "inputs": [(i.name, i.datatype, list(i.shape)) for i in meta.inputs],
                       "outputs": [(o.name, o.datatype, list(o.shape)) for o in meta.outputs],
                       "versions": list(meta.versions)}  # fmt: skip
    text = tc.InferInput("text_input", [len(words)], "BYTES")
    text.set_data_from_numpy(np.array([w.encode() for w in words], dtype=object))
    for beam in (1, 5):
        result = c.infer("g2p", [text], parameters={"beam_size": beam})
        out[f"beam{beam}"] = [b.decode() for b in result.as_numpy("text_output")]
        out["version"] = result.get_response().model_version
    ids = np.array(json.loads(sys.stdin.read()), dtype=np.int64)
    src = tc.InferInput("src_ids", list(ids.shape), "INT64")
    src.set_data_from_numpy(ids)
    out["memory"] = c.infer("g2p_encoder", [src]).as_numpy("memory").tolist()
    out["errors"] = {
        "datatype": status(lambda: c.infer("g2p", [raw_bytes_input("text_input", [b"cat"], "INT64")])),
        "shape": status(lambda: c.infer("g2p", [raw_bytes_input("text_input", [b"cat", b"dog"], shape=[3])])),
        "alphabet": status(lambda: c.infer("g2p", [raw_bytes_input("text_input", [b"c@t"])])),
        "name": status(lambda: c.infer("g2p", [raw_bytes_input("words", [b"cat"])])),
        "beam": status(lambda: c.infer("g2p", [raw_bytes_input("text_input", [b"cat"])], parameters={"beam_size": 0})),
        "model": status(lambda: c.infer("nope", [raw_bytes_input("text_input", [b"cat"])])),
        "ids": status(lambda: c.infer("g2p_encoder", [_ids(np.array([[999]]))])),
        "ids_shape": status(lambda: c.infer("g2p_encoder", [_ids(np.array([1, 2, 3]))])),
    }
    print(json.dumps(out))


def _ids(a: np.ndarray):
    t = tc.InferInput("src_ids", list(a.shape), "INT64")
    t.set_data_from_numpy(a.astype(np.int64))
    return t


if __name__ == "__main__":
    main()
