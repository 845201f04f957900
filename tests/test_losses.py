"""identity_preservation_loss equals the per-frame loop it replaces, in one encoder call, with gradients only
to the generator."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labkit.losses import crop_faces, identity_preservation_loss, mask_boxes


class CountingEncoder(nn.Module):
    """A small stand-in recognizer: (N, 3, H, W) -> unit-norm (N, 512), counting its calls."""

    def __init__(self, frozen=True):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 512)
        self.calls = 0
        self.requires_grad_(not frozen)

    def forward(self, x):
        self.calls += 1
        h = F.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 4).flatten(1)
        return F.normalize(self.fc(h), dim=-1)


def loop_loss(video, refs, encoder, temporal_weight=0.5):
    """The straightforward version: one video at a time, one frame at a time."""
    losses = []
    for v, rf in zip(video, refs):
        ref_embed = torch.stack([encoder(r[None])[0] for r in rf]).mean(dim=0)
        frame_embeds = [encoder(frame[None])[0] for frame in v]
        reference = torch.stack([(e - ref_embed).square().sum() for e in frame_embeds]).mean()
        temporal = torch.stack([(frame_embeds[t] - frame_embeds[t + 1]).square().sum()
                                for t in range(len(v) - 1)]).mean()
        losses.append(reference + temporal_weight * temporal)
    return torch.stack(losses).mean()


def clips(b=2, f=5, r=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, f, 3, size, size, generator=g) * 2 - 1, torch.rand(b, r, 3, size, size, generator=g) * 2 - 1


@pytest.mark.parametrize("temporal_weight", [0.5, 2.0])
def test_loss_equals_the_per_frame_loop_in_one_encoder_call(temporal_weight):
    encoder = CountingEncoder()
    video, refs = clips()
    loss, terms = identity_preservation_loss(video, refs, encoder, temporal_weight, return_terms=True)
    assert encoder.calls == 1
    torch.testing.assert_close(loss, loop_loss(video, refs, encoder, temporal_weight), atol=1e-5, rtol=1e-5)
    assert terms["reference_per_frame"].shape == (2, 5) and terms["temporal_per_step"].shape == (2, 4)
    torch.testing.assert_close(loss, terms["reference"] + temporal_weight * terms["temporal"])


def test_unbatched_video_and_squared_distance_is_two_minus_two_cos():
    encoder = CountingEncoder()
    video, refs = clips(b=1, r=1)
    single = identity_preservation_loss(video[0], refs[0], encoder, 0.0)
    e = encoder(torch.cat([video[0], refs[0]]))
    cos = e[:5] @ e[5]
    torch.testing.assert_close(single, (2 - 2 * cos).mean(), atol=1e-5, rtol=1e-5)


def test_gradient_reaches_generator_input_but_never_the_encoder():
    encoder = CountingEncoder(frozen=False)  # even a trainable encoder must receive no gradient
    generator = nn.Conv2d(3, 3, 1)
    z = torch.randn(2 * 4, 3, 16, 16, requires_grad=True)
    video = generator(z).reshape(2, 4, 3, 16, 16)
    _, refs = clips(f=4)
    identity_preservation_loss(video, refs, encoder).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert generator.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in encoder.parameters())


def test_face_masks_crop_each_frame_to_its_face_box_differentiably():
    masks = torch.zeros(2, 16, 16)
    masks[0, 4:8, 6:10] = 1.0
    boxes = mask_boxes(masks, margin=0.0)
    torch.testing.assert_close(boxes[0], torch.tensor([6.0, 4.0, 10.0, 8.0]))
    torch.testing.assert_close(boxes[1], torch.tensor([0.0, 0.0, 16.0, 16.0]))  # empty mask: whole frame
    images = torch.zeros(2, 3, 16, 16, requires_grad=True)
    with torch.no_grad():
        images[0, :, 4:8, 6:10] = 1.0  # the face is white, the background black
    crops = crop_faces(images, masks)
    assert crops.shape == (2, 3, 16, 16) and crops[0].mean() > 0.4
    crops.sum().backward()
    assert images.grad[0, :, 4:8, 6:10].abs().sum() > 0

    encoder = CountingEncoder()
    video, refs = clips(b=1, f=3)
    face_masks = torch.zeros(1, 3, 16, 16)
    face_masks[..., 3:11, 4:12] = 1.0
    with_masks = identity_preservation_loss(video, refs, encoder, face_masks=face_masks)
    assert encoder.calls == 1
    background_only = video.clone()
    background_only[..., :, :2] = 5.0  # outside every face box: the masked loss must not see it
    torch.testing.assert_close(identity_preservation_loss(background_only, refs, encoder, face_masks=face_masks),
                               with_masks)
    assert (identity_preservation_loss(background_only, refs, encoder) - identity_preservation_loss(
        video, refs, encoder)).abs() > 1e-4


def test_single_frame_video_has_zero_temporal_term():
    video, refs = clips(b=1, f=1)
    _, terms = identity_preservation_loss(video, refs, CountingEncoder(), return_terms=True)
    assert terms["temporal"] == 0


def test_bad_inputs_raise_errors_naming_shapes():
    encoder = CountingEncoder()
    video, refs = clips()
    with pytest.raises(ValueError, match=r"R>=1.*\(2, 0, 3, 16, 16\)"):
        identity_preservation_loss(video, refs[:, :0], encoder)
    with pytest.raises(ValueError, match=r"batch 3"):
        identity_preservation_loss(video, torch.cat([refs, refs[:1]]), encoder)
    with pytest.raises(ValueError, match=r"\(B, F, H, W\)=\(2, 5, 16, 16\)"):
        identity_preservation_loss(video, refs, encoder, face_masks=torch.ones(2, 4, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, F>=1, 3, H, W\)"):
        identity_preservation_loss(video[:, :, :1], refs, encoder)
