"""Bad inputs: every public entry point either works or refuses with a clear error of the kit's own.

Each entry point gets wrong shapes, wrong dtypes, NaN/inf, empty batches, sizes too big to allocate, truncated
and bit-flipped files (hypothesis draws many of them). Every call goes through :func:`probe`, which holds
the rule: the call returns a result that passes its check (when the input turns out to be acceptable), or
it raises ValueError/TypeError *raised in labkit's own code* with a one-line message that names the argument
or the shape, never an error from deep inside torch, a hang, or a silently wrong answer.

Models here are tiny and randomly initialised (the shipped ones are not needed), so the suite runs in well
under a minute on a 2-core CPU. The terminal summary prints how many entry points and bad inputs were tried
(``tests/conftest.py``).
"""

from __future__ import annotations

import contextlib
import math
import signal
import subprocess
import sys
import traceback
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import labkit

LABKIT_DIR = Path(labkit.__file__).resolve().parent
REPO = LABKIT_DIR.parent
#: Read by the terminal summary in conftest.py.
BAD_INPUT_STATS = {"entry_points": set(), "bad_inputs": 0, "good_inputs": 0}
#: Few examples, no deadline, the same examples every run, and no example database written into the repository.
FUZZ = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
#: A side no image may have: shapes built with expand/broadcast_to use no memory, so only the check stops them.
HUGE = 100_000
#: Seconds one call may take before it counts as a hang.
HANG_SECONDS = 30
NAN, INF = float("nan"), float("inf")


class Hang(Exception):
    pass


class ClearExit(ValueError):
    """A command line that stopped with status 2 and one clear line (argparse's usage error or ERROR: ...)."""


@contextlib.contextmanager
def _time_limit(seconds):
    def alarm(*_):
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _raised_in_labkit(err: BaseException) -> bool:
    """The innermost frame is a ``raise`` statement in labkit's code (not torch, not a C function labkit called)."""
    frames = traceback.extract_tb(err.__traceback__)
    return (bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(LABKIT_DIR)
            and (frames[-1].line or "").lstrip().startswith("raise"))


def probe(entry: str, call, names=("shape",), expect: str = "refuse", check=None, label: str = ""):
    """Give one bad input to ``entry`` through ``call()`` and hold it to the rule.

    expect: "refuse" (the input is wrong: a clear error is the only right answer), "either" (it may be
    acceptable: a result must then pass ``check``) or "work". A clear error is a ValueError or TypeError
    raised in labkit's code, one line, naming one of ``names`` (the argument, or e.g. "shape").
    Returns the result or the error.
    """
    BAD_INPUT_STATS["entry_points"].add(entry)
    BAD_INPUT_STATS["good_inputs" if expect == "work" else "bad_inputs"] += 1
    entry = f"{entry} [{label}]" if label else entry
    try:
        with _time_limit(HANG_SECONDS), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = call()
    except (ValueError, TypeError) as err:
        message = str(err)
        where = traceback.extract_tb(err.__traceback__)[-1]
        own = isinstance(err, ClearExit) or _raised_in_labkit(err)
        assert own, (f"{entry}: {type(err).__name__} from {where.filename}:{where.lineno}, not from labkit's own "
                     f"checks: {message[:300]}")
        assert expect != "work", f"{entry} refused an acceptable input: {message}"
        assert "\n" not in message.strip(), f"{entry}: the message is not one line: {message!r}"
        named = any(n.lower() in message.lower() for n in names)
        assert named, f"{entry}: the message names none of {names}: {message}"
        return err
    except Hang as err:
        pytest.fail(f"{entry} hung: {err}")
    except Exception as err:  # noqa: BLE001 - anything else is a failure of the rule
        tb = "".join(traceback.format_exception(err)[-6:])
        pytest.fail(f"{entry}: {type(err).__name__} instead of a clear ValueError/TypeError:\n{tb}")
    assert expect != "refuse", f"{entry} accepted a bad input and returned {type(result).__name__}"
    if check is not None:
        check(result)
    return result


def _describe(x) -> str:
    """A short description of a bad input for failure messages: shapes and dtypes, not values."""
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return f"{type(x).__name__}{tuple(x.shape)} {x.dtype}"
    if isinstance(x, torch.nn.Module):
        return type(x).__name__
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in x.items()) + "}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_describe(v) for v in x) + "]" if len(x) <= 4 else f"{type(x).__name__} of {len(x)}"
    return repr(x)[:60]


def flip_bit(data: bytes, position: int, bit: int) -> bytes:
    b = bytearray(data)
    b[position % len(b)] ^= 1 << bit
    return bytes(b)


