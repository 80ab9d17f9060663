"""What tells a user whether RL works, and keeps the policy that worked best.

:class:`RankingEval` decodes a fixed valid subset with the current policy at the start, every
``eval_steps`` and at the end, logs HR@10 / NDCG@10 / MRR beside TRL's reward, reward std,
KL and zero-std fraction, and (``keep_best``) keeps a copy of the trainable weights with the
best valid NDCG@10 + HR@10; at the end those weights are put back, as SFT's best-checkpoint
selection does. The copy holds only the trainable tensors (an adapter, or a full small model).
"""

from transformers import TrainerCallback

from minirec.metrics import rank_of, ranking_metrics


class RankingEval(TrainerCallback):
    def __init__(self, rank_fn, rows, catalogue, eval_steps, keep_best=True, rollout=None):
        """``rank_fn(model, histories)`` -> ranked (sid, score) lists for ``rows``."""
        self.rank_fn, self.rows, self.catalogue = rank_fn, rows, catalogue
        self.eval_steps, self.keep_best, self.rollout = eval_steps, keep_best, rollout
        self.trainer = None  # set once the trainer exists
        self.last_step = None
        self.best = None  # (score, step, {name: tensor})
        self.history = []

    def evaluate(self, state):
        if self.last_step == state.global_step:  # already evaluated at this step
            return
        self.last_step = state.global_step
        model = self.trainer.model
        ranked = self.rank_fn(model, [r.history for r in self.rows])
        ranks = [rank_of([s for s, _ in preds], self.catalogue.sid(r.target)) for preds, r in zip(ranked, self.rows)]
        m = ranking_metrics(ranks, ks=(10,))
        logs = {"valid_HR@10": m["HR@10"], "valid_NDCG@10": m["NDCG@10"], "valid_MRR": m["MRR"]}
        self.history.append({"step": state.global_step, **logs})
        self.trainer.log(logs)
        score = m["HR@10"] + m["NDCG@10"]
        if self.keep_best and (self.best is None or score > self.best[0]):
            weights = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
            self.best = (score, state.global_step, weights)

    def on_train_begin(self, args, state, control, **kw):
        self.evaluate(state)  # the starting point, so every curve has its baseline

    def on_step_end(self, args, state, control, **kw):
        if self.eval_steps and state.global_step % self.eval_steps == 0:
            self.evaluate(state)

    def on_log(self, args, state, control, logs=None, **kw):
        r = self.rollout
        if logs is None or r is None or not r.groups:
            return
        fracs = {"frac_groups_target_added": r.groups_with_target_added} if r.add_target else {}
        if r.refill_pool:
            fracs = {"frac_groups_refilled": r.groups_refilled, "frac_groups_missed": r.groups_missed}
        for key, count in fracs.items():
            logs[key] = round(count / r.groups, 4)
            if state.log_history:  # the Trainer stored a copy of logs before calling us
                state.log_history[-1][key] = logs[key]

    def on_train_end(self, args, state, control, **kw):
        self.evaluate(state)

    def restore_best(self) -> int | None:
        """Put the best weights back into the model; returns their step (None: nothing kept)."""
        if self.best is None:
            return None
        params = dict(self.trainer.model.named_parameters())
        for name, value in self.best[2].items():
            params[name].data.copy_(value.to(params[name].device))
        return self.best[1]
