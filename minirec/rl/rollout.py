"""Rollouts for GRPO on SIDs, and what TRL needs to see of a PEFT policy.

* :class:`SIDRollout` is TRL's ``rollout_func``: one constrained beam search per prompt group
  gives its G distinct catalogue SIDs in beam order (or G constrained samples). With
  ``add_target`` the group's target replaces the last rollout when the search missed it, so
  every group holds a positive (MiniOneRec's ``add_gt``): without it about three groups in
  four have no hit, zero reward variance and no gradient (docs/RESULTS.md). With
  ``dynamic_sampling`` (DAPO's idea, on policy) a group whose rollouts miss its target is
  instead replaced by another train prompt whose rollouts hit: TRL samples the batch before
  any rollout and has no hook to swap prompts, so the rollout does it and hands TRL the new
  prompt ids and targets (``target_sid`` in its output overrides the dataset column).
* :class:`SIDGRPOTrainer`: TRL hands ``rollout_func`` the prompts only; the subclass passes the
  batch's ``target_sid`` column along, which target-in-group needs (a prompt's text cannot
  stand for its target: the same history has different targets).
* :func:`expose_adapted_lm_head`: TRL's fused LM head must see PEFT's trainable SID rows.
"""

import torch
from trl import GRPOTrainer

from minirec.beam import constrained_beam_search, constrained_sample
from minirec.errors import MinirecError
from minirec.tokenization import encode_prompts


class SIDGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose rollout function can read the targets of the rows being rolled out."""

    rollout_targets: list | None = None

    def _generate_and_score_completions(self, inputs):
        self.rollout_targets = [x.get("target_sid") for x in inputs]
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self.rollout_targets = None


class SIDRollout:
    """TRL ``rollout_func``: prompts arrive as consecutive groups of G copies; each group gets
    the G best catalogue SIDs of one beam search (or G constrained samples), in rank order."""

    def __init__(self, tokenizer, trie, num_generations, beam_search=True, temperature=1.0, add_target=False,
                 refill_pool=None, refill_rounds=2, seed=0):
        self.tokenizer, self.trie, self.G = tokenizer, trie, num_generations
        self.beam_search, self.temperature, self.add_target = beam_search, temperature, add_target
        # Dynamic sampling: (prompts, target SIDs) to draw replacements from, and how many
        # rounds of draws (each one rollout of 2x the missing groups) a step may spend.
        self.refill_pool, self.refill_rounds = refill_pool, refill_rounds
        self.rng = torch.Generator().manual_seed(seed)
        self.groups = self.groups_with_target_added = 0  # for the log: how often the search missed
        self.groups_refilled = self.groups_missed = 0

    def _target_tokens(self, sid):
        return tuple(self.tokenizer(sid, add_special_tokens=False)["input_ids"])

    def _rollouts(self, model, prompt_ids):
        if self.beam_search:
            groups = constrained_beam_search(model, prompt_ids, self.trie, self.G, self.tokenizer.pad_token_id)
        else:
            groups = constrained_sample(model, prompt_ids, self.trie, self.G, self.tokenizer.pad_token_id,
                                        self.temperature)
        return [[b.tokens for b in beams] for beams in groups]

    def _refill(self, model, sequences, group_prompts, group_targets):
        """Replace groups that miss their target by pool prompts whose rollouts hit (in place)."""
        missing = [g for g, t in enumerate(group_targets) if self._target_tokens(t) not in sequences[g]]
        self.groups += len(sequences)
        for _ in range(self.refill_rounds):
            if not missing:
                break
            prompts, targets = self.refill_pool
            draw = torch.randint(len(prompts), (2 * len(missing),), generator=self.rng).tolist()
            ids = encode_prompts(self.tokenizer, [prompts[i] for i in draw])
            for i, cand_ids, seqs in zip(draw, ids, self._rollouts(model, ids)):
                if missing and len(seqs) >= self.G and self._target_tokens(targets[i]) in seqs:
                    g = missing.pop(0)
                    sequences[g], group_prompts[g], group_targets[g] = seqs, cand_ids, targets[i]
                    self.groups_refilled += 1
        self.groups_missed += len(missing)

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
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model:
            was_training = model.training
            model.eval()
            sequences = self._rollouts(model, group_prompts)
            if self.refill_pool:
                self._refill(model, sequences, group_prompts, group_targets)
            model.train(was_training)
        if self.add_target:
            for g, s in enumerate(starts):
                want = self._target_tokens(targets[s])
                self.groups += 1
                if want not in sequences[g] and len(sequences[g]) >= self.G:
                    sequences[g][self.G - 1] = want
                    self.groups_with_target_added += 1
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
        if self.refill_pool:  # the rewards must score the replacement prompts' targets
            out["target_sid"] = [group_targets[g] for g in row_group]
        return out


class _AdaptedHead(torch.nn.Module):
    """What TRL's fused LM head should see: the output projection *with* PEFT's trainable SID rows.

    TRL computes per-token log-probs by reading ``get_output_embeddings().weight`` directly
    (never calling the module), which would silently use the LM head without the SID rows that
    SFT trained and RL keeps training. This view returns the merged weight, or the base weight
    while adapters are disabled (TRL's KL reference), so gradients reach the trainable rows.
    """

    def __init__(self, layer):
        super().__init__()
        self._layer = [layer]  # a list: not registered as a submodule (no double counting/saving)

    @property
    def weight(self):
        layer = self._layer[0]
        base = layer.base_layer.weight
        if layer.disable_adapters or not layer.active_adapters or layer.merged:
            return base
        return layer.get_merged_weights(layer.active_adapters)

    @property
    def bias(self):
        return getattr(self._layer[0].base_layer, "bias", None)


def expose_adapted_lm_head(peft_model) -> None:
    """Point the base model's ``get_output_embeddings`` at :class:`_AdaptedHead` when the LM head
    carries trainable SID rows (tied or untied); a plain LM head is left alone."""
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    base = peft_model.get_base_model()
    head = base.get_output_embeddings()
    layer = getattr(head, "token_adapter", head)
    if isinstance(layer, TrainableTokensLayer):
        view = _AdaptedHead(layer)
        base.get_output_embeddings = lambda: view
