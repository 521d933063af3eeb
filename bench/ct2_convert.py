"""Bench-only: our checkpoint -> a CTranslate2 Transformer model, so CTranslate2 runs the SAME weights.

    python bench/ct2_convert.py --checkpoint checkpoints/cmudict-default/best.pt --out /tmp/ct2 [--quantization int8]

The mapping (pre-norm encoder-decoder, ReLU FFN): Q/K/V projections fused into CTranslate2's one QKV linear
(self-attention) or Q + fused KV (cross-attention); embeddings scaled by sqrt(d_model); the paper's interleaved
sinusoidal table passed explicitly as position encodings (CTranslate2's built-in table is the concatenated
[sin | cos] form); LayerNorm epsilon 1e-5 as in torch; tied output projection without bias. The source keeps our
explicit ``</s>``; decoding starts from ``<s>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _np(t) -> np.ndarray:
    return t.detach().cpu().float().numpy()


def build_spec(checkpoint: Path):
    from ctranslate2 import specs

    from g2p.tokenization import G2PTokenizers
    from training import checkpoint as ckpt
    from training.model import sinusoidal_table

    loaded = ckpt.load_model(checkpoint)
    cfg, sd = loaded.config, loaded.raw["model"]
    if not cfg.norm_first:
        raise SystemExit("only pre-norm checkpoints are converted")
    spec = specs.TransformerSpec.from_config((cfg.n_encoder_layers, cfg.n_decoder_layers), cfg.n_heads, pre_norm=True)

    def linear(dst, prefix: str) -> None:
        dst.weight = _np(sd[prefix + ".weight"])
        if prefix + ".bias" in sd:
            dst.bias = _np(sd[prefix + ".bias"])

    def norm(dst, prefix: str) -> None:
        dst.gamma, dst.beta = _np(sd[prefix + ".weight"]), _np(sd[prefix + ".bias"])

    def fused(dst, prefix: str, names: tuple[str, ...]) -> None:
        dst.weight = np.concatenate([_np(sd[f"{prefix}.{n}.weight"]) for n in names])
        dst.bias = np.concatenate([_np(sd[f"{prefix}.{n}.bias"]) for n in names])

    def self_attention_and_ffn(layer, p: str, norm_name: str) -> None:
        norm(layer.self_attention.layer_norm, f"{p}.{norm_name}.norm")
        fused(layer.self_attention.linear[0], f"{p}.self_attn", ("q_proj", "k_proj", "v_proj"))
        linear(layer.self_attention.linear[1], f"{p}.self_attn.out_proj")
        norm(layer.ffn.layer_norm, f"{p}.res_ff.norm")
        linear(layer.ffn.linear_0, f"{p}.ff.fc1")
        linear(layer.ffn.linear_1, f"{p}.ff.fc2")

    def stack(side, embed: str, max_len: int, final_norm: str) -> None:
        emb = side.embeddings[0] if isinstance(side.embeddings, list) else side.embeddings
        emb.weight = _np(sd[f"{embed}.tokens.weight"])
        side.scale_embeddings = True
        side.position_encodings.encodings = _np(sinusoidal_table(max_len, cfg.d_model))
        norm(side.layer_norm, final_norm)

    enc, dec = spec.encoder, spec.decoder
    stack(enc, "src_embed", cfg.max_source_len, "encoder_norm")
    for i, layer in enumerate(enc.layer):
        self_attention_and_ffn(layer, f"encoder_layers.{i}", "res_attn")
    stack(dec, "tgt_embed", cfg.max_target_len, "decoder_norm")
    dec.projection.weight = _np(sd["generator.weight"])
    for i, layer in enumerate(dec.layer):
        p = f"decoder_layers.{i}"
        self_attention_and_ffn(layer, p, "res_self")
        norm(layer.attention.layer_norm, f"{p}.res_cross.norm")
        linear(layer.attention.linear[0], f"{p}.cross_attn.q_proj")
        fused(layer.attention.linear[1], f"{p}.cross_attn", ("k_proj", "v_proj"))
        linear(layer.attention.linear[2], f"{p}.cross_attn.out_proj")

    tok = G2PTokenizers.load(Path(checkpoint).parent)
    for vocab, register in ((tok.src.get_vocab(), spec.register_source_vocabulary),
                            (tok.tgt.get_vocab(), spec.register_target_vocabulary)):  # fmt: skip
        register([t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])])
    spec.config.layer_norm_epsilon = 1e-5
    return spec


def convert(checkpoint: Path, out: Path, quantization: str | None = None) -> Path:
    import ctranslate2

    class _Converter(ctranslate2.converters.Converter):
        def _load(self):
            return build_spec(checkpoint)

    return Path(_Converter().convert(str(out), quantization=quantization, force=True))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "cmudict-default" / "best.pt")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quantization", default=None, help="e.g. int8, int8_float32 (default: float32)")
    args = ap.parse_args()
    print(convert(args.checkpoint, args.out, args.quantization))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
