"""Rollouts for GRPO on SIDs: TRL's ``rollout_func``, with target-in-group and dynamic sampling.

:class:`SIDRollout` gets the prompts of a step as consecutive groups of G copies; each group
gets the G best catalogue SIDs of one constrained beam search (or G constrained samples).

* ``add_target`` (MiniOneRec's ``add_gt``): when the rollouts miss the target, it replaces the
  last one, so every group holds a positive.
* Dynamic sampling (DAPO, arXiv 2503.14476, on policy): a group whose rewards are all equal has
  zero advantage everywhere and teaches nothing, so it is replaced by a prompt drawn from the
  refill pool whose group's rewards do vary. The test is on the rewards themselves, for every
  reward type and rollout mode (a sampled group whose G samples are all the target is as empty
  as one that misses it; a prefix-reward group that misses can still carry signal). Within a
  step, replacements are drawn without replacement, per process: each draws from its own
  generator (seed + rank), so two processes may draw the same replacement prompt. TRL samples
  the batch before any rollout and has no hook to swap prompts, so the rollout does it and hands
  TRL the new prompt ids and targets (``target_sid`` in its output overrides the dataset column
  in the reward inputs).

Counters since the last log (:meth:`SIDRollout.pop_stats`): the zero-variance fraction before
and after the selection, and the fraction of groups replaced. TRL's own ``frac_reward_zero_std``
is measured after the selection, so it says what the update saw, not what the policy produced.
"""

from collections import Counter

import torch

from minirec.beam import constrained_beam_search, constrained_sample
from minirec.errors import MinirecError
from minirec.tokenization import encode_prompts


