"""How well a recognizer's embeddings separate identities, measured on held-out synthfaces people (notebook 03).

:func:`verification_metrics` (ROC-AUC, EER, TAR at FAR=1e-3 from pair similarities),
:func:`cosine_ceiling_and_floor` (mean cosine of one person's frames and of two people's, within a shot and
across a cut), :func:`lookalike_verification` (every impostor wears the genuine person's look) and
:func:`verification_report`, all of them (``python -m labkit.faces bench`` prints it).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from labkit.faces import embed, load_recognizer
from labkit.synthfaces import identity_traits, make_clips, render, render_faces, sample_nuisances, test_ids


def verification_metrics(genuine: np.ndarray, impostor: np.ndarray) -> dict:
    """ROC-AUC, EER and TAR at FAR=1e-3 from genuine (same identity) and impostor pair similarities."""
    y = np.r_[np.ones(len(genuine)), np.zeros(len(impostor))]
    s = np.r_[genuine, impostor]
    fpr, tpr, _ = roc_curve(y, s)
    fnr = 1 - tpr
    i = np.nanargmin(np.abs(fnr - fpr))
    return {"roc_auc": float(roc_auc_score(y, s)), "eer": float((fpr[i] + fnr[i]) / 2),
            "tar_at_far_1e-3": float(np.interp(1e-3, fpr, tpr))}


def cosine_ceiling_and_floor(backbone, size: int = 64, num_identities: int = 48, num_frames: int = 8,
                             seed: int = 0, device=None) -> dict:
    """The ceiling and floor cosine levels of ``backbone`` on held-out synthfaces identities.

    ceiling: same identity, other nuisances (pose, expression, blink) within one shot; ceiling_cut: same
    identity across a cut (camera, background and lighting changed); floor: different identities (floor_cut:
    the same from clips with cuts). Returns a dict of floats (also the gaps ceiling - floor).
    """
    g = torch.Generator().manual_seed(seed)
    ids = test_ids(num_identities, offset=seed * 10_000)
    out = {}
    for cuts in (0, 1):
        clips = make_clips(ids, num_frames, size, num_refs=0, num_cuts=cuts, generator=g, device=device)
        e = embed(backbone, clips.frames)  # (M, F, D)
        sim = torch.einsum("mfd,ngd->mfng", e, e)
        same_id = torch.eye(num_identities, dtype=torch.bool).view(num_identities, 1, num_identities, 1)
        shot = clips.cuts.long().cumsum(1).cpu()
        same_shot = shot.view(num_identities, num_frames, 1, 1) == shot.view(1, 1, num_identities, num_frames)
        not_self = ~torch.eye(num_frames, dtype=torch.bool).view(1, num_frames, 1, num_frames)
        floor = sim[~same_id.expand_as(sim)].mean().item()
        if cuts == 0:
            out["ceiling"] = sim[(same_id & not_self).expand_as(sim)].mean().item()
            out["floor"] = floor
        else:
            out["ceiling_cut"] = sim[(same_id & ~same_shot).expand_as(sim)].mean().item()
            out["floor_cut"] = floor
    out["gap"], out["gap_cut"] = out["ceiling"] - out["floor"], out["ceiling_cut"] - out["floor_cut"]
    return out


def verification_report(backbone=None, size: int = 64, num_identities: int = 200, images_per_identity: int = 4,
                        seed: int = 0, device=None) -> dict:
    """Face verification on held-out synthfaces identities (random nuisances per image, so pairs cross
    shots): ROC-AUC, EER, TAR at FAR=1e-3, plus :func:`cosine_ceiling_and_floor` and the same figures against
    look-alike impostors only (``lookalike_*``). ``backbone`` defaults to the synthfaces recognizer."""
    backbone = backbone if backbone is not None else load_recognizer()
    g = torch.Generator().manual_seed(1000 + seed)
    ids = test_ids(num_identities, offset=seed * 10_000).repeat_interleave(images_per_identity)
    images, _ = render_faces(ids, size, g, device)
    e = embed(backbone, images)
    sim = (e @ e.T).numpy()
    same = (ids[:, None] == ids[None, :]).numpy()
    upper = np.triu(np.ones_like(same), 1).astype(bool)
    report = verification_metrics(sim[same & upper], sim[~same & upper])
    report.update(cosine_ceiling_and_floor(backbone, size=size, seed=seed, device=device))
    report.update({f"lookalike_{k}": v for k, v in lookalike_verification(backbone, size, num_identities,
                                                                          images_per_identity, seed).items()})
    report["size"] = size
    return report


def lookalike_verification(backbone, size: int = 64, num_identities: int = 200, images_per_identity: int = 4,
                           seed: int = 0) -> dict:
    """Verification where every impostor is a look-alike: genuine pairs are two pictures of one held-out person;
    impostor pairs are a picture of that person and one of another person wearing their colours, hair and
    accessories (``identity_traits(look_from=...)``). ROC-AUC, EER, TAR at FAR=1e-3."""
    g = torch.Generator().manual_seed(2000 + seed)
    ids = test_ids(num_identities, offset=20_000 + seed * 10_000)
    others = test_ids(num_identities, offset=40_000 + seed * 10_000)
    k = images_per_identity
    who = ids.repeat_interleave(k)
    person, _ = render(identity_traits(who), sample_nuisances(len(who), g), size)
    look, _ = render(identity_traits(others.repeat_interleave(k), look_from=who), sample_nuisances(len(who), g), size)
    e_p = embed(backbone, person).view(num_identities, k, -1)
    e_l = embed(backbone, look).view(num_identities, k, -1)
    pairs = torch.triu_indices(k, k, 1)
    genuine = torch.einsum("nid,nid->ni", e_p[:, pairs[0]], e_p[:, pairs[1]]).flatten()
    impostor = torch.einsum("nid,njd->nij", e_p, e_l).flatten()
    return verification_metrics(genuine.numpy(), impostor.numpy())

