"""The pack's models can be loaded partially by ComfyUI (models.offload.make_streamable).

Each module with parameters of its own is flagged ``comfy_cast_weights`` and, when it runs on inputs on another
device than its weights, gets them copied there for that call only. No GPU here: the other device is ``meta``
(shape-only tensors), enough to see the weights go there during the call and come back after, untouched.
ComfyUI's own partial load of such a model runs in tests/test_comfyui_native.py.
"""

from __future__ import annotations

import torch

from avatar_cascade.models.offload import largest_weight, make_streamable


def _dit():
    from diffusers import WanTransformer3DModel

    from avatar_cascade.demo.models import _bundled

    torch.manual_seed(0)
    return WanTransformer3DModel.from_config(_bundled("avatar-cascade-tiny-wan")).eval()


def _inputs(device="cpu"):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 36, 2, 4, 4, generator=g)
    text = torch.randn(1, 8, 32, generator=g)
    return dict(hidden_states=x, timestep=torch.tensor([500.0]), encoder_hidden_states=text)


def test_every_module_with_own_weights_is_flagged_once_and_computes_the_same():
    dit = _dit()
    with torch.no_grad():
        before = dit(**_inputs(), return_dict=False)[0]
    own = [m for m in dit.modules() if any(True for _ in m.parameters(recurse=False))]
    assert make_streamable(dit) == len(own) > 10
    assert make_streamable(dit) == 0  # prepared once
    assert all(m.comfy_cast_weights is False for m in own)
    with torch.no_grad():
        after = dit(**_inputs(), return_dict=False)[0]
    assert torch.equal(before, after)  # fully loaded: nothing is copied, nothing changes


def test_weights_left_on_another_device_are_fetched_for_the_call_and_dropped_after():
    lin = torch.nn.Linear(4, 3)
    make_streamable(lin)
    seen = {}
    lin.register_forward_pre_hook(lambda m, a: seen.update(device=m.weight.device))  # after the fetch, in the call
    param, weight = lin.weight, lin.weight.detach().clone()
    out = lin(torch.zeros(2, 4, device="meta"))  # the input lives elsewhere than the weights
    assert out.device.type == "meta" and seen["device"].type == "meta"
    assert lin.weight is param and lin.weight.device.type == "cpu" and torch.equal(lin.weight, weight)


def test_inputs_follow_the_largest_weight():
    m = torch.nn.Sequential(torch.nn.LayerNorm(4), torch.nn.Linear(4, 64))
    m[1].to(torch.float64)
    assert largest_weight(m) is m[1].weight  # not the first parameter (the norm's)