class SIDRollout:
    """TRL ``rollout_func``: each group of G prompt copies gets G catalogue SIDs, in rank order."""

    def __init__(self, tokenizer, trie, num_generations, beam_search=True, temperature=1.0, add_target=False,
                 refill_pool=None, refill_rounds=2, group_rewards=None, seed=0):
        """``refill_pool`` = (prompts, target SIDs, histories) turns dynamic sampling on; it then needs
        ``group_rewards(completions, targets, beam_rank, histories) -> rewards``, the weighted reward
        that TRL will compute, to tell which groups carry signal."""
        if refill_pool is not None and group_rewards is None:
            raise ValueError("dynamic sampling needs group_rewards to tell which groups' rewards vary")
        self.tokenizer, self.trie, self.G = tokenizer, trie, num_generations
        self.beam_search, self.temperature, self.add_target = beam_search, temperature, add_target
        # Dynamic sampling: where replacements come from, and how many rounds of draws (each one
        # rollout of 2x the missing groups) a step may spend, so every rank's step is bounded.
        self.refill_pool, self.refill_rounds, self.group_rewards = refill_pool, refill_rounds, group_rewards
        self.rng = torch.Generator().manual_seed(seed)
        self.stats = Counter()

    def _target_tokens(self, sid):
        return tuple(self.tokenizer(sid, add_special_tokens=False)["input_ids"])

    def _rollouts(self, model, prompt_ids):
        if self.beam_search:
            groups = constrained_beam_search(model, prompt_ids, self.trie, self.G, self.tokenizer.pad_token_id)
        else:
            groups = constrained_sample(model, prompt_ids, self.trie, self.G, self.tokenizer.pad_token_id,
                                        self.temperature)  # the global RNG, which the Trainer checkpoints
        return [[b.tokens for b in beams] for beams in groups]

    def informative(self, sequences, target, history=None) -> bool:
        """Whether a group of G rollouts gets rewards that are not all equal (a non-zero advantage)."""
        if len(sequences) < self.G:
            return False
        completions = self.tokenizer.batch_decode([list(s) for s in sequences[: self.G]], skip_special_tokens=True)
        rewards = self.group_rewards(completions, [target] * self.G, list(range(self.G)), [history] * self.G)
        return max(rewards) - min(rewards) > 1e-9

    def _refill(self, model, sequences, group_prompts, group_targets, group_histories):
        """Replace the groups whose rewards do not vary by pool prompts whose rewards do (in place)."""
        empty = [g for g, (s, t, h) in enumerate(zip(sequences, group_targets, group_histories))
                 if not self.informative(s, t, h)]
        self.stats["groups"] += len(sequences)
        self.stats["zero_std_before"] += len(empty)
        prompts, targets, histories = self.refill_pool
        order = torch.randperm(len(prompts), generator=self.rng).tolist()  # no prompt twice in a step
        for _ in range(self.refill_rounds):
            if not empty or not order:
                break
            draw, order = order[: 2 * len(empty)], order[2 * len(empty):]
            ids = encode_prompts(self.tokenizer, [prompts[i] for i in draw])
            for i, cand_ids, seqs in zip(draw, ids, self._rollouts(model, ids)):
                if empty and self.informative(seqs, targets[i], histories[i]):
                    g = empty.pop(0)
                    sequences[g], group_prompts[g], group_targets[g] = seqs, cand_ids, targets[i]
                    group_histories[g] = histories[i]
                    self.stats["refilled"] += 1
        self.stats["zero_std_after"] += len(empty)

    def _add_targets(self, sequences, group_targets):
        for g, target in enumerate(group_targets):
            want = self._target_tokens(target)
            self.stats["groups"] += 1
            if want not in sequences[g] and len(sequences[g]) >= self.G:
                sequences[g][self.G - 1] = want
                self.stats["target_added"] += 1

    STAT_KEYS = ("groups", "target_added", "zero_std_before", "refilled", "zero_std_after")

    def pop_stats(self, reduce=None) -> dict:
        """Fractions of the groups rolled out since the last call (then the counters restart).

        ``reduce`` sums a list of counts over processes (every process must call it), so the
        fractions are the whole step's, not the main process's share of it."""
        counts, self.stats = [self.stats[k] for k in self.STAT_KEYS], Counter()
        if reduce is not None:
            counts = reduce(counts)
        stats = dict(zip(self.STAT_KEYS, counts))
        if not stats["groups"]:
            return {}
        names = {"target_added": "frac_groups_target_added", "zero_std_before": "frac_zero_std_before_refill",
                 "refilled": "frac_groups_refilled", "zero_std_after": "frac_zero_std_after_refill"}
        keys = ["target_added"] if self.add_target else ["zero_std_before", "refilled", "zero_std_after"]
        return {names[k]: round(stats[k] / stats["groups"], 4) for k in keys}

    def __call__(self, prompts, trainer):
        from trl.models.utils import unwrap_model_for_generation

        n, proc = len(prompts), trainer.accelerator.process_index
        # Position within the group: groups are laid out contiguously across all processes.
        positions = [(proc * n + i) % self.G for i in range(n)]
        starts = sorted({i for i in range(n) if positions[i] == 0 or i == 0})
        prompt_ids = encode_prompts(self.tokenizer, prompts)
        group_prompts = [prompt_ids[s] for s in starts]
        targets = getattr(trainer, "rollout_targets", None)
        if (self.add_target or self.refill_pool) and targets is None:
            raise MinirecError("target-aware rollouts need the SIDGRPOTrainer (it passes the targets along)")
        group_targets = [targets[s] for s in starts] if targets is not None else None
        histories = getattr(trainer, "rollout_histories", None) or [None] * n
        group_histories = [histories[s] for s in starts]
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model:
            was_training = model.training
            model.eval()
            sequences = self._rollouts(model, group_prompts)
            if self.refill_pool:
                self._refill(model, sequences, group_prompts, group_targets, group_histories)
            model.train(was_training)
        if self.add_target:
            self._add_targets(sequences, group_targets)
        completion_ids, group, row_group = [], -1, []
        for i in range(n):
            group += i in starts
            row_group.append(group)
            if positions[i] >= len(sequences[group]):
                raise MinirecError(f"only {len(sequences[group])} catalogue SIDs reachable for a prompt, fewer than "
                                   f"--num_generations {self.G}; lower --num_generations")
            completion_ids.append(list(sequences[group][positions[i]]) + [self.tokenizer.eos_token_id])
        out = {"prompt_ids": [list(group_prompts[g]) for g in row_group], "completion_ids": completion_ids,
               "logprobs": None, "beam_rank": positions}
        if self.refill_pool:  # the rewards must score the replacement prompts' targets and histories
            out["target_sid"] = [group_targets[g] for g in row_group]
            out["history"] = [group_histories[g] for g in row_group]
        return out
