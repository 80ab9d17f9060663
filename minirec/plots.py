"""PNG plots of training curves and evaluation metrics, written atomically."""

import matplotlib

matplotlib.use("Agg")  # headless: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402

from minirec.io import atomic_path  # noqa: E402


def save_figure(fig, path, dpi=110) -> None:
    """Lay out, write as PNG (atomically) and close: the end of every plot."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)


def plot_training(log_history, path) -> None:
    """Train and valid loss against the optimizer step; valid HR@10 / NDCG@10 (the selection
    metrics, when logged) on a second axis."""
    train = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    valid = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train loss", alpha=0.7)
    if valid:
        ax.plot(*zip(*valid), "o-", label="valid loss (next SID)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    ranking = [(h["step"], h["eval_HR@10"], h["eval_NDCG@10"]) for h in log_history if "eval_HR@10" in h]
    if ranking:
        steps, hr, ndcg = zip(*ranking)
        ax2 = ax.twinx()
        ax2.plot(steps, hr, "s--", color="tab:green", label="valid HR@10 (selection subset)")
        ax2.plot(steps, ndcg, "^--", color="tab:red", label="valid NDCG@10")
        ax2.set_ylabel("HR@10 / NDCG@10")
        ax2.legend(loc="upper right")
    save_figure(fig, path)


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
    save_figure(fig, path)


def plot_rl(log_history, path) -> None:
    """RL curves against the step: reward and its std, zero-std group fraction, KL, valid HR/NDCG@10."""
    def series(key):
        return [(h["step"], h[key]) for h in log_history if key in h]

    panels = [("reward", "reward_std"),
              ("frac_zero_std_before_refill", "frac_reward_zero_std", "frac_groups_refilled", "frac_groups_target_added"),
              ("kl",), ("valid_HR@10", "valid_NDCG@10")]
    fig, axes = plt.subplots(1, len(panels), figsize=(16, 3.6))
    for ax, keys in zip(axes, panels):
        for key in keys:
            points = series(key)
            if points:
                ax.plot(*zip(*points), "o-" if key.startswith("valid") else "-", label=key, markersize=3)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_metrics_by_k(systems, ks, path) -> None:
    """HR@K and NDCG@K against K, one line per system: ``systems`` = [(name, metrics dict)]."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("HR", "NDCG")):
        for name, m in systems:
            have = [k for k in ks if f"{metric}@{k}" in m]
            ax.plot(have, [m[f"{metric}@{k}"] for k in have], "o-", label=name)
        ax.set_xscale("log")
        ax.set_xticks(list(ks), [str(k) for k in ks])
        ax.set_xlabel("K")
        ax.set_title(f"{metric}@K")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)
