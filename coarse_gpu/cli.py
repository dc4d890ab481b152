"""``coarse-gpu``: the command line, a Hydra app over ``configs/``.

    coarse-gpu                                  # the built-in simulated promotions experiment
    coarse-gpu model=dragonnet discretizer=lloyd data.n_customers=100000
    coarse-gpu -m discretizer.k=2,3             # a sweep: one run directory per value
    coarse-gpu --cfg job                        # print the composed config and exit

Every run writes into its Hydra run directory: results.json, config.yaml, run.json (seed,
versions, device, command), table.txt, share_vs_k.png, treatments_k<K>.png, the log, and (with
``logger=wandb``, offline by default) a ``wandb/offline-run-*`` folder.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # show the real traceback, not Hydra's summary

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from coarse_gpu.experiment.config import register_configs  # noqa: E402

log = logging.getLogger("coarse_gpu")


def config_dir() -> Path:
    """The Hydra config folder: $COARSE_GPU_CONFIG_DIR, else ``configs/`` of this source checkout."""
    env = os.environ.get("COARSE_GPU_CONFIG_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[1] / "configs"
    if not (path / "config.yaml").is_file():
        raise SystemExit(
            f"coarse-gpu: no config.yaml in {path}. Install from a source checkout with `pip install -e .` "
            "or point COARSE_GPU_CONFIG_DIR at a copy of the repository's configs/ folder."
        )
    return path


def run(cfg: DictConfig) -> dict:
    """One job inside Hydra: record the run, track it, run the experiment, report."""
    # Imported here so that `coarse-gpu --help` / `--cfg job` stay fast.
    from coarse_gpu.experiment.pipeline import run_experiment
    from coarse_gpu.experiment.report import format_table, plot_share_vs_k, plot_treatments
    from coarse_gpu.experiment.tracking import Tracker
    from coarse_gpu.utils import atomic_write_json, atomic_write_text, environment_record, resolve_device

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    container = OmegaConf.to_container(cfg, resolve=True)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    device = resolve_device(cfg.device)
    record = {
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "overrides": list(hc.overrides.task),
        "seed": int(cfg.seed),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **environment_record(device),
    }
    atomic_write_json(run_dir / "run.json", record)

    is_sweep = hc.mode == RunMode.MULTIRUN
    tracker = Tracker.from_config(
        cfg.logger, run_dir, container,
        name=run_dir.name if not is_sweep else f"{Path(hc.sweep.dir).name}-{hc.job.num}",
        group=Path(hc.sweep.dir).name if is_sweep else None,
    )
    try:
        results = run_experiment(cfg, run_dir, tracker)
    except BaseException:
        tracker.finish(exit_code=1)
        raise

    table = format_table(results)
    atomic_write_text(run_dir / "table.txt", table + "\n")
    print("\n" + table + "\n", flush=True)
    share_png = plot_share_vs_k(results, run_dir / "share_vs_k.png")
    k_plot = 5 if 5 in results["k_values"] else max(results["k_values"])
    treat_png = plot_treatments(results, run_dir / f"treatments_k{k_plot}.png", k_plot)
    tracker.log_image("share_vs_k", share_png)
    if treat_png is not None:
        tracker.log_image(f"treatments_k{k_plot}", treat_png)
    summary = {f"{m}/share_of_full_k{k}": r["share_of_full"] for m, per_k in results["methods"].items()
               for k, r in per_k.items()}
    summary.update({f"timings_s/{k}": v for k, v in results["timings_s"].items()})
    tracker.summary(summary)
    tracker.save_file(run_dir / "results.json")
    if tracker.enabled:
        log.info("W&B offline run: %s (upload later with `wandb sync %s`)", tracker.run_dir, tracker.run_dir)
    tracker.finish()
    log.info("outputs in %s: results.json, table.txt, share_vs_k.png, config.yaml, run.json", run_dir)
    return results


def main() -> None:
    register_configs()
    hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")(run)()


if __name__ == "__main__":
    main()
