"""An epoch's metrics gathered over two gloo ranks equal the one-process metrics of the same batches (it spawns
processes)."""
import numpy as np
import pytest
from helpers import mask_heads, random_batches

from multitask.metrics.accumulator import MetricAccumulator


@pytest.mark.slow
def test_sync_gathers_all_ranks(tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_sync_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    heads = mask_heads()
    single = MetricAccumulator(heads=heads, composite=heads)
    for logits, targets in random_batches(heads, n=20, batches=2, seed=7):
        single.update(logits, targets)
    for rank in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"targets{rank}.npy"), single.targets()["age"])
        assert float(np.load(tmp_path / f"f1_{rank}.npy")) == pytest.approx(single.compute()["composite/f1"])


def _sync_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        heads = mask_heads()
        acc = MetricAccumulator(heads=heads, composite=heads)
        logits, targets = random_batches(heads, n=20, batches=2, seed=7)[rank]   # each rank sees its own batch
        acc.update(logits, targets)
        acc.sync()
        acc.sync()   # a second call must not gather twice
        np.save(f"{out_dir}/targets{rank}.npy", acc.targets()["age"])
        np.save(f"{out_dir}/f1_{rank}.npy", np.array(acc.compute()["composite/f1"]))
    finally:
        dist.destroy_process_group()
