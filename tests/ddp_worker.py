"""One rank of the DDP gradient test (tests/test_train.py), launched as

    python -m torch.distributed.run --nproc-per-node 2 --master-port PORT tests/ddp_worker.py OUTDIR DATA [TEACHER]

Each rank builds the Trainer from the environment torchrun sets (world size, rank; gloo on CPU),
runs the micro-steps of step 0 and saves its gradients after DDP's all-reduce to
OUTDIR/grads-RANK.pt. The test compares them with one process on the combined batch. With
TEACHER (a model folder), the run distills from it with the settings `DISTILL`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from helpers import tiny_overrides

from omnibyte.train import Trainer, load_run_config

BATCH_SIZE, GRAD_ACCUM = 2, 2  # per rank; the test runs one process with batch_size 2 × world size
DISTILL = {"distill_temperature": 2.0, "distill_weight": 0.7}


def main(out: Path, data: Path, teacher: str | None = None) -> None:
    torch.set_num_threads(1)
    distill = {"distill_from": teacher, **DISTILL} if teacher else {}
    cfg = load_run_config(None, tiny_overrides(data, batch_size=BATCH_SIZE, grad_accum=GRAD_ACCUM, **distill))
    trainer = Trainer(cfg, out / "run", quiet=True)
    loss = trainer.micro_steps(0)
    grads = {name: p.grad.detach().clone() for name, p in trainer.model.named_parameters()}
    torch.save({"grads": grads, "loss": loss, "world_size": trainer.dist.world_size},
               out / f"grads-{trainer.dist.rank}.pt")
    dist.barrier()  # both ranks done before either tears down the group
    dist.destroy_process_group()
    # Leave without interpreter finalization: about 1 run in 10, a gloo rank aborted there
    # ("terminate called without an active exception", SIGABRT) after all its work was saved,
    # which fails the run although the gradients under test are on disk.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:4])