# ------------------------------------------------------------------------------------------ small models
@pytest.fixture(scope="module")
def recognizer_file(tmp_path_factory):
    """A randomly initialised synthfaces recognizer, as a .safetensors and a .pt weights file."""
    from safetensors.torch import save_file

    from labkit.faces import SynthFaceNet

    torch.manual_seed(0)
    sd = {k: v.contiguous() for k, v in SynthFaceNet().state_dict().items()}
    folder = tmp_path_factory.mktemp("recognizer")
    save_file(sd, str(folder / "random.safetensors"))
    torch.save(sd, folder / "random.pt")
    return folder / "random.safetensors"


@pytest.fixture(scope="module")
def recognizer(recognizer_file):
    from labkit.faces import FaceRecognitionBackbone

    return FaceRecognitionBackbone(recognizer_file)


@pytest.fixture(scope="module")
def tiny_model():
    from labkit.model import IdentityVideoDiT

    torch.manual_seed(0)
    return IdentityVideoDiT(sample_size=32, max_frames=4, dim=32, depth=1, num_heads=2, identity_dim=32,
                            num_identity_tokens=4).eval()


@pytest.fixture(scope="module")
def pipe(tiny_model, recognizer):
    from labkit.pipeline import ReferenceConditionedGenerator, make_scheduler

    return ReferenceConditionedGenerator(tiny_model, make_scheduler("ddim"), recognizer=recognizer)


def _refs(b=1, r=2, size=32):
    return torch.rand(b, r, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1


# ------------------------------------------------------------------------------------------ faces.detect_faces
def _valid_numpy_image(arr: np.ndarray) -> bool:
    """The documented rule of ``labkit.face_detection._to_uint8_images`` for NumPy arrays."""
    shape_ok = arr.ndim == 2 or (arr.ndim in (3, 4) and arr.shape[-1] in (1, 3, 4))
    if not shape_ok or arr.dtype.kind not in "uif":
        return False
    if arr.size == 0:
        return True
    if arr.dtype.kind == "f":
        return bool(np.isfinite(arr).all()) and arr.min() >= -0.02 and arr.max() <= 1.02
    return arr.min() >= 0 and arr.max() <= 255


def _detections_consistent(n_images):
    def check(det):
        n = len(det.boxes)
        assert det.boxes.shape == (n, 4) and det.probs.shape == (n,) and det.crops.shape == (n, 3, 160, 160)
        assert len(det.image_index) == n and all(0 <= i < n_images for i in det.image_index.tolist())
        assert torch.isfinite(det.boxes).all() and torch.isfinite(det.crops).all()
    return check


_VALUES = {
    np.uint8: [0, 1, 128, 255], np.int16: [0, 200, -1, 300], np.int64: [0, 255, 256, -5],
    np.float16: [0.0, 0.5, 1.0, -0.5, 2.0, NAN, INF], np.float32: [0.0, 0.25, 1.0, -1.0, 255.0, NAN, -INF],
    np.float64: [0.0, 0.9, 1.01, 3.0, NAN], np.bool_: [False, True], np.complex64: [0j, 1 + 1j],
}


@st.composite
def numpy_images(draw):
    dtype = draw(st.sampled_from(list(_VALUES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=24))
    if draw(st.booleans()):  # often a plausible image layout with a wrong detail
        shape = draw(st.sampled_from([(24, 24), (24, 24, 1), (24, 24, 3), (24, 24, 4), (2, 24, 24, 3),
                                      (3, 24, 24), (24, 24, 2), (0, 24, 24, 3), (24, 0, 3), (1, 3, 24, 24)]))
    return draw(hnp.arrays(dtype, shape, elements=st.sampled_from(_VALUES[dtype])))


@FUZZ
@given(arr=numpy_images())
def test_detect_faces_numpy_arrays_of_any_shape_dtype_and_values(arr):
    from labkit.faces import detect_faces

    valid = _valid_numpy_image(arr)
    n = 0 if not valid else (1 if arr.ndim in (2, 3) else arr.shape[0])
    probe("faces.detect_faces", lambda: detect_faces(arr), names=("images",), expect="work" if valid else "refuse",
          check=_detections_consistent(n), label=_describe(arr))


@FUZZ
@given(shape=hnp.array_shapes(min_dims=1, max_dims=5, min_side=0, max_side=24),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.uint8, torch.int64, torch.bool]),
       fill=st.sampled_from([0.0, 0.5, -1.0, 1.0, 1.5, -3.0, NAN, INF]),
       plausible=st.booleans())
