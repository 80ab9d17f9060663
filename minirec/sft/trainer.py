"""transformers' Trainer, adapted where it has no hook for what SFT on SIDs needs.

* Checkpoint selection on what we report: :class:`SIDTrainer` adds ``eval_HR@10``,
  ``eval_NDCG@10`` and their sum ``eval_rank_score`` (a constrained beam search over a fixed
  valid subset) to every evaluation, before the Trainer logs it, picks the best checkpoint and
  runs early stopping (valid loss is only a proxy for the ranking; docs/RESULTS.md compares
  the two). ``compute_metrics`` cannot do this: it only sees the logits of the loss pass, not
  a model to decode with. Processes split the rows (``rank_fn`` gathers them); ``eval_rank_seconds``
  times the search.
* No weight decay on embedding rows (the Trainer exempts only biases and norms): decaying the
  rarely-seen SID rows pulls them towards zero between their updates (``decay_embeddings=True``
  decays them too, for the ablation).
* :class:`Throughput` adds samples/s and non-padding tokens/s to every log line.
"""

import time

from transformers import Trainer, TrainerCallback

from minirec.metrics import ranking_metrics


class SIDTrainer(Trainer):
    def __init__(self, *args, rank_fn=None, decay_embeddings=False, distiller=None, **kwargs):
        """``rank_fn(model) -> list of ranks`` (None when the target is missing), or None.
        ``distiller``: a :class:`minirec.sft.distill.Distiller` (the teacher's soft targets), or None."""
        super().__init__(*args, **kwargs)
        self.rank_fn = rank_fn
        self.decay_embeddings = decay_embeddings
        self.distiller = distiller

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The Trainer's loss; with a distiller, mixed with the teacher's soft cross-entropy over the
        same label-token count (so accumulation scales both alike; minirec.sft.distill)."""
        extra = {k: inputs.pop(k) for k in ("cf_inputs", "cf_last", "cf_where") if k in inputs}
        if self.distiller is None or not extra:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)
        # the soft term is normalised exactly as the Trainer normalised the hard one: over the label
        # tokens of the whole accumulated (and, by default, all-process) batch, or per micro-batch
        global_count = num_items_in_batch is not None and (self.model_accepts_loss_kwargs or self.compute_loss_func)
        count = num_items_in_batch if global_count else (inputs["labels"][:, 1:] != -100).sum()
        soft = self.distiller.soft_loss_sum(outputs.logits, **extra) / count
        if global_count and self.args.average_tokens_across_devices:  # as Trainer.compute_loss scales its loss
            soft = soft * (self.accelerator.num_processes // self.get_tp_size() if self.args.n_gpu <= 1
                           else self.args.n_gpu)
        loss = (1 - self.distiller.weight) * loss + self.distiller.weight * soft
        return (loss, outputs) if return_outputs else loss

    def evaluation_loop(self, *args, metric_key_prefix="eval", **kwargs):
        output = super().evaluation_loop(*args, metric_key_prefix=metric_key_prefix, **kwargs)
        if self.rank_fn is not None:
            started = time.perf_counter()
            m = ranking_metrics(self.rank_fn(self.model), ks=(10,))
            output.metrics.update({
                f"{metric_key_prefix}_HR@10": round(m["HR@10"], 5),
                f"{metric_key_prefix}_NDCG@10": round(m["NDCG@10"], 5),
                f"{metric_key_prefix}_rank_score": round(m["HR@10"] + m["NDCG@10"], 5),
                f"{metric_key_prefix}_rank_seconds": round(time.perf_counter() - started, 2),
            })
        return output

    def get_decay_parameter_names(self, model) -> list[str]:
        if self.decay_embeddings:
            return super().get_decay_parameter_names(model)
        embeddings = {id(model.get_input_embeddings().weight)}
        if model.get_output_embeddings() is not None:
            embeddings.add(id(model.get_output_embeddings().weight))
        skip = {n for n, p in model.named_parameters() if id(p) in embeddings or "embed" in n or "trainable_tokens" in n}
        return [n for n in super().get_decay_parameter_names(model) if n not in skip]


class Throughput(TrainerCallback):
    """Adds samples/s and (non-padding) tokens/s to every log line; times each epoch."""

    def __init__(self):
        self.t0 = self.last_t = time.perf_counter()
        self.last_step = self.last_tokens = 0
        self.epoch_times = []
        self.epoch_start = self.t0

    def on_log(self, args, state, control, logs=None, **kw):
        if logs is None or "loss" not in logs:
            return
        now = time.perf_counter()
        dt = max(now - self.last_t, 1e-9)
        samples = (state.global_step - self.last_step) * args.per_device_train_batch_size \
            * args.gradient_accumulation_steps * args.world_size
        rates = {"samples_per_second": round(samples / dt, 2),
                 "tokens_per_second": round((state.num_input_tokens_seen - self.last_tokens) / dt, 1)}
        logs.update(rates)
        if state.log_history:  # the Trainer stored a copy of logs before the callbacks ran
            state.log_history[-1].update(rates)
        self.last_t, self.last_step, self.last_tokens = now, state.global_step, state.num_input_tokens_seen

    def on_epoch_end(self, args, state, control, **kw):
        now = time.perf_counter()
        self.epoch_times.append(round(now - self.epoch_start, 2))
        self.epoch_start = now
