"""PNG plots of training curves and evaluation metrics, written atomically."""

import matplotlib

matplotlib.use("Agg")  # headless: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402

from minirec.io import atomic_path  # noqa: E402


def plot_training(log_history, path) -> None:
    """Train loss and valid loss against the optimizer step."""
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    valid = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(6, 4))
    if train:
        ax.plot(*zip(*train), label="train loss")
    if valid:
        ax.plot(*zip(*valid), "o-", label="valid loss (next SID)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plot_ranking_metrics(metrics, ks, path) -> None:
    """HR@K and NDCG@K against K for one evaluation."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ks, [metrics[f"HR@{k}"] for k in ks], "o-", label="HR@K")
    ax.plot(ks, [metrics[f"NDCG@{k}"] for k in ks], "s-", label="NDCG@K")
    ax.set_xscale("log")
    ax.set_xticks(list(ks), [str(k) for k in ks])
    ax.set_xlabel("K")
    ax.set_title(f"{metrics['split']} ({metrics['rows']} rows, beam {metrics['num_beams']}), MRR {metrics['MRR']:.4f}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plot_rl(log_history, path) -> None:
    """RL curves against the step: reward and its std, zero-std group fraction, KL, valid HR/NDCG@10."""
    def series(key):
        return [(h["step"], h[key]) for h in log_history if key in h]

    panels = [("reward", "reward_std"), ("frac_reward_zero_std",), ("kl",), ("valid_HR@10", "valid_NDCG@10")]
    fig, axes = plt.subplots(1, len(panels), figsize=(16, 3.6))
    for ax, keys in zip(axes, panels):
        for key in keys:
            points = series(key)
            if points:
                ax.plot(*zip(*points), "o-" if key.startswith("valid") else "-", label=key, markersize=3)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
