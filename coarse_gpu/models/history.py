"""Training curves of a fitted model (``history_``: one dict per epoch) as a PNG."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence


def plot_history(history: Sequence[dict], path, title: Optional[str] = None, best_epoch: Optional[int] = None) -> Path:
    """Save train / validation loss per epoch (log scale) and the learning rate to ``path`` (PNG).

    history : ``model.history_`` (dicts with epoch, train_loss, val_loss and lr; other ``val_*`` parts
        such as DragonNet's are drawn as dashed lines). best_epoch : marked with a vertical line.
    Returns the path written.
    """
    import matplotlib  # here: matplotlib loads only to draw curves (fitting needs none)

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # after use(): pyplot takes its backend when first imported

    if not history:
        raise ValueError("plot_history: empty history (fit the model first)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    epochs = [h["epoch"] for h in history]
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(6.4, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})

    def series(key):
        return [h.get(key, float("nan")) for h in history]

    ax.plot(epochs, series("train_loss"), label="train loss", color="C0")
    val = series("val_loss")
    if any(math.isfinite(v) for v in val):
        ax.plot(epochs, val, label="validation loss", color="C1")
    extra = sorted({k for h in history for k in h if k.startswith("val_") and k != "val_loss"})
    for j, k in enumerate(extra):
        ax.plot(epochs, series(k), label=k, ls="--", lw=1, color=f"C{2 + j}")
    if best_epoch:
        ax.axvline(best_epoch, color="grey", ls=":", lw=1, label=f"best epoch {best_epoch}")
    positive = all(v > 0 for h in history for k, v in h.items() if k.endswith("loss") and math.isfinite(v))
    if positive:
        ax.set_yscale("log")
    ax.set_ylabel("loss (standardized y)")
    ax.legend(fontsize=8)
    ax.set_title(title or "training curves")
    ax_lr.plot(epochs, series("lr"), color="k")
    ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