def test_detect_faces_tensors_of_any_shape_dtype_and_values(shape, dtype, fill, plausible):
    from labkit.faces import detect_faces

    if plausible:
        shape = (2, 3, 24, 24) if len(shape) % 2 else (3, 24, 24)
    x = torch.full(shape, fill).to(dtype) if dtype.is_floating_point else torch.full(shape, 1).to(dtype)
    layout_ok = x.ndim in (3, 4) and x.shape[-3] == 3
    values_ok = dtype == torch.uint8 or (dtype.is_floating_point and math.isfinite(fill) and abs(fill) <= 1)
    valid = layout_ok and values_ok
    n = 0 if not valid else (1 if x.ndim == 3 else x.shape[0])
    probe("faces.detect_faces", lambda: detect_faces(x), names=("images",), expect="work" if valid else "refuse",
          check=_detections_consistent(n))


def test_detect_faces_other_bad_inputs(tmp_path):
    from PIL import Image

    from labkit.faces import detect_faces

    grey_png = tmp_path / "grey16.png"
    Image.fromarray(np.full((32, 32), 40_000, np.uint16)).save(grey_png)
    refused = [
        None, "astronaut.png", 3, {"image": np.zeros((32, 32, 3), np.uint8)}, [[np.zeros((32, 32, 3), np.uint8)]],
        [np.zeros((32, 32, 3), np.uint8), "not an image"],
        np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (HUGE, HUGE, 3)),  # 30 GB if it were real
        np.broadcast_to(np.zeros((1, 1, 1, 3), np.float32), (HUGE, 64, 64, 3)),
        torch.zeros(1, 1, 1).expand(3, HUGE, HUGE), torch.zeros(1, 1, 1, 1).expand(HUGE, 3, 64, 64),
        Image.open(grey_png),  # 16-bit greyscale: values beyond 0..255
        np.zeros((32, 32, 3), object), np.array(["a", "b"]),
    ]
    for images in refused:
        probe("faces.detect_faces", lambda images=images: detect_faces(images), names=("images",),
              label=_describe(images))
    for min_prob in (NAN, 2.0, -0.1, "0.9", True, None):
        probe("faces.detect_faces", lambda m=min_prob: detect_faces(np.zeros((32, 32, 3), np.uint8), min_prob=m),
              names=("min_prob",))
    for images in ([], np.zeros((0, 32, 32, 3), np.uint8), torch.zeros(0, 3, 32, 32),
                   Image.fromarray(np.zeros((32, 32), np.float32)), [np.zeros((32, 32)), torch.zeros(3, 40, 30)]):
        probe("faces.detect_faces", lambda images=images: detect_faces(images), names=("images",), expect="work",
              check=_detections_consistent(2))


# ------------------------------------------------------------------------------------------ recognizer
@FUZZ
@given(shape=hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=40),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.float16, torch.uint8, torch.int64, torch.bool]),
       fill=st.sampled_from([0.0, 0.7, -1.0, NAN, INF]), plausible=st.booleans())
def test_recognizer_forward_any_shape_dtype_and_values(recognizer, shape, dtype, fill, plausible):
    if plausible:
        shape = (2, 3) + tuple(shape[-2:]) if len(shape) >= 2 else (2, 3, 32, 32)
    x = torch.full(shape, fill).to(dtype) if dtype.is_floating_point else torch.zeros(shape, dtype=dtype)
    valid = x.ndim == 4 and x.shape[1] == 3 and min(x.shape[-2:]) > 0 and dtype.is_floating_point

    def check(e):
        assert e.shape == (x.shape[0], 512)
        if math.isfinite(fill) and len(e):  # NaN in, NaN out is loud; finite in must give unit vectors
            assert torch.allclose(e.norm(dim=1), torch.ones(len(e)), atol=1e-3)

    probe("faces.FaceRecognitionBackbone.forward", lambda: recognizer(x), names=("images", "shape"),
          expect="work" if valid else "refuse", check=check)


def test_recognizer_forward_other_bad_inputs(recognizer):
    for x in (np.zeros((1, 3, 32, 32), np.float32), [torch.zeros(3, 32, 32)], None,
              torch.zeros(1, 1, 1, 1).expand(1, 3, HUGE, HUGE)):
        probe("faces.FaceRecognitionBackbone.forward", lambda x=x: recognizer(x), names=("images",))


@FUZZ
@given(fmt=st.sampled_from([".safetensors", ".pt"]), cut=st.floats(0.0, 0.999),
       flips=st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 7)), min_size=1, max_size=3))
