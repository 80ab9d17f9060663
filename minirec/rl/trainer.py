"""TRL's GRPOTrainer, with what minirec's rollouts need to see, and the Sibling-GRPO term.

TRL hands ``rollout_func`` the prompts only; :class:`SIDGRPOTrainer` passes the batch's
``target_sid`` and ``history`` columns along, which target-in-group and dynamic sampling need (a prompt's text
cannot stand for its target: the same history has different targets).

With ``sibling_weight > 0`` it adds V-STAR's sibling loss (:mod:`minirec.rl.sibling`) to TRL's.
The sibling advantages are computed where TRL scores a generation batch, from the rewards TRL
computed (the weighted sum of its reward functions), while the groups are still whole and in
order: TRL then shuffles the batch into micro-batches, and the advantages travel with their rows.
"""

import torch
from trl import GRPOTrainer

from minirec.rl.sibling import sibling_advantages, sibling_loss, sid_token_mask


class SIDGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose rollout function can read the targets of the rows being rolled out,
    and which adds ``sibling_weight`` x the Sibling-GRPO loss when that is > 0."""

    rollout_targets: list | None = None
    rollout_histories: list | None = None

    def __init__(self, *args, sibling_weight: float = 0.0, **kwargs):
        self.sibling_weight = sibling_weight
        self._step_rewards = None  # TRL's per-function rewards of the batch being scored (all processes)
        self._keep_logps, self._loss_logps = False, None  # the log-probs TRL's loss uses, with gradient
        super().__init__(*args, **kwargs)

    def _generate_and_score_completions(self, inputs):
        self.rollout_targets = [x.get("target_sid") for x in inputs]
        self.rollout_histories = [x.get("history") for x in inputs]
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            self.rollout_targets = self.rollout_histories = None
        if self.sibling_weight > 0:
            output["sibling_advantages"] = self._sibling_advantages(output)
        self._step_rewards = None
        return output

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        self._step_rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return self._step_rewards

    def _sibling_advantages(self, output) -> torch.Tensor:
        """This process's rows' sibling advantages, from the rewards TRL gathered over all processes.

        Each process holds whole groups (train.py lays a step out in multiples of G), so its slice
        of the gathered rewards is whole groups too, and its trees need no other process's rows.
        """
        ids, n = output["completion_ids"], output["completion_ids"].size(0)
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        per_func = self._step_rewards[self.accelerator.process_index * n:(self.accelerator.process_index + 1) * n]
        rewards = (per_func * self.reward_weights.to(per_func.device)).nansum(dim=1)
        # A completion no reward function scored (TRL gives it no advantage) takes no part in the tree.
        mask = sid_token_mask(ids, output["completion_mask"], self.eos_token_ids)
        mask &= ~torch.isnan(per_func).all(dim=1, keepdim=True)
        advantages = sibling_advantages(ids, mask, rewards, group_size)
        totals = self.accelerator.gather(torch.stack([advantages.abs().sum(), mask.sum().float()]).view(1, 2))
        totals = totals.view(-1, 2).sum(dim=0)
        self._metrics[mode]["sibling/mean_abs_advantage"].append((totals[0] / totals[1].clamp(min=1)).item())
        return advantages

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        logps, entropies, aux_loss = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._keep_logps:  # the policy pass inside _compute_loss (TRL's reference pass is outside)
            self._loss_logps = logps
        return logps, entropies, aux_loss

    def _compute_loss(self, model, inputs):
        if self.sibling_weight <= 0:
            return super()._compute_loss(model, inputs)
        self._keep_logps = True
        try:
            loss = super()._compute_loss(model, inputs)
            logps = self._loss_logps
        finally:
            self._keep_logps, self._loss_logps = False, None
        old = inputs.get("old_per_token_logps")
        old = logps.detach() if old is None else old  # as TRL: on policy, the ratio is 1 with gradient
        mask = sid_token_mask(inputs["completion_ids"], inputs["completion_mask"], self.eos_token_ids)
        sibling = sibling_loss(logps, old, inputs["sibling_advantages"], mask)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["sibling/loss"].append(self.accelerator.gather(sibling.detach()).mean().item())
        # Scaled for gradient accumulation as TRL scales its grpo loss (equal micro-batches).
        normalizer = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        return loss + self.sibling_weight * sibling / normalizer
