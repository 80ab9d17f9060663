"""TRL's GRPOTrainer, with what minirec's rollouts need to see.

TRL hands ``rollout_func`` the prompts only; :class:`SIDGRPOTrainer` passes the batch's
``target_sid`` column along, which target-in-group and dynamic sampling need (a prompt's text
cannot stand for its target: the same history has different targets).
"""

from trl import GRPOTrainer


class SIDGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose rollout function can read the targets of the rows being rolled out."""

    rollout_targets: list | None = None

    def _generate_and_score_completions(self, inputs):
        self.rollout_targets = [x.get("target_sid") for x in inputs]
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self.rollout_targets = None
