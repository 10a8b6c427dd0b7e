"""Architecture facts of the published MoE-MAE: sizes, parameter counts, key table, GQA mapping."""

from __future__ import annotations

import pytest
import torch

from geomoe.model import build_model, config_for
from geomoe.model.layers import GroupedQueryAttention
from geomoe.model.layout import internal_to_published

PARAMS = {"S": (2_366_798, 2_537_562), "XS": (1_209_996, 1_379_032), "XXS": (657_817, 824_693)}


@pytest.mark.parametrize("size", sorted(PARAMS))
def test_parameter_counts_equal_the_paper(size, reference):
    model = build_model(size)
    assert (model.encoder_num_params(), model.num_params()) == PARAMS[size]
    ref = reference.RefMoEMAE(size)  # the reference-style implementation agrees
    assert sum(p.numel() for p in ref.encoder.parameters()) == PARAMS[size][0]
    assert sum(p.numel() for p in ref.parameters()) == PARAMS[size][1]


def test_layer_schedule_and_geometry():
    c = config_for("S")
    assert c.num_tokens == 105 and c.cls_index == 4 and c.patch_dim == 112 and c.num_patches == 100
    assert c.experts == [3] * 5 + [4] * 5 + [5] * 5
    assert c.expert_hidden[0] == 144 and c.expert_hidden[-1] == 72 and c.expert_hidden[1] == 138
    assert config_for("XXS").experts == [3] * 3 + [4] * 3 + [5] * 3
    assert config_for("XS").expert_hidden[0] == 96 and config_for("XS").expert_hidden[-1] == 32
    assert build_model("XS").embed_dim == 128
    with pytest.raises(ValueError, match="unknown model size"):
        build_model("L")


def test_published_key_table_matches_state_dict_tsv(ref_dir):
    """Our layout maps onto exactly the published keys and shapes (state_dict_S.tsv)."""
    expected = {}
    for line in (ref_dir / "state_dict_S.tsv").read_text().splitlines():
        key, shape = line.split("\t")
        expected[key] = shape
    model = build_model("S")
    pub = internal_to_published(model.state_dict(), model.config)
    assert {k: str(tuple(v.shape)) for k, v in pub.items()} == expected


@pytest.mark.parametrize("heads,groups", [(8, 4), (6, 3), (8, 2)])
def test_gqa_head_h_uses_group_h_mod_g(heads, groups, reference):
    """SDPA without K/V copies == hand-written attention with repeated (not interleaved) K/V."""
    torch.manual_seed(0)
    dim = 6 * heads
    ours, ref = GroupedQueryAttention(dim, heads, groups), reference.RefGQA(dim, heads, groups)
    with torch.no_grad():
        ours.qkv.weight.copy_(torch.cat([ref.q_proj.weight, ref.k_proj.weight, ref.v_proj.weight]))
        ours.qkv.bias.copy_(torch.cat([ref.q_proj.bias, ref.k_proj.bias, ref.v_proj.bias]))
        ours.proj.load_state_dict(ref.out_proj.state_dict())
        x = torch.randn(3, 11, dim)
        assert (ours(x) - ref(x)).abs().max() < 1e-5
        # and it is NOT the repeat_interleave mapping (head h -> group h // (H/G))
        q = ref.q_proj(x).view(3, 11, heads, -1).transpose(1, 2)
        k = ref.k_proj(x).view(3, 11, groups, -1).transpose(1, 2).repeat_interleave(heads // groups, 1)
        v = ref.v_proj(x).view(3, 11, groups, -1).transpose(1, 2).repeat_interleave(heads // groups, 1)
        wrong = ref.out_proj(torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(3, 11, dim))
        assert (ours(x) - wrong).abs().max() > 1e-3
