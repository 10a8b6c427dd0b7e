"""The published-format checkpoint gives the reference implementation's outputs (within 1e-4)."""

from __future__ import annotations

import pytest
import torch

from geomoe.model import load_checkpoint

TOL = 1e-4


def test_encoder_matches_reference_fixture(ref_model_S, ref_io, ref_meta):
    m = ref_model_S
    assert not m.training
    out = m.encode(ref_io["images"], **ref_meta)
    assert out.tokens.shape == (8, 105, 144)
    assert (out.tokens - ref_io["encoder_normed_tokens"]).abs().max() < TOL
    assert (out.raw_tokens - ref_io["encoder_raw_tokens"]).abs().max() < TOL
    assert abs(out.moe_loss.item() - ref_io["encoder_moe_loss"].item()) < 1e-6
    mean = m.embed(ref_io["images"], **ref_meta)  # default pooling = published probe vector
    assert mean.shape == (8, 144)
    assert (mean - ref_io["probe_embedding_meanpool_raw"]).abs().max() < TOL
    cls = m.embed(ref_io["images"], **ref_meta, pooling="cls")
    assert (cls - ref_io["cls_normed"]).abs().max() < TOL
    pm = m.embed(ref_io["images"], **ref_meta, pooling="patch_mean")
    assert torch.allclose(pm, out.tokens[:, 5:].mean(1))


def test_masked_forward_reproduces_fixture(ref_model_S, ref_io, ref_meta):
    r = ref_model_S.forward_mae(ref_io["images"], **ref_meta, ids_keep=ref_io["mae_ids_keep"])
    assert torch.equal(r.mask, ref_io["mae_mask"])
    assert torch.equal(r.target, ref_io["mae_target_patches"])
    assert (r.pred - ref_io["mae_pred"]).abs().max() < TOL
    for ours, key in [(r.loss_masked, "mae_loss_masked"), (r.loss_unmasked, "mae_loss_unmasked"),
                      (r.moe_loss, "mae_moe_loss"), (r.loss, "mae_loss_total")]:
        assert ours.shape == ()
        assert abs(ours.item() - ref_io[key].item()) <= 1e-5 * max(1.0, abs(ref_io[key].item())), key
    # restore indices agree wherever they are determined (kept patches; masked slots are interchangeable)
    kept = ref_io["mae_ids_keep"]
    assert torch.equal(r.ids_restore.gather(1, kept), ref_io["mae_ids_restore"].gather(1, kept))
    assert torch.equal(r.ids_keep, kept)


def test_without_metadata_matches_reference_impl(ref_dir, ref_model_S, ref_io, reference):
    ref = reference.RefMoEMAE("S").eval()
    ref.load_state_dict(torch.load(ref_dir / "ref_S_seed0.pth", weights_only=True)["model_state"])
    with torch.no_grad():
        tokens, loss, raw = ref.encoder(ref_io["images"])
    out = ref_model_S.encode(ref_io["images"])  # metadata None = zeros
    assert (out.tokens - tokens).abs().max() < TOL and (out.raw_tokens - raw).abs().max() < TOL
    assert abs(out.moe_loss.item() - loss.item()) < 1e-6


@pytest.mark.parametrize("size", ["S", "XS", "XXS"])
def test_published_format_round_trip_every_size(size, tmp_path, ref_io, ref_meta, reference):
    """A published-layout checkpoint written by the reference-style code loads and matches it."""
    torch.manual_seed(7)
    ref = reference.RefMoEMAE(size).eval()
    path = tmp_path / f"pretrained_{size}_best.pth"
    torch.save({"epoch": 3, "model_state": ref.state_dict(), "opt_state": {}, "scaler_state": {},
                "best_train_loss": 1.5}, path)
    model = load_checkpoint(path)
    assert model.config.size == size and not model.training
    assert model.checkpoint_extra == {"epoch": 3, "best_train_loss": 1.5}
    images = ref_io["images"]
    with torch.no_grad():
        for meta in (ref_meta, {}):
            tokens, loss, raw = ref.encoder(images, **meta)
            out = model.encode(images, **meta)
            assert (out.tokens - tokens).abs().max() < TOL, (size, bool(meta))
            assert (out.raw_tokens - raw).abs().max() < TOL
            assert abs(out.moe_loss.item() - loss.item()) < 1e-6
        ids = torch.stack([torch.randperm(100, generator=torch.Generator().manual_seed(i))[:25] for i in range(8)])
        pred, mask, _, moe = ref(images, **ref_meta, ids_keep=ids)
        r = model.forward_mae(images, **ref_meta, ids_keep=ids)
        assert (r.pred - pred).abs().max() < TOL and torch.equal(r.mask, mask)
        assert abs(r.loss.item() - reference.mae_loss(ref, images, pred, mask, moe).item()) < 1e-3
