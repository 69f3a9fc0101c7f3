"""Weightings that own the backward: PCGrad / CAGrad on crafted gradients, under loss scaling, accumulation and DDP."""
import numpy as np
import pytest
import torch

from multitask.heads import HeadSpec
from multitask.model.weighting import CAGrad, GradContext, PCGrad, Static


def _heads(*names):
    return [HeadSpec(classes=["a", "b"], name=n) for n in names]


def _linear_losses(w, grads):
    """Losses L_k = g_k · w: their gradients on w are exactly the rows of `grads`."""
    return {f"h{k}": (g * w).sum() for k, g in enumerate(grads)}


def _step(weighting, grads, *, scaler=None, accum=1):
    """Run `accum` micro-batches (each carrying 1/accum of the losses' gradient), then finish the step."""
    w = torch.nn.Parameter(torch.zeros(len(grads[0])))
    ctx = GradContext(shared=[w], task=[], scaler=scaler or torch.amp.GradScaler("cpu", enabled=False), accum=accum)
    for _ in range(accum):
        weighting.backward(_linear_losses(w, grads), ctx)
    weighting.finish_step(ctx)
    return w


def test_pcgrad_projects_two_conflicting_gradients_onto_each_others_normal_plane():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])     # g1 · g2 = -1: they conflict
    w = _step(PCGrad(heads=_heads("h0", "h1")), [g1, g2])
    # g1' = g1 - (g1·g2 / |g2|²) g2 = [0.5, 0.5];  g2' = g2 - (g2·g1 / |g1|²) g1 = [0, 1]
    assert torch.allclose(w.grad, torch.tensor([0.5, 1.5]))
    assert float(torch.tensor([0.5, 0.5]) @ g2) == pytest.approx(0.0)   # no component against the other head


def test_pcgrad_leaves_agreeing_gradients_alone_and_equals_static():
    grads = [torch.tensor([1.0, 0.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])]   # dot = 1 > 0
    pc = _step(PCGrad(heads=_heads("h0", "h1")), grads)
    static = _step(Static(heads=_heads("h0", "h1")), grads)
    assert torch.allclose(pc.grad, static.grad) and torch.allclose(pc.grad, grads[0] + grads[1])


def test_gradient_methods_are_exact_under_loss_scaling_and_accumulation():
    """fp16's GradScaler path: scaled per-head gradients in, the scaled combined gradient out; unscale_ restores it."""
    grads = [torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0]), torch.tensor([0.2, -0.7])]
    for method in (PCGrad, CAGrad):
        plain = _step(method(heads=_heads("h0", "h1", "h2")), grads)
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        w = _step(method(heads=_heads("h0", "h1", "h2")), grads, scaler=scaler, accum=2)
        assert torch.allclose(w.grad, plain.grad * 1024, rtol=1e-4), method.__name__
        optimizer = torch.optim.SGD([w], lr=1.0)
        scaler.unscale_(optimizer)
        assert torch.allclose(w.grad, plain.grad, rtol=1e-4, atol=1e-6), method.__name__


def test_cagrad_with_c0_is_the_summed_gradient_and_with_c_improves_the_worst_head():
    grads = [torch.tensor([1.0, 0.1]), torch.tensor([-0.8, 0.3])]
    total = grads[0] + grads[1]
    assert torch.allclose(_step(CAGrad(heads=_heads("h0", "h1"), cagrad_c=0.0), grads).grad, total, atol=1e-6)
    c = 0.5
    d = _step(CAGrad(heads=_heads("h0", "h1"), cagrad_c=c), grads).grad * (1 + c ** 2) / 2   # undo the rescale
    g0 = total / 2
    worst_mean = min(float(g @ g0) for g in grads)
    worst_cagrad = min(float(g @ d) for g in grads)
    assert worst_cagrad > worst_mean + 1e-4        # the head the mean gradient serves worst gains
    assert float((d - g0).norm()) <= c * float(g0.norm()) + 1e-4   # and d stays in the ball around g0


def test_pcgrad_order_is_reproducible_from_its_step_counter():
    grads = [torch.randn(6, generator=torch.Generator().manual_seed(k)) for k in range(4)]
    a, b = PCGrad(heads=_heads(*"abcd")), PCGrad(heads=_heads(*"abcd"))
    stacked = torch.stack(grads)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.combine_grads(stacked), b.combine_grads(stacked))
    assert "steps" in a.state_dict()


def _ddp_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        np.save(f"{out_dir}/grad{rank}.npy", _two_head_step(rank, world).numpy())
    finally:
        dist.destroy_process_group()


def _two_head_step(rank: int, world: int) -> torch.Tensor:
    """A trunk (Linear 4->3) shared by two linear heads, one PCGrad step on this rank's shard of a fixed batch."""
    torch.manual_seed(0)
    trunk, heads = torch.nn.Linear(4, 3), torch.nn.ModuleDict({"a": torch.nn.Linear(3, 2), "b": torch.nn.Linear(3, 2)})
    g = torch.Generator().manual_seed(1)
    x, ya, yb = torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g), torch.randint(0, 2, (8,),
                                                                                                    generator=g)
    x, ya, yb = x[rank::world], ya[rank::world], yb[rank::world]
    ctx = GradContext(shared=list(trunk.parameters()), task=list(heads.parameters()),
                      scaler=torch.amp.GradScaler("cpu", enabled=False), world_size=world)
    weighting = PCGrad(heads=_heads("a", "b"))
    f = trunk(x)
    losses = {"a": torch.nn.functional.cross_entropy(heads["a"](f), ya),
              "b": torch.nn.functional.cross_entropy(heads["b"](f), yb)}
    weighting.backward(losses, ctx)
    weighting.finish_step(ctx)
    return torch.cat([p.grad.reshape(-1) for p in [*trunk.parameters(), *heads.parameters()]])


@pytest.mark.slow
def test_pcgrad_under_two_process_ddp_matches_the_full_batch(tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    full = _two_head_step(0, 1).numpy()
    for rank in range(2):   # equal shards: the mean of the ranks' gradients is the full batch's gradient
        np.testing.assert_allclose(np.load(tmp_path / f"grad{rank}.npy"), full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["pcgrad", "cagrad"])
def test_gradient_methods_train_under_bf16_with_accumulation(tiny_cfg, method):
    from multitask.runs.checkpoint import load_checkpoint
    from multitask.train.run import run_training

    run_dir = run_training(tiny_cfg(f"train.loss_weighting={method}", "train.amp=bf16", "train.accum_steps=2"))
    last = load_checkpoint(run_dir / "last.pt")
    assert last["step"] == 3                                   # 84 images / 16 per batch / 2 accumulated
    assert int(last["criterion"]["weighting.steps"]) == 3      # one combined trunk gradient per optimizer step
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