def test_recognizer_weights_truncated_or_bit_flipped(recognizer_file, tmp_path_factory, fmt, cut, flips):
    from labkit.faces import FaceRecognitionBackbone

    data = recognizer_file.with_suffix(fmt).read_bytes()
    folder = tmp_path_factory.mktemp("damaged")
    truncated = folder / f"truncated{fmt}"
    truncated.write_bytes(data[: int(len(data) * cut)])
    probe("faces.FaceRecognitionBackbone(weights=file)", lambda: FaceRecognitionBackbone(truncated),
          names=(str(truncated),))
    flipped = folder / f"flipped{fmt}"
    for position, bit in flips:
        data = flip_bit(data, position, bit)
    flipped.write_bytes(data)

    def check(backbone):  # a flip inside a weight loads (no checksum in the format): it must still be usable
        assert all(torch.isfinite(t).all() for t in backbone.state_dict().values() if t.is_floating_point())
        assert backbone(torch.zeros(2, 3, 32, 32)).shape == (2, 512)

    probe("faces.FaceRecognitionBackbone(weights=file)", lambda: FaceRecognitionBackbone(flipped),
          names=(str(flipped),), expect="either", check=check)


# ------------------------------------------------------------------------------------------ metrics
def _metric(name):
    from labkit import metrics

    fn = getattr(metrics, name, None)
    assert fn is not None, f"labkit.metrics.{name} is missing: it is part of the kit's public metrics"
    return fn


@FUZZ
@given(frames_shape=st.sampled_from([(1, 2, 3, 32, 32), (1, 2, 32, 32), (1, 2, 1, 32, 32), (0, 2, 3, 32, 32),
                                     (1, 0, 3, 32, 32), (1, 2, 3, 8, 8), (2, 2, 3, 32, 32), (3, 32, 32)]),
       refs_shape=st.sampled_from([(1, 1, 3, 32, 32), (1, 0, 3, 32, 32), (1, 3, 32, 32), (1, 1, 3, 64, 48)]),
       fill=st.sampled_from([0.0, 0.5, NAN, -INF, 3.0]), dtype=st.sampled_from([torch.float32, torch.uint8]))
def test_identity_scores_bad_frames_and_references(recognizer, frames_shape, refs_shape, fill, dtype):
    identity_scores = _metric("identity_scores")
    frames = torch.full(frames_shape, fill).to(dtype) if dtype.is_floating_point else torch.zeros(frames_shape,
                                                                                                   dtype=dtype)
    refs = torch.zeros(refs_shape)
    ok = (frames_shape == (1, 2, 3, 32, 32) and refs_shape in ((1, 1, 3, 32, 32), (1, 1, 3, 64, 48))
          and dtype.is_floating_point and fill in (0.0, 0.5))
    if ok:
        return  # a valid input: measuring the levels of the random recognizer is slow and tests nothing here
    probe("metrics.identity_scores", lambda: identity_scores(frames, refs, recognizer=recognizer),
          names=("frames", "reference_images"))


def test_identity_scores_other_bad_inputs(recognizer):
    identity_scores = _metric("identity_scores")
    good = torch.zeros(1, 2, 3, 32, 32)
    for frames, refs in ((good.numpy(), good), (good, [good]), (None, good),
                         (torch.zeros(1, 1, 1, 1, 1).expand(1, 2, 3, HUGE, HUGE), good),
                         (good, torch.zeros(1, 1, 1, 1, 1).expand(1, HUGE, 3, HUGE, 32))):
        probe("metrics.identity_scores", lambda f=frames, r=refs: identity_scores(f, r, recognizer=recognizer),
              names=("frames", "reference_images"))


