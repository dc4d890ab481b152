"""Data-parallel training of the CATE model on the simulated promotions experiment, with torchrun.

    torchrun --standalone --nproc_per_node=4 scripts/train_ddp.py --n-customers 1000000 --out runs/ddp
    torchrun --standalone --nproc_per_node=2 scripts/train_ddp.py --device cpu --n-customers 20000 --out runs/ddp_cpu

One process per GPU (NCCL), or CPU processes with the gloo backend (``--device cpu``). Every rank
draws the same simulated experiment (same seed) and trains its DistributedSampler shard of each
epoch; gradients are all-reduced, so all ranks hold the same model. Rank 0 writes
``<out>/metrics.json`` (world size, backend, validation loss, RMSE of the estimated profit at the
arms against the simulator's true profit, a constant model's RMSE for scale, timings) and
``<out>/model.pt`` (the network's state_dict). With ``--checkpoint-dir`` training checkpoints every
epoch and a re-run of the same command resumes. Plain ``python scripts/train_ddp.py`` (no torchrun)
trains in one process, for comparison.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from coarse_gpu.data import PromotionsSimulator
from coarse_gpu.models import DragonNet, TARNet
from coarse_gpu.models import distributed as ddp
from coarse_gpu.utils import atomic_write_json, seed_everything


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-customers", type=int, default=50_000)
    ap.add_argument("--model", choices=["tarnet", "dragonnet"], default="tarnet")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=512, help="global batch (split across ranks)")
    ap.add_argument("--max-epochs", type=int, default=60)
    ap.add_argument("--patience", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--device", choices=["auto", "cpu"], default="auto", help="cpu forces gloo on CPU")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint-dir", default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch threads per process (0 = torch default)")
    ap.add_argument("--out", default="runs/ddp")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = ddp.init_distributed(backend="gloo" if args.device == "cpu" else None)
    seed_everything(args.seed)
    data = PromotionsSimulator(n_customers=args.n_customers, seed=args.seed).sample()
    train, test = data.split((0.8, 0.2), seed=args.seed)
    cls = TARNet if args.model == "tarnet" else DragonNet
    model = cls(hidden=args.hidden, batch_size=args.batch_size, max_epochs=args.max_epochs, patience=args.patience,
                lr=args.lr, device=device, seed=args.seed, verbose=ddp.is_main_process(),
                checkpoint_dir=args.checkpoint_dir, n_ensemble=1)  # one network: its replicas are compared
    t0 = time.perf_counter()
    model.fit(train.X, train.treatment, train.outcome, propensity=train.propensity)
    train_s = time.perf_counter() - t0
    # DDP keeps the replicas in sync: every rank must hold the same weights.
    checksum = float(sum(p.double().sum() for p in model.network_.state_dict().values()))
    checksums = [checksum]
    if ddp.world_size() > 1:
        checksums = [None] * ddp.world_size()
        torch.distributed.all_gather_object(checksums, checksum)

    if ddp.is_main_process():
        true = test.truth.profit(model.arms_)
        pred = model.predict_arms(test.X)
        rmse = float(np.sqrt(np.mean((pred - true) ** 2)))
        const = float(np.sqrt(np.mean((true - true.mean(0, keepdims=True)) ** 2)))  # best constant per arm
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        metrics = {
            "world_size": ddp.world_size(),
            "backend": torch.distributed.get_backend() if ddp.world_size() > 1 else None,
            "device": device,
            "n_train": len(train),
            "epochs": len(model.history_),
            "best_epoch": model.best_epoch_,
            "best_val_loss": model.best_val_loss_,
            "rmse_profit_at_arms": rmse,
            "rmse_constant_per_arm": const,
            "train_s": train_s,
            "resumed_from_epoch": model.resumed_from_epoch_,
            "weight_checksums": checksums,
            "weights_identical_across_ranks": len(set(checksums)) == 1,
        }
        torch.save(model.network_.state_dict(), out / "model.pt")
        atomic_write_json(out / "metrics.json", metrics)
        print(json.dumps(metrics, indent=2), flush=True)
    ddp.cleanup()


if __name__ == "__main__":
    main()
