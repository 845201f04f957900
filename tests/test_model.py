"""IdentityVideoDiT: shapes, conditions that matter, diffusers save/load, clear errors."""

import pytest
import torch

from labkit.model import IdentityVideoDiT, load_model

CFG = dict(sample_size=16, patch_size=4, max_frames=4, dim=32, depth=2, num_heads=2, identity_dim=32,
           num_identity_tokens=4)


def trained_like(model):
    """A fresh model outputs zeros (adaLN-Zero); give every parameter random values so conditions show."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return trained_like(IdentityVideoDiT(**CFG))


@pytest.fixture(scope="module")
def inputs():
    torch.manual_seed(1)
    x = torch.randn(2, 4, 3, 16, 16)
    emb = torch.nn.functional.normalize(torch.randn(2, 3, 512), dim=-1)
    return x, emb


def run(model, x, emb=None, strength=1.0, **kw):
    tokens = None if emb is None else model.encode_identity(emb)
    with torch.no_grad():
        return model(x, 500, cross_attention_kwargs={"identity_tokens": tokens, "identity_strength": strength},
                     **kw).sample


def test_fresh_model_predicts_zero_so_training_starts_from_the_identity_map():
    m = IdentityVideoDiT(**CFG)
    out = m(torch.randn(1, 4, 3, 16, 16), 10).sample
    assert out.shape == (1, 4, 3, 16, 16) and torch.count_nonzero(out) == 0


def test_output_shape_and_identity_strength_matters(model, inputs):
    x, emb = inputs
    base = run(model, x)
    assert base.shape == x.shape
    assert torch.allclose(run(model, x, emb, strength=0.0), base, atol=1e-6)
    weak, strong = run(model, x, emb, 0.5), run(model, x, emb, 1.5)
    assert (weak - base).abs().mean() > 1e-3
    assert (strong - base).abs().mean() > (weak - base).abs().mean()


def test_different_identities_give_different_predictions(model, inputs):
    x, emb = inputs
    other = torch.nn.functional.normalize(torch.randn(2, 3, 512), dim=-1)
    assert (run(model, x, emb) - run(model, x, other)).abs().mean() > 1e-3


def test_context_frames_are_read_only_where_flagged(model, inputs):
    x, _ = inputs
    ctx = torch.randn_like(x)
    none = torch.zeros(2, 4, dtype=torch.bool)
    first = none.clone()
    first[:, 0] = True
    unflagged = run(model, x, context_frames=ctx, context_mask=none)
    assert torch.allclose(unflagged, run(model, x), atol=1e-6)
    flagged = run(model, x, context_frames=ctx, context_mask=first)
    assert (flagged - unflagged).abs().mean() > 1e-3
    # The context reaches later frames through temporal attention, not only frame 0.
    assert (flagged[:, 1:] - unflagged[:, 1:]).abs().mean() > 1e-4


def test_face_masks_gate_identity(model, inputs):
    x, emb = inputs
    zero = torch.zeros(2, 4, 16, 16)
    assert torch.allclose(run(model, x, emb, face_masks=zero), run(model, x), atol=1e-5)


def test_save_and_load_roundtrip_with_safetensors(model, inputs, tmp_path):
    x, emb = inputs
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "diffusion_pytorch_model.safetensors").exists()
    loaded = load_model(tmp_path / "m")
    assert loaded.config.dim == CFG["dim"]
    assert torch.allclose(run(loaded, x, emb), run(model, x, emb), atol=1e-6)


def test_a_checkpoint_whose_token_design_does_not_match_its_config_is_refused(model, tmp_path):
    import json

    model.save_pretrained(tmp_path / "m")
    config = tmp_path / "m" / "config.json"
    data = json.loads(config.read_text())
    assert data["identity_token_design"] == "face_only"
    data["identity_token_design"] = "resampler"
    config.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="identity_token_design='resampler'.*trained with 'face_only' tokens"):
        load_model(tmp_path / "m")


def test_face_only_tokens_differ_between_faces_and_follow_the_embedding_only():
    fresh = IdentityVideoDiT(**CFG)
    emb = torch.nn.functional.normalize(torch.randn(3, 512, generator=torch.Generator().manual_seed(0)), dim=-1)
    with torch.no_grad():
        tokens = fresh.encode_identity(emb)
        same = fresh.encode_identity(emb[:1].expand(3, -1))
    assert tokens.shape == (3, 4, 32)
    assert (tokens[0] - tokens[1]).norm() > 0.5 * tokens[0].norm()  # not a shared bank plus a small shift
    assert torch.allclose(same[0], same[2])
    assert not hasattr(fresh.identity_encoder, "identity_bank")


def test_corrupt_checkpoint_gives_a_clear_error(model, tmp_path):
    model.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(ValueError, match="corrupt"):
        load_model(tmp_path / "m")
    with pytest.raises(ValueError, match="no IdentityVideoDiT checkpoint"):
        load_model(tmp_path / "nowhere")


def test_bad_inputs_name_the_shapes(model):
    with pytest.raises(ValueError, match="at most 4 frames"):
        model(torch.randn(1, 5, 3, 16, 16), 1)
    with pytest.raises(ValueError, match=r"\(B, F, 3, 16, 16\)"):
        model(torch.randn(1, 4, 3, 8, 8), 1)
    with pytest.raises(ValueError, match="unknown cross_attention_kwargs"):
        model(torch.randn(1, 4, 3, 16, 16), 1, cross_attention_kwargs={"scale": 1.0})