def _metric_cases(recognizer) -> dict:
    """Bad arguments of each labkit.metrics function, with the words a clear message names."""
    e = torch.nn.functional.normalize(torch.randn(2, 4, 512), dim=-1)
    sims, frames = torch.rand(2, 4), torch.rand(2, 4, 3, 32, 32) * 2 - 1
    return {
        "embed_frames": [((recognizer, torch.zeros(2, 32, 32)), ("frames",)),
                         ((recognizer, torch.zeros(2, 4, 32, 32)), ("frames",)),
                         ((recognizer, np.zeros((2, 3, 32, 32), np.float32)), ("frames", "images")),
                         ((recognizer, torch.zeros(1, 1, 1, 1, 1).expand(HUGE, 8, 3, 32, 32)), ("frames", "images"))],
        "reference_embedding": [((torch.zeros(512),), ("reference",)), ((torch.zeros(2, 1, 1, 512),), ("reference",)),
                                (([0.0] * 512,), ("reference",))],
        "reference_similarity": [((e[0], e), ("frame",)), ((e, e[:1]), ("reference", "videos")),
                                 ((e, torch.zeros(2, 3, 256)), ("reference", "512", "shape", "D"))],
        "normalised_identity": [((sims, 0.2, 0.8), ("ceiling", "floor")), ((sims, NAN, 0.1), ("ceiling",)),
                                ((sims, INF, 0.1), ("ceiling",)), ((sims, "0.9", 0.1), ("ceiling",))],
        "frame_stability": [((torch.zeros(4, 512),), ("frame_embeddings", "shape")),
                            ((e, torch.zeros(3, 4, dtype=torch.bool)), ("cuts",))],
        "subject_consistency": [((e[:, :1],), ("frame", "shape")), ((torch.zeros(4, 512),), ("frame", "shape"))],
        "share_above": [((sims, NAN), ("threshold",)), ((torch.full((2, 4), NAN), 0.5), ("similarity",)),
                        ((sims, "0.5"), ("threshold",))],
        "variety": [((frames[0],), ("frames",)), ((frames, torch.zeros(2, 5, dtype=torch.bool)), ("cuts",))],
        "crop_regions": [((frames[0], torch.zeros(4, 2, 16, 16)), ("masks", "frames", "shape")),
                         ((frames[0], torch.zeros(4, 32, 32)), ("masks", "shape"))],
        "scene_similarity": [((recognizer, frames, torch.zeros(2, 3, 1, 32, 32), torch.zeros(2, 1, 512)),
                              ("frames", "masks"))],
        "bleed_and_swap": [((torch.zeros(4),), ("similarity", "shape")),
                           ((torch.zeros(2, 4, 2, 3),), ("similarity", "shape"))],
        "summarise_scores": [((sims, sims[:, :3], e, frames), ("face_probability", "shape")),
                             ((sims, sims, e[:, :3], frames), ("frame_embeddings", "shape")),
                             ((sims[0], sims[0], e, frames), ("scores", "shape"))],
    }


_METRICS = ["embed_frames", "reference_embedding", "reference_similarity", "normalised_identity", "frame_stability",
            "subject_consistency", "share_above", "variety", "crop_regions", "scene_similarity", "bleed_and_swap",
            "summarise_scores"]


@pytest.mark.parametrize("name", _METRICS)
def test_metrics_functions_bad_inputs(recognizer, name):
    fn = _metric(name)
    for args, names in _metric_cases(recognizer)[name]:
        probe(f"metrics.{name}", lambda args=args: fn(*args), names=names, label=_describe(args))


# ------------------------------------------------------------------------------------------ identity encoder
def test_identity_encoder_bad_inputs(recognizer):
    from labkit.identity import IdentityEncoder

    torch.manual_seed(0)
    enc = IdentityEncoder(embed_dim=32, num_tokens=4, backbone=recognizer, num_heads=2)
    for refs in (torch.zeros(3, 32, 32), torch.zeros(2, 1, 1, 3, 32, 32), torch.zeros(0, 3, 32, 32),
                 torch.zeros(2, 0, 3, 32, 32), torch.zeros(2, 4, 32, 32), np.zeros((2, 3, 32, 32), np.float32),
                 torch.zeros(2, 3, 0, 32), torch.zeros(1, 1, 1, 1).expand(HUGE, 3, HUGE, 64), None):
        probe("identity.IdentityEncoder.forward", lambda r=refs: enc(r), names=("reference", "shape"),
              label=_describe(refs))
    for emb in (torch.zeros(2, 256), torch.zeros(512), torch.zeros(2, 0, 512), torch.zeros(1, 1, 1, 512),
                np.zeros((2, 512), np.float32)):
        probe("identity.IdentityEncoder.encode_embeddings", lambda e=emb: enc.encode_embeddings(e),
              names=("face_embeddings", "shape"))
    tokens = probe("identity.IdentityEncoder.forward", lambda: enc(torch.full((2, 3, 32, 32), NAN)),
                   names=("reference",), expect="either")
    if isinstance(tokens, torch.Tensor):
        assert torch.isnan(tokens).any(), "NaN references must not become finite-looking tokens"
    probe("identity.IdentityEncoder.forward", lambda: enc(torch.zeros(2, 2, 3, 40, 24, dtype=torch.uint8)),
          expect="work", check=lambda t: t.shape == (2, 4, 32))
    for kwargs in (dict(embed_dim=30, num_heads=4), dict(num_tokens=0), dict(num_tokens=-1), dict(embed_dim=0)):
        probe("identity.IdentityEncoder()", lambda kw=kwargs: IdentityEncoder(**{"embed_dim": 32, "num_tokens": 4,
                                                                                  "backbone": None, **kw}),
              names=("embed_dim", "num_tokens", "num_heads"))


