"""HeadAwareAdamW: torch AdamW on the backbone, and on the heads too wherever a gradient is not zero;
an element of a head whose gradient is exactly zero (a task not trained in the update) keeps its value
and moments, where torch AdamW would move it by momentum and weight decay.

    python -m pytest tests/test_optim.py -q
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prefinetune.model.optim import HeadAwareAdamW, param_groups

KW = dict(lr=1e-2, betas=(0.9, 0.98), eps=1e-6)


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Linear(4, 4)
        self.head = nn.Parameter(torch.randn(3, 4))      # a bank of 3 one-row "heads"


def _step(model, optimizer, rows):
    """One update whose loss reads the bank rows `rows` only."""
    optimizer.zero_grad()
    x = model.backbone(torch.arange(4.0))
    (model.head[rows] @ x).pow(2).sum().backward()
    optimizer.step()


def test_groups_put_heads_apart_and_decay_only_weights():
    groups = param_groups(Toy(), weight_decay=0.01)
    assert [(len(g["params"]), g["weight_decay"], g["lazy"]) for g in groups] == [
        (1, 0.01, False), (1, 0.0, False), (1, 0.01, True)]


def test_an_untrained_head_row_is_bit_identical_where_torch_adamw_moves_it():
    ours, plain = Toy(), Toy()
    opt_ours = HeadAwareAdamW(param_groups(ours, 0.01), **KW)
    opt_plain = torch.optim.AdamW(param_groups(plain, 0.01), foreach=False, **KW)
    for model, opt in ((ours, opt_ours), (plain, opt_plain)):
        _step(model, opt, [0, 1])            # update 1 trains rows 0 and 1
    torch.testing.assert_close(ours.head[:2], plain.head[:2], rtol=0, atol=1e-7)   # trained: torch's update
    assert not torch.equal(plain.head[2], Toy().head[2]) and torch.equal(ours.head[2], Toy().head[2])   # decay
    before_ours, before_plain = ours.head.detach().clone(), plain.head.detach().clone()
    for model, opt in ((ours, opt_ours), (plain, opt_plain)):
        _step(model, opt, [0])               # update 2 trains row 0 only
    assert torch.equal(ours.head[1:], before_ours[1:])             # rows 1 (momentum) and 2 (decay): still
    assert not torch.equal(plain.head[1], before_plain[1]) and not torch.equal(plain.head[2], before_plain[2])
    assert not torch.equal(ours.head[0], before_ours[0])
    state = opt_ours.state[ours.head]
    assert state["exp_avg"][2].abs().sum() == 0 and state["exp_avg"][1].abs().sum() > 0


@pytest.mark.parametrize("steps", [1, 5])
def test_on_dense_gradients_it_is_torch_adamw(steps):
    """The backbone is stepped by torch's fused AdamW itself (bit for bit); the heads' own update, on
    dense gradients, equals torch AdamW's to float rounding (fused or the per-tensor loop alike)."""
    ours, fused, loop = Toy(), Toy(), Toy()
    optimizers = {"ours": HeadAwareAdamW(param_groups(ours, 0.01), **KW),
                  "fused": torch.optim.AdamW(param_groups(fused, 0.01), fused=True, **KW),
                  "loop": torch.optim.AdamW(param_groups(loop, 0.01), foreach=False, **KW)}
    for _ in range(steps):
        for model, name in ((ours, "ours"), (fused, "fused"), (loop, "loop")):
            _step(model, optimizers[name], [0, 1, 2])
    for name, a in ours.named_parameters():
        b, c = dict(fused.named_parameters())[name], dict(loop.named_parameters())[name]
        if name.startswith("backbone."):
            assert torch.equal(a, b), name
        torch.testing.assert_close(a, c, rtol=0, atol=3e-7, msg=lambda m: f"{name}: {m}")
    assert not torch.equal(ours.head, Toy().head)


