"""Fast inference path vs faithful path: equal outputs for every variant, golden parity as
deployed (channels_last, fast path), and the training path's gradients."""

from __future__ import annotations

import copy
import threading

import cv2
import pytest
import torch
from safetensors.torch import load_file

import lightsr
from lightsr.archs import build_model, ditn, esc, fmen
from lightsr.archs.blocks import faithful_path, fast_path, to_inference_layout
from lightsr.archs.emt import StripedWindowAttention
from lightsr.archs.registry import arch_specs, get_arch
from lightsr.inference import prepare_model
from tests.conftest import shared_file

TOLERANCE = 1e-4  # on outputs in [0, 1] units

# The smallest configurations that still have every kind of block, so each variant runs in
# well under a second; ``None`` keeps the registry defaults.
SMALL = {
    "esc": {"n_blocks": 1, "conv_blocks": 2},
    "esc_light": {"n_blocks": 1, "conv_blocks": 2},
    "esc_xl": {"n_blocks": 1, "conv_blocks": 1, "dim": 48, "pdim": 16, "num_heads": 4},
    "esc_fp": {"n_blocks": 1, "conv_blocks": 2},
    "esc_real": {"n_blocks": 1, "conv_blocks": 2},
    "emt": {"n_blocks": 2, "n_layers": 4},
}
VARIANTS = [spec.name for spec in arch_specs()]

GOLDEN = [
    ("fmen_s_x4", "weights/official/FMEN/test_weights.pt"),
    ("fmen_s_train_x4", None),
    ("ditn_real_x4", "weights/official/DITN/DITN_Real_x4.pth"),
    ("ditn_real_seed_x3", None),
    ("emt_x2", "weights/official/EMT/EMT_LSR_x2.pth"),
    ("emt_x4", "weights/official/EMT/EMT_LSR_x4.pth"),
]  # ESC keeps the default layout: its golden tests in test_esc.py already run this path


@pytest.fixture
def narrow_bands(monkeypatch):
    """Make the fast paths cut even golden-sized inputs into several bands (DITN: 5-row FFN
    bands against 8-pixel patches, so band edges fall inside patches too; ESC: one row;
    FMEN: two)."""
    monkeypatch.setattr(ditn, "FFN_BAND_PIXELS", 5 * 64)
    monkeypatch.setattr(ditn, "ITL_BAND_PIXELS", 1)
    monkeypatch.setattr(esc, "BAND_PIXELS", 1)  # one-row bands: halos at every row
    monkeypatch.setattr(fmen, "BAND_PIXELS", 1)  # two-row bands (an ERB's halo)


def _natural_input(range_: float, side: int = 44) -> torch.Tensor:
    """A crop of a real LR image (random inputs make EMT's unscaled softmax chaotic)."""
    bgr = cv2.imread(str(shared_file("data/Set5/LR_bicubic/X2/butterflyx2.png")))
    rgb = torch.from_numpy(bgr[:side, :side, ::-1].copy()).permute(2, 0, 1).float() / 255
    return rgb.unsqueeze(0) * range_


def _randomised(variant: str, scale: int) -> torch.nn.Module:
    """A small network whose zero-initialised parameters and BN statistics are random, so
    every branch contributes to the output."""
    torch.manual_seed(0)
    module = build_model(variant, scale, **SMALL.get(variant, {}))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in module.parameters():
            if param.abs().sum() == 0:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
        for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5, generator=generator)
            bn.running_var.uniform_(0.5, 2.0, generator=generator)
        for attention in (m for m in module.modules() if isinstance(m, StripedWindowAttention)):
            # EMT's softmax(q·qᵀ) is unscaled: with untrained weights the logits reach
            # thousands and a rounding difference flips whole rows; trained ones do not.
            attention.attn[0].weight.mul_(0.1)
    return module.eval()


def _fast_and_faithful(module: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad(), faithful_path():
        faithful = module(x)
    fast_module = to_inference_layout(copy.deepcopy(module))
    with torch.inference_mode():
        fast = fast_module(x)
    return fast, faithful


@pytest.mark.parametrize("variant", VARIANTS)
def test_fast_path_equals_faithful_path(variant, narrow_bands):
    spec = get_arch(variant)
    module = _randomised(variant, min(spec.scales))
    x = _natural_input(spec.input_range, 36)
    before = x.clone()
    fast, faithful = _fast_and_faithful(module, x)
    assert torch.equal(x, before), "the fast path wrote into its input"
    assert fast.shape == faithful.shape
    assert (fast - faithful).abs().max().item() / spec.input_range <= TOLERANCE
    if hasattr(module, "reparameterize"):
        fast, faithful = _fast_and_faithful(module.reparameterize(), x)
        assert (fast - faithful).abs().max().item() / spec.input_range <= TOLERANCE


@pytest.mark.parametrize("variant", ["fmen_s", "ditn_real", "emt", "esc_light"])
def test_fast_path_batches_and_odd_sizes(variant, narrow_bands):
    spec = get_arch(variant)
    module = _randomised(variant, 2)
    x = torch.cat([_natural_input(spec.input_range, 40)[..., :37, :]] * 2)
    x[1] = x[1].flip(-1)
    fast, faithful = _fast_and_faithful(module, x)
    assert (fast - faithful).abs().max().item() / spec.input_range <= TOLERANCE


@pytest.mark.parametrize(("golden_name", "weights"), GOLDEN)
def test_golden_outputs_as_deployed(golden_name, weights, narrow_bands):
    """The official outputs, through ``prepare_model`` (deploy form, inference layout) and
    the fast path, as ``upscale``/``eval``/``bench`` run them."""
    golden = load_file(str(shared_file(f"golden/{golden_name}.safetensors")))
    if weights is None:
        prefix = "state_dict."
        model = lightsr.load_model(
            {k[len(prefix) :]: v for k, v in golden.items() if k.startswith(prefix)}
        )
    else:
        model = lightsr.load_model(shared_file(weights))
    model = prepare_model(model, "cpu", "fp32")
    with torch.inference_mode():
        for case in "ab":
            out = model.module(golden[f"input_{case}"])
            error = (out - golden[f"output_{case}"]).abs().max().item() / model.input_range
            assert error <= TOLERANCE, case


@pytest.mark.parametrize("variant", ["fmen_s", "ditn_tiny", "emt"])
def test_training_path_is_faithful_and_reaches_every_parameter(variant):
    """With gradients on, the forward is the faithful one (no in-place shortcuts) and
    gradients reach every trainable parameter."""
    spec = get_arch(variant)
    module = _randomised(variant, 2).train()
    x = _natural_input(spec.input_range, 20)
    assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()
    assert not fast_path()
    module(x).square().mean().backward()
    for name, param in module.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_prepare_model_deploys_and_sets_the_layout():
    model = lightsr.load_model(build_model("fmen_s", 4).state_dict())
    assert not model.module.deploy
    prepared = prepare_model(model, "cpu", "fp32")
    assert prepared.module.deploy and not prepared.module.training
    weight = prepared.module.head.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)


def test_faithful_path_applies_to_its_own_thread_only():
    inside, outside = threading.Event(), threading.Event()
    seen = {}

    def faithful_thread() -> None:
        with torch.no_grad(), faithful_path():
            inside.set()
            outside.wait(timeout=10)
            seen["faithful thread"] = fast_path()

    thread = threading.Thread(target=faithful_thread)
    thread.start()
    inside.wait(timeout=10)
    with torch.no_grad():
        seen["other thread"] = fast_path()
    outside.set()
    thread.join()
    assert seen == {"faithful thread": False, "other thread": True}