# ------------------------------------------------------------------------------------------ video model
@FUZZ
@given(shape=st.sampled_from([(1, 2, 3, 32, 32), (1, 2, 3, 16, 16), (1, 2, 4, 32, 32), (2, 3, 32, 32),
                              (1, 5, 3, 32, 32), (0, 2, 3, 32, 32), (1, 0, 3, 32, 32), (32,)]),
       dtype=st.sampled_from([torch.float32, torch.int64, torch.bool]),
       timestep=st.sampled_from([10, 999, torch.tensor([5]), torch.tensor([1, 2, 3]), -1, NAN, "10", None]),
       fill=st.sampled_from([0.0, NAN]))
def test_video_model_forward_bad_sample_and_timestep(tiny_model, shape, dtype, timestep, fill):
    x = torch.full(shape, fill).to(dtype) if dtype.is_floating_point else torch.zeros(shape, dtype=dtype)
    ok_t = (isinstance(timestep, int) and timestep >= 0) or (torch.is_tensor(timestep) and timestep.numel() == 1)
    valid = (shape == (1, 2, 3, 32, 32) and dtype == torch.float32 and ok_t)

    def check(out):
        assert out.sample.shape == shape
        assert torch.isfinite(out.sample).all() == (fill == 0.0), "NaN in must stay visible, finite in finite out"

    with torch.no_grad():
        probe("model.IdentityVideoDiT.forward", lambda: tiny_model(x, timestep), names=("sample", "timestep"),
              expect="work" if valid else "refuse", check=check)


def test_video_model_forward_bad_conditions(tiny_model):
    x = torch.zeros(2, 3, 3, 32, 32)
    tokens = torch.zeros(2, 4, 32)
    bad = [
        (dict(context_frames=torch.zeros(2, 3, 3, 16, 16)), ("context_frames",)),
        (dict(context_mask=torch.zeros(2, 4, dtype=torch.bool)), ("context_mask",)),
        (dict(face_masks=torch.zeros(2, 3, 16, 16)), ("face_masks",)),
        (dict(cuts=torch.zeros(3, dtype=torch.bool)), ("cuts",)),
        (dict(cross_attention_kwargs={"scale": 1.0}), ("cross_attention_kwargs",)),
        (dict(cross_attention_kwargs={"identity_tokens": torch.zeros(2, 4, 31)}), ("identity_tokens",)),
        (dict(cross_attention_kwargs={"identity_tokens": torch.zeros(3, 4, 32)}), ("identity_tokens",)),
        (dict(cross_attention_kwargs={"identity_tokens": torch.zeros(4, 32)}), ("identity_tokens",)),
        (dict(cross_attention_kwargs={"identity_tokens": tokens, "identity_strength": torch.ones(3)}),
         ("identity_strength",)),
        (dict(cross_attention_kwargs={"identity_tokens": tokens, "identity_strength": "strong"}),
         ("identity_strength",)),
    ]
    with torch.no_grad():
        for kwargs, names in bad:
            probe("model.IdentityVideoDiT.forward", lambda kw=kwargs: tiny_model(x, 10, **kw), names=names,
                  label=_describe(kwargs))
        probe("model.IdentityVideoDiT.forward", lambda: tiny_model(x.numpy(), 10), names=("sample",))


