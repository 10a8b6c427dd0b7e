"""geomoe checkpoint format, and the specific errors for unsafe or broken checkpoints."""

from __future__ import annotations

import hashlib
import json
import pickle

import pytest
import torch

from geomoe.errors import CheckpointError, GeomoeError
from geomoe.model import build_model, checkpoint_sha256, load_checkpoint, save_checkpoint, save_published


def test_geomoe_format_round_trip(tmp_path, ref_model_S, ref_io, ref_meta):
    path = tmp_path / "sub" / "model.safetensors"
    save_checkpoint(ref_model_S, path, extra={"step": 12, "data": "bigearthnet"})
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"]  # no tmp file left behind
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    cfg = json.loads(meta["config"])
    assert cfg["size"] == "S" and cfg["img_size"] == 40 and cfg["patch_size"] == 4
    assert cfg["bands"] == ["SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7"]
    assert len(cfg["norm_mean"]) == 7 and cfg["metadata_order"] == ["week", "hour", "lat", "lon"]
    loaded = load_checkpoint(path)
    assert loaded.config == ref_model_S.config and loaded.checkpoint_extra == {"step": 12, "data": "bigearthnet"}
    a = ref_model_S.encode(ref_io["images"], **ref_meta).tokens
    assert torch.equal(loaded.encode(ref_io["images"], **ref_meta).tokens, a)
    assert checkpoint_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    # overwriting is atomic and keeps a loadable file
    save_checkpoint(build_model("XXS"), path)
    assert load_checkpoint(path).config.size == "XXS"


def test_save_published_then_load(tmp_path, ref_model_S, ref_io):
    path = save_published(ref_model_S, tmp_path / "pub.pth", epoch=1)
    sd = torch.load(path, weights_only=True)["model_state"]
    assert len(sd) == 692
    back = load_checkpoint(path)
    assert torch.equal(back.encode(ref_io["images"]).tokens, ref_model_S.encode(ref_io["images"]).tokens)


def test_extra_must_be_json(tmp_path):
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(build_model("XXS"), tmp_path / "m.safetensors", extra={"x": object()})


class _Payload:
    """Unpickling this runs code: it writes a file (what an attacker's checkpoint would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("container", ["torch-zip", "raw-pickle"])
def test_pickled_code_is_refused_and_never_runs(tmp_path, ref_dir, container):
    marker = tmp_path / "pwned.txt"
    state = torch.load(ref_dir / "ref_S_seed0.pth", weights_only=True)["model_state"]
    path = tmp_path / "evil.pth"
    payload = {"model_state": state, "epoch": _Payload(marker)}
    if container == "torch-zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    # the payload is real: an unsafe loader executes it
    live = tmp_path / "live.pth"
    live_marker = tmp_path / "live.txt"
    torch.save({"x": _Payload(live_marker)}, live)
    torch.load(live, weights_only=False)
    assert live_marker.read_text() == "pwned"
    with pytest.raises(CheckpointError, match="pickled Python objects/code") as exc:
        load_checkpoint(path)
    assert "never runs code" in str(exc.value) and "re-save" in str(exc.value)
    assert not marker.exists()


def test_wrong_shapes_list_keys_and_likely_size(tmp_path, reference):
    torch.manual_seed(0)
    other = reference.RefMoEMAE("XXS", img=36, patch=3, chans=3)  # the reference code's default geometry
    path = tmp_path / "xxs36.pth"
    torch.save({"model_state": other.state_dict(), "epoch": 0}, path)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    msg = str(exc.value)
    assert "wrong shape" in msg and "size XXS" in msg
    assert "encoder.pos_embed: file (1, 149, 108), model (1, 105, 108)" in msg
    assert "encoder.patch_proj.weight: file (108, 3, 3, 3), model (108, 7, 4, 4)" in msg


def test_one_edited_tensor_is_named(tmp_path, ref_dir):
    ck = torch.load(ref_dir / "ref_S_seed0.pth", weights_only=True)
    ck["model_state"]["encoder.layers.3.attn.k_proj.weight"] = torch.zeros(144, 144)
    torch.save(ck, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"encoder.layers.3.attn.k_proj.weight: file \(144, 144\), model \(72, 144\)") as exc:
        load_checkpoint(tmp_path / "bad.pth")
    assert "looks most like size S" in str(exc.value)


def test_missing_keys(tmp_path, ref_dir):
    ck = torch.load(ref_dir / "ref_S_seed0.pth", weights_only=True)
    sd = {k: v for k, v in ck["model_state"].items() if not k.startswith("decoder_layers.1.")}
    torch.save({"model_state": sd}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"34 keys missing .*decoder_layers\.1\.norm1\.weight") as exc:
        load_checkpoint(tmp_path / "partial.pth")
    assert "full checkpoint" in str(exc.value)


def test_unshared_expert_weights_are_refused(tmp_path, ref_dir):
    ck = torch.load(ref_dir / "ref_S_seed0.pth", weights_only=True)
    sd = dict(ck["model_state"])
    sd["encoder.layers.0.moe.experts.2.V.weight"] = sd["encoder.layers.0.moe.experts.2.V.weight"] + 1
    torch.save({"model_state": sd}, tmp_path / "edited.pth")
    with pytest.raises(CheckpointError, match="shares V across the experts"):
        load_checkpoint(tmp_path / "edited.pth")


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_truncated_file(tmp_path, ref_dir, fmt):
    src = ref_dir / "ref_S_seed0.pth"
    if fmt == "safetensors":
        src = save_checkpoint(build_model("XXS"), tmp_path / "full.safetensors")
    data = src.read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(cut)


def test_not_a_checkpoint(tmp_path, ref_dir, shared_data):
    tif = next((shared_data / "bigearthnet-landsat-sample" / "images").glob("*.tif"))
    for path in (tif, ref_dir / "state_dict_S.tsv"):
        with pytest.raises(CheckpointError, match="not a model checkpoint"):
            load_checkpoint(path)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not an MoE-MAE checkpoint"):
        load_checkpoint(tmp_path / "list.pth")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="none of which belong to an MoE-MAE"):
        load_checkpoint(tmp_path / "other.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    assert issubclass(CheckpointError, GeomoeError)


@pytest.mark.parametrize("protocol", [2, 4, pickle.HIGHEST_PROTOCOL])
def test_plain_pickle_is_refused_clearly(tmp_path, ref_dir, protocol):
    """pickle.dump of a dict of tensors (as many training scripts save) to a .pth: the same
    refusal as a torch pickle with code, not torch's "Unsupported operand 149" text."""
    state = torch.load(ref_dir / "ref_S_seed0.pth", weights_only=True)["model_state"]
    path = tmp_path / "plain.pth"
    with path.open("wb") as fh:
        pickle.dump({"model_state": state}, fh, protocol=protocol)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path)
    msg = str(exc.value)
    assert msg.startswith(f"refusing to load {path}: it is a plain Python pickle (pickle.dump, "
                          f"protocol {protocol})")
    assert "never runs code" in msg and "re-save only its tensors" in msg
    assert "Unsupported operand" not in msg and "\n" not in msg


def test_torch_legacy_pickle_still_loads(tmp_path, ref_dir):
    """torch.save's non-zip format is pickle protocol 2 too: it must not be taken for a plain pickle."""
    src = torch.load(ref_dir / "ref_S_seed0.pth", weights_only=True)
    path = tmp_path / "legacy.pth"
    torch.save(src, path, _use_new_zipfile_serialization=False)
    assert load_checkpoint(path).config.size == "S"