def test_a_state_saved_by_the_per_tensor_loop_resumes_on_the_fused_kernel():
    """A checkpoint written before the optimizer was fused (groups saved with foreach=False, fused=None),
    and a step restored as a float64 (DeepSpeed's universal load restores it from a file): the next
    update runs fused, and equals torch's fused AdamW resumed from the same state."""
    old, ours, fused = Toy(), Toy(), Toy()
    saved = torch.optim.AdamW(param_groups(old, 0.01), foreach=False, **KW)
    _step(old, saved, [0, 1, 2])
    state = saved.state_dict()
    for model in (ours, fused):
        model.load_state_dict(old.state_dict())
    opt_ours = HeadAwareAdamW(param_groups(ours, 0.01), **KW)
    opt_ours.load_state_dict(copy.deepcopy(state))       # (loading shares the tensors otherwise)
    opt_ours.state[ours.backbone.weight]["step"] = torch.tensor(1.0, dtype=torch.float64)
    assert opt_ours.param_groups[0]["fused"] is None                 # as saved
    opt_fused = torch.optim.AdamW(param_groups(fused, 0.01), fused=True, **KW)
    opt_fused.load_state_dict(copy.deepcopy(state))
    for group in opt_fused.param_groups:
        group["fused"], group["foreach"] = True, False
    _step(ours, opt_ours, [0, 1, 2])
    _step(fused, opt_fused, [0, 1, 2])
    assert all(g["fused"] for g in opt_ours.param_groups if not g["lazy"])
    assert opt_ours.state[ours.backbone.weight]["step"].dtype == torch.float32
    assert torch.equal(ours.backbone.weight, fused.backbone.weight)


def test_a_head_tensor_that_is_not_contiguous_is_refused_by_shape():
    head = nn.Parameter(torch.randn(4, 3).t())            # a transposed view: strides not row-major
    optimizer = HeadAwareAdamW([{"params": [head], "weight_decay": 0.0, "lazy": True}], **KW)
    head.grad = torch.ones(4, 3).t()
    with pytest.raises(ValueError, match=r"contiguous head parameters and gradients; one of shape \(3, 4\) is not"):
        optimizer.step()
    assert not optimizer.state                            # refused before any state was made or stepped


def _where_reference(p, grad, m, v, step, lr, betas, eps, weight_decay):
    """The heads' update as first written: torch AdamW's formula over every element, kept where grad != 0."""
    beta1, beta2 = betas
    live = grad != 0
    new_p = p * (1 - lr * weight_decay)
    new_m = m.lerp(grad, 1 - beta1)
    new_v = v * beta2 + (1 - beta2) * grad * grad
    denom = (new_v.sqrt() / (1 - beta2 ** step) ** 0.5) + eps
    new_p = new_p - (lr / (1 - beta1 ** step)) * new_m / denom
    return torch.where(live, new_p, p), torch.where(live, new_m, m), torch.where(live, new_v, v)


def test_the_heads_update_is_bit_identical_to_the_formula_over_every_element_masked():
    """Zeros scattered inside rows, more elements than one SIMD width, NaN, inf and -0.0 gradients; the
    parameter is a slice of a larger buffer (as a ZeRO partition is), written through in place."""
    torch.manual_seed(1)
    buffer = torch.randn(1100)
    outside = torch.cat([buffer[:50], buffer[1050:]])
    head = nn.Parameter(buffer[50:1050])               # contiguous, at an offset into the buffer
    optimizer = HeadAwareAdamW([{"params": [head], "weight_decay": 0.01, "lazy": True}], **KW)
    p, m, v = head.detach().clone(), torch.zeros(1000), torch.zeros(1000)
    for step in (1, 2, 3):
        grad = torch.randn(1000) * (torch.rand(1000) > 0.4)
        grad[[7, 300]] = float("nan") if step == 3 else 0.5
        grad[[11, 501]] = -0.0
        grad[999] = float("inf") if step == 2 else 0.0
        head.grad = grad.clone()
        moments = [t.data_ptr() for t in optimizer.state[head].values()] if optimizer.state else None
        optimizer.step()
        p, m, v = _where_reference(p, grad, m, v, float(step), KW["lr"], KW["betas"], KW["eps"], 0.01)
        state = optimizer.state[head]
        for got, want in ((head.detach(), p), (state["exp_avg"], m), (state["exp_avg_sq"], v)):
            assert torch.equal(got.nan_to_num(7.0), want.nan_to_num(7.0))     # NaN where the reference has NaN
        assert torch.equal(buffer[50:1050].nan_to_num(7.0), p.nan_to_num(7.0))   # written into the buffer
        if moments is not None:
            assert [t.data_ptr() for t in state.values()] == moments         # moments updated in place
    assert torch.equal(torch.cat([buffer[:50], buffer[1050:]]), outside) and float(state["step"]) == 3


def test_a_grad_scaler_overflow_skips_the_whole_update_heads_included():
    model = Toy()
    optimizer = HeadAwareAdamW(param_groups(model, 0.01), **KW)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = model.backbone(torch.arange(4.0))
    scaler.scale((model.head[[0]] @ x).sum() * float("inf")).backward()
    scaler.step(optimizer)
    scaler.update()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert scaler.get_scale() < 2.0 ** 16                # the scaler saw the overflow and backed off