# ------------------------------------------------------------------------------------------ generator
def test_generate_bad_arguments(pipe):
    refs = _refs()
    fast = dict(num_inference_steps=2, progress=False, check_faces=False)
    bad = [
        (dict(reference_images=refs.numpy()), ("reference_images",)),
        (dict(reference_images=None), ("reference_images",)),
        (dict(reference_images=torch.zeros(1, 0, 3, 32, 32)), ("reference_images",)),
        (dict(reference_images=torch.zeros(2, 32, 32)), ("reference_images",)),
        (dict(reference_images=torch.full((1, 1, 3, 32, 32), NAN)), ("reference_images",)),
        (dict(reference_images=torch.full((1, 1, 3, 32, 32), 200.0)), ("reference_images",)),
        (dict(reference_images=torch.zeros(1, 1, 1, 1, 1).expand(HUGE, 2, 3, HUGE, 32)), ("reference_images",)),
        (dict(reference_images=refs, num_frames=0), ("num_frames",)),
        (dict(reference_images=refs, num_frames=10**12), ("num_frames",)),
        (dict(reference_images=refs, num_frames=2.5), ("num_frames",)),
        (dict(reference_images=refs, num_inference_steps=0), ("num_inference_steps",)),
        (dict(reference_images=refs, num_inference_steps=10**9), ("num_inference_steps",)),
        (dict(reference_images=refs, identity_strength=NAN), ("identity_strength",)),
        (dict(reference_images=refs, identity_guidance=INF), ("identity_guidance",)),
        (dict(reference_images=refs, strategy="best"), ("strategy",)),
        (dict(reference_images=refs, init_strength=0.0), ("init_strength",)),
        (dict(reference_images=refs, context_frames=9), ("context_frames",)),
        (dict(reference_images=refs, face_masks=torch.zeros(2, 32, 32)), ("face_masks",)),
        (dict(reference_images=refs, identity_tokens=torch.zeros(1, 4, 31)), ("identity_tokens",)),
        (dict(reference_images=refs, output_type="latent"), ("output_type",)),
    ]
    for kwargs, names in bad:
        probe("pipeline.ReferenceConditionedGenerator.generate",
              lambda kw=kwargs: pipe.generate(**{**fast, **kw}), names=names, label=_describe(kwargs))

    def check(out):
        assert out.frames.shape == (1, 3, 3, 32, 32) and torch.isfinite(out.frames).all()

    probe("pipeline.ReferenceConditionedGenerator.generate",
          lambda: pipe.generate(reference_images=refs[0], num_frames=3, **fast), expect="work", check=check)


# ------------------------------------------------------------------------------------------ training CLI
@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory):
    """A real training checkpoint after one step of the smoke preset."""
    from labkit.train import PRESETS, train

    out = tmp_path_factory.mktemp("run")
    threads = torch.get_num_threads()
    try:
        train(replace(PRESETS["smoke"], steps=1, checkpoint_every=1, device="cpu", num_threads=1), out,
              progress=False)
    finally:
        torch.set_num_threads(threads)
    return out / "checkpoint.pt"


@FUZZ
@given(cut=st.floats(0.0, 0.9999),
       flips=st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 7)), min_size=1, max_size=3))
def test_training_checkpoint_truncated_or_bit_flipped(real_checkpoint, tmp_path_factory, cut, flips):
    from labkit.checkpoints import checksum, load_checkpoint

    data = real_checkpoint.read_bytes()
    folder = tmp_path_factory.mktemp("damaged")
    truncated = folder / "truncated.pt"
    truncated.write_bytes(data[: int(len(data) * cut)])
    probe("train.load_checkpoint", lambda: load_checkpoint(truncated), names=(str(truncated),))
    for position, bit in flips:
        data = flip_bit(data, position, bit)
    flipped = folder / "flipped.pt"
    flipped.write_bytes(data)
    original = load_checkpoint(real_checkpoint)

    def check(state):  # a flip outside the contents (zip bookkeeping) may load: then nothing changed
        assert checksum(state) == checksum(original)

    probe("train.load_checkpoint", lambda: load_checkpoint(flipped), names=(str(flipped),), expect="either",
          check=check)


def _train_main(argv):
    """``python -m labkit.train`` in this process: an exit with status 2 and one ERROR/usage line is clear."""
    import contextlib as cl
    import io

    from labkit.train import main

    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    try:
        with cl.redirect_stdout(out), cl.redirect_stderr(err):
            main(argv)
    except SystemExit as exit_:
        text = (out.getvalue() + err.getvalue()).strip().splitlines()
        last = text[-1] if text else ""
        if exit_.code == 2 and (last.startswith("ERROR: ") or ": error: " in last):
            raise ClearExit(f"exit 2: {last}") from None
        raise AssertionError(f"exit {exit_.code}: {text[-3:]}") from None
    finally:
        torch.set_num_threads(threads)
    return out.getvalue()


