"""Bundle integrity: every file a manifest names is hashed, and no name leaves the bundle directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT

from g2p.bundle import BundleError, Manifest, VariantInfo, sha256_file, verify_bundle

SHIPPED_MANIFEST = ROOT / "models" / "g2p" / "1"
GRAPHS = {"encoder": "encoder.onnx", "decoder": "decoder.onnx", "decoder_step": "decoder_step.onnx"}
TOKENIZERS = {"source": "src_tokenizer.json", "target": "tgt_tokenizer.json"}


def small_bundle(directory: Path, **variants: dict[str, str]) -> Manifest:
    """A bundle of tiny stand-in files (verify_bundle reads bytes, not graphs) with the shipped manifest's other
    fields; every file in it is hashed. ``variants``: extra variants' files."""
    directory.mkdir(parents=True, exist_ok=True)
    names = {*GRAPHS.values(), *TOKENIZERS.values()}
    for name in names:
        (directory / name).write_bytes(name.encode())
    manifest = Manifest.read(SHIPPED_MANIFEST).model_copy(
        update={
            "tokenizer_files": TOKENIZERS,
            "lexicon_file": None,
            "variants": {"fp32": VariantInfo(files=GRAPHS, providers=["CPUExecutionProvider"])}
            | {v: VariantInfo(files=files, providers=["CPUExecutionProvider"]) for v, files in variants.items()},
            "sha256": {name: sha256_file(directory / name) for name in sorted(names)},
        }
    )
    manifest.write(directory)
    return manifest


def test_a_complete_small_bundle_verifies(tmp_path):
    small_bundle(tmp_path / "b")
    assert verify_bundle(tmp_path / "b").variants["fp32"].files == GRAPHS


def test_a_variant_file_missing_from_the_sha256_table_is_refused(tmp_path):
    d = tmp_path / "b"
    small_bundle(d, int8=GRAPHS | {"encoder": "int8_encoder.onnx"})
    (d / "int8_encoder.onnx").write_bytes(b"unhashed graph")
    with pytest.raises(BundleError, match=r"file 'int8_encoder.onnx' \(variants.int8.files.encoder\) is not listed"):
        verify_bundle(d)


def test_a_lexicon_file_missing_from_the_sha256_table_is_refused(tmp_path):
    d = tmp_path / "b"
    manifest = small_bundle(d)
    (d / "lexicon.tsv.gz").write_bytes(b"unhashed dictionary")
    manifest.model_copy(update={"lexicon_file": "lexicon.tsv.gz"}).write(d)
    with pytest.raises(BundleError, match=r"file 'lexicon.tsv.gz' \(lexicon_file\) is not listed"):
        verify_bundle(d)


def test_a_tokenizer_file_missing_from_the_sha256_table_is_refused(tmp_path):
    d = tmp_path / "b"
    manifest = small_bundle(d)
    manifest.model_copy(update={"sha256": {k: v for k, v in manifest.sha256.items() if "tgt" not in k}}).write(d)
    with pytest.raises(BundleError, match=r"file 'tgt_tokenizer.json' \(tokenizer_files.target\) is not listed"):
        verify_bundle(d)


@pytest.mark.parametrize("bad", ["ABSOLUTE", "../outside.onnx", "sub/../../outside.onnx", ""])
def test_names_that_leave_the_bundle_are_refused(tmp_path, bad):
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(b"a graph from elsewhere")
    name = str(outside) if bad == "ABSOLUTE" else bad
    d = tmp_path / "b"
    manifest = small_bundle(d)
    (d / "sub").mkdir()
    files = GRAPHS | {"encoder": name}
    manifest.model_copy(update={
        "variants": {"fp32": VariantInfo(files=files, providers=["CPUExecutionProvider"])},
        "sha256": manifest.sha256 | {name: sha256_file(outside)},
    }).write(d)  # fmt: skip
    with pytest.raises(BundleError, match=rf"file name {name!r} in the manifest is not a path inside the bundle"):
        verify_bundle(d)


def test_a_symlink_pointing_outside_the_bundle_is_refused(tmp_path):
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(b"a graph from elsewhere")
    d = tmp_path / "b"
    manifest = small_bundle(d)
    (d / "encoder.onnx").unlink()
    (d / "encoder.onnx").symlink_to(outside)
    manifest.model_copy(update={"sha256": manifest.sha256 | {"encoder.onnx": sha256_file(outside)}}).write(d)
    with pytest.raises(BundleError, match=r"file encoder.onnx points outside the bundle directory"):
        verify_bundle(d)
    (d / "encoder.onnx").unlink()
    (d / "encoder.onnx").symlink_to("decoder.onnx")  # a link inside the bundle is fine
    manifest.model_copy(update={"sha256": manifest.sha256 | {"encoder.onnx": sha256_file(d / "decoder.onnx")}}).write(d)
    verify_bundle(d)
