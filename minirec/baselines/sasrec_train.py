"""Train SASRec on the train split, stop early on valid HR@10 + NDCG@10, restore the best
epoch, score the requested splits with the baselines' SID metrics, and save the best weights
(model.safetensors + teacher.json: the teacher that CF-guided decoding and RL load).

One epoch = one pass over the training sequences in a seeded random order, full-softmax
cross-entropy on the labelled positions only (so each train row weighs the same), AdamW at
a constant learning rate. CPU threads are torch's default unless --num_threads is given.
"""

import copy
import logging
import random
import time

import torch
import torch.nn.functional as F

from minirec.baselines.sasrec import IGNORE, SASRec, SASRecConfig, history_batch, item_index, training_examples
from minirec.baselines.scoring import parse_splits, ranked_sids, score, write_report
from minirec.data import load_dataset
from minirec.teacher import save_teacher

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def train_epoch(model, optimizer, inputs, labels, batch_size, generator) -> float:
    """One pass in a random order; returns the mean loss per labelled position."""
    model.train()
    total, count = 0.0, 0
    for idx in torch.randperm(len(inputs), generator=generator).split(batch_size):
        x, y = inputs[idx], labels[idx]
        width = int((x != 0).sum(1).max())  # trailing all-pad columns carry nothing
        x, y = x[:, :width], y[:, :width]
        keep = y != IGNORE
        # scores only where a label is: most positions of a merged sequence have none
        loss = F.cross_entropy(model.scores(model(x)[keep]), y[keep])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * int(keep.sum())
        count += int(keep.sum())
    return total / max(count, 1)


@torch.no_grad()
def rank_rows(model, rows, ids, catalogue, config: SASRecConfig) -> list[list[str]]:
    """Top ``top_k`` distinct SIDs per row, from the hidden state at the row's last item."""
    model.eval()
    items = list(ids)  # column j of the scores is items[j]
    # enough items that collision groups cannot leave a row with fewer than top_k SIDs
    k = min(len(items), config.top_k + len(items) - len(catalogue.items_by_sid))
    out = []
    for start in range(0, len(rows), config.eval_batch_size):
        chunk = rows[start : start + config.eval_batch_size]
        x, last = history_batch([r.history for r in chunk], ids, config.max_len)
        hidden = model(x)[torch.arange(len(chunk)), last]
        top = model.scores(hidden).topk(k).indices.tolist()
        out += [ranked_sids((items[j] for j in row), catalogue, config.top_k) for row in top]
    return out


def evaluate_split(model, rows, ids, catalogue, config) -> dict:
    started = time.perf_counter()
    sid_lists = rank_rows(model, rows, ids, catalogue, config)
    return score(sid_lists, rows, catalogue, seconds=time.perf_counter() - started)


def fit(model, train_rows, valid_rows, ids, catalogue, config: SASRecConfig, generator) -> dict:
    """Train with early stopping; leaves the best epoch's weights in ``model``."""
    inputs, labels = training_examples(train_rows, ids, config.max_len)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    log.info("SASRec: %d train rows in %d sequences, %d params", len(train_rows), len(inputs),
             sum(p.numel() for p in model.parameters()))
    best, best_state, curve, started = None, None, [], time.perf_counter()
    for epoch in range(1, config.max_epochs + 1):
        t0 = time.perf_counter()
        loss = train_epoch(model, optimizer, inputs, labels, config.batch_size, generator)
        valid = evaluate_split(model, valid_rows, ids, catalogue, config)
        curve.append({"epoch": epoch, "train_loss": round(loss, 4), "HR@10": round(valid["HR@10"], 4),
                      "NDCG@10": round(valid["NDCG@10"], 4), "seconds": round(time.perf_counter() - t0, 2)})
        log.info("epoch %d: train loss %.4f | valid HR@10 %.4f NDCG@10 %.4f | %.1fs",
                 epoch, loss, valid["HR@10"], valid["NDCG@10"], curve[-1]["seconds"])
        if best is None or valid["HR@10"] + valid["NDCG@10"] > best["HR@10"] + best["NDCG@10"]:
            best, best_state = curve[-1], copy.deepcopy(model.state_dict())
        elif epoch - best["epoch"] >= config.patience:
            break
    model.load_state_dict(best_state)
    return {"wall_seconds": round(time.perf_counter() - started, 1), "best_epoch": best["epoch"],
            "epochs_run": len(curve), "train_sequences": len(inputs), "train_rows": len(train_rows),
            "valid_curve": curve}


def run(config: SASRecConfig) -> dict:
    """The ``sasrec`` command: train, restore the best epoch, write metrics.json, print tables."""
    config.validate()
    splits = parse_splits(config.split)
    data = load_dataset(config.data_dir)
    catalogue = data.catalogue
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    generator = seed_everything(config.seed)
    ids = item_index(catalogue)
    model = SASRec(len(ids), config)
    held_out = {s: data.split(s)[: config.max_eval_rows or None] for s in ("valid", "test")}
    train = fit(model, data.split("train")[: config.max_train_rows or None], held_out["valid"], ids,
                catalogue, config, generator)
    train["params"] = sum(p.numel() for p in model.parameters())
    results = {s: evaluate_split(model, held_out[s], ids, catalogue, config) for s in splits}
    # the best epoch's weights, so the model serves as a teacher (minirec.teacher); metrics.json last
    save_teacher(model, config, list(ids), catalogue.index_sha256, config.output_dir)
    return write_report("sasrec", config.output_dir, data, results, train=train, config=vars(config))