def test_training_cli_bad_arguments_and_corrupt_checkpoints(real_checkpoint, tmp_path):
    base = ["--preset", "smoke", "--device", "cpu", "--threads", "1", "--no-progress"]
    bad = [
        (["--steps", "-1"], ("--steps",)), (["--steps", "ten"], ("--steps",)),
        (["--batch-size", "0"], ("--batch-size",)), (["--checkpoint-every", "0"], ("--checkpoint-every",)),
        (["--threads", "0"], ("--threads",)), (["--seed", "-3"], ("--seed",)),
        (["--device", "banana"], ("--device",)), (["--preset", "huge"], ("--preset",)),
        (["--batch-size", str(10**9)], ("--batch-size",)),
        (["--lr", "0"], ("--lr",)), (["--lr", "fast"], ("--lr",)),
        (["--identity-loss-weight", "-1"], ("--identity-loss-weight",)),
        (["--identity-loss-max-t", "0"], ("--identity-loss-max-t",)),
        (["--evaluate", str(tmp_path / "no-such-model")], ("--evaluate", "no-such-model")),
    ]
    for extra, names in bad:
        out = tmp_path / f"run{len(extra[1])}"
        probe("train.main (CLI)", lambda e=extra, o=out: _train_main(base + ["--out", str(o)] + e),
              names=names, label=" ".join(extra))
    probe("train.main (CLI)", lambda: _train_main(base + ["--out", str(real_checkpoint)]), names=("--out",))
    data = real_checkpoint.read_bytes()
    damaged = {"garbage": b"\x00" * 100, "truncated": data[: len(data) // 2], "empty": b"",
               "flipped": flip_bit(data, len(data) // 2, 3)}
    for name, content in damaged.items():
        out = tmp_path / name
        out.mkdir()
        (out / "checkpoint.pt").write_bytes(content)
        probe("train.main (CLI)", lambda o=out: _train_main(base + ["--out", str(o), "--steps", "12"]),
              names=("checkpoint.pt",), label=f"{name} checkpoint")


# ------------------------------------------------------------------------------------------ exercises CLI
def test_exercises_cli_bad_files(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def box_to_mask(:\n")
    for args, names in (([str(tmp_path / "missing.py")], ("missing.py",)), ([str(tmp_path)], (str(tmp_path),)),
                        ([str(broken)], ("broken.py",))):
        def call(args=args):
            out = subprocess.run([sys.executable, "-m", "labkit.exercises", *args], capture_output=True, text=True,
                                 cwd=REPO, timeout=60)
            lines = (out.stdout + out.stderr).strip().splitlines()
            if out.returncode != 0 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1:
                raise ClearExit(f"exit {out.returncode}: {out.stderr.strip()}")
            raise AssertionError(f"exit {out.returncode}, expected one error line, got: {lines[-8:]}")

        probe("exercises.main (CLI)", call, names=names)


# ------------------------------------------------------------------------------------------ drift lab
def _fake_compute(settings, progress):
    raise AssertionError("the setters must not compute anything in this test")


@FUZZ
@given(values=st.fixed_dictionaries({}, optional={
    "identity_strength": st.sampled_from([NAN, INF, -1.0, 9.0, "x", None, [0.5], 0.5]),
    "num_references": st.sampled_from([0, -1, 6, 10**30, 2.5, "3", None, INF, NAN, 3]),
    "reference_quality": st.sampled_from(["clean", "shiny", None, 3, ["clean"]]),
    "strategy": st.sampled_from(["explicit", "best", None, ["explicit"], 1]),
    "num_chunks": st.sampled_from([0, 7, -2, 2, 10**9]),
    "seed": st.sampled_from([-1, 0, 2**70, "s"]),
    "identity": st.sampled_from([-1, 20, 19, 10**12]),
}))
def test_drift_settings_validation_never_raises(values):
    """validate_settings turns any setting into (None, messages) or a clean setting within the ranges."""
    from labkit.widgets import MAX_CHUNKS, MAX_REFERENCES, NUM_HELDOUT, DriftSettings, validate_settings

    def check(result):
        clean, messages = result
        assert all(isinstance(m, str) and "\n" not in m for m in messages)
        if clean is not None:
            assert 0 <= clean.identity_strength <= 1.5 and 1 <= clean.num_references <= MAX_REFERENCES
            assert 1 <= clean.num_chunks <= MAX_CHUNKS and 0 <= clean.identity < NUM_HELDOUT and clean.seed >= 0
        else:
            assert messages, "a refused setting must say why"

    probe("widgets.validate_settings", lambda: validate_settings(DriftSettings(**values)), expect="work",
          check=check)


def test_drift_lab_setters_refuse_bad_values_clearly():
    from labkit.widgets import DriftLab

    lab = DriftLab(compute=_fake_compute, precomputed=False, autostart=False)
    lab.request = lambda settings=None: "queued"  # only the setters are under test here
    try:
        for values, names in (({"identity_strength": "strong"}, ("identity_strength",)),
                              ({"num_references": "three"}, ("num_references",)),
                              ({"strategy": "best"}, ("strategy",)),
                              ({"reference_quality": "shiny"}, ("reference_quality",)),
                              ({"num_chunks": "two"}, ("num_chunks",)), ({"colour": "red"}, ("colour",)),
                              ({"seed": [1]}, ("seed",))):
            probe("widgets.DriftLab.set", lambda v=values: lab.set(**v), names=names, label=_describe(values))
    finally:
        lab.close()
