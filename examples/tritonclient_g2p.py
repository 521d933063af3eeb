"""Call the G2P server's KServe v2 endpoint with NVIDIA's tritonclient (pip install "tritonclient[grpc]").

    python examples/tritonclient_g2p.py --target 127.0.0.1:50051 hello world
    python examples/tritonclient_g2p.py --beam 5 speech
    python examples/tritonclient_g2p.py --encoder --bundle models/g2p/1 hello   # the encoder as a tensor model

Prints word<TAB>phonemes lines (or the encoder output's shape and dtype).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import tritonclient.grpc as tc


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("words", nargs="+")
    ap.add_argument("--target", default="127.0.0.1:50051")
    ap.add_argument("--model", default="g2p")
    ap.add_argument("--beam", type=int, default=None)
    ap.add_argument("--encoder", action="store_true", help="send character ids to <model>_encoder instead")
    ap.add_argument("--bundle", default="models/g2p/1", help="bundle whose src_tokenizer.json maps characters")
    args = ap.parse_args()
    client = tc.InferenceServerClient(args.target)
    if not args.encoder:
        text = tc.InferInput("text_input", [len(args.words)], "BYTES")
        text.set_data_from_numpy(np.array([w.encode() for w in args.words], dtype=object))
        params = {"beam_size": args.beam} if args.beam else None
        result = client.infer(args.model, [text], parameters=params)
        for word, phonemes in zip(args.words, result.as_numpy("text_output"), strict=True):
            print(f"{word}\t{phonemes.decode()}")
        return 0
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(f"{args.bundle}/src_tokenizer.json")
    rows = [[*tok.encode(w).ids, 2] for w in args.words]  # 2 = </s>; 0 = padding
    ids = np.zeros((len(rows), max(map(len, rows))), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    meta = client.get_model_metadata(f"{args.model}_encoder")
    src = tc.InferInput("src_ids", list(ids.shape), "INT64")
    src.set_data_from_numpy(ids)
    memory = client.infer(f"{args.model}_encoder", [src]).as_numpy("memory")
    print(json.dumps({"model": meta.name, "shape": list(memory.shape), "dtype": str(memory.dtype)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
