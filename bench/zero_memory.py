"""Per-GPU memory of the model states (weights, gradients, optimizer) for Qwen2.5 0.5B-14B under
minirec's DeepSpeed configs, in full, LoRA and QLoRA modes, on 1/2/4/8 GPUs.

    python bench/zero_memory.py          # writes bench/results/zero_memory.json, prints the tables

No model is downloaded: each Qwen2.5 is built from its published config on the meta device, so
parameter counts (total, largest layer, every Linear a LoRA would wrap) are exact. Then:

* full: DeepSpeed's own estimators, ``estimate_zero2_model_states_mem_needs`` (ZeRO-2, with and
  without optimizer offload) and ``estimate_zero3_model_states_mem_needs`` (ZeRO-3), the functions
  behind ``estimate_zero{2,3}_model_states_mem_needs_all_cold``.
* LoRA (r=16 on every Linear, plus the 560 SID rows of the shipped index as trainable tokens, in
  the input embedding and an untied head): the trainable part through the same estimators, plus
  the frozen bf16 base, 2 bytes per parameter, on every GPU under ZeRO-2 (ZeRO-2 shards only
  gradients and optimizer states) and sharded 1/N under ZeRO-3 (plus the largest layer, gathered).
* QLoRA: as LoRA, but the Linear weights of the blocks are 4-bit NF4 with double quantization
  (0.5 + 1/64 + 4/(64*256) bytes per parameter: one 8-bit absmax per 64 weights, one fp32 per 256
  absmaxes); embeddings, LM head and norms stay bf16 (bitsandbytes leaves them). ZeRO-2 only:
  4-bit weights cannot be partitioned, and minirec refuses ZeRO-3 with a 4-bit base.

Activations are not included: they depend on micro batch and sequence length (SID prompts are
short, ~40-250 tokens) and are what --micro_batch_size and --gradient_checkpointing control.
"""

import argparse
import json
from pathlib import Path

# Published Qwen2.5 configs (config.json of each Hugging Face repo): hidden, intermediate, layers,
# attention heads, key/value heads, tied embeddings. Vocabulary 151,936 for all.
QWEN25 = {
    "Qwen2.5-0.5B": (896, 4864, 24, 14, 2, True),
    "Qwen2.5-1.5B": (1536, 8960, 28, 12, 2, True),
    "Qwen2.5-7B": (3584, 18944, 28, 28, 4, False),
    "Qwen2.5-14B": (5120, 13824, 48, 40, 8, False),
}
# Total parameters as the model cards give them, to check the meta-device counts against.
PUBLISHED_TOTAL_B = {"Qwen2.5-0.5B": 0.49, "Qwen2.5-1.5B": 1.54, "Qwen2.5-7B": 7.61, "Qwen2.5-14B": 14.7}
GPUS = (1, 2, 4, 8)
LORA_R, SID_ROWS = 16, 560
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
GB = 2**30


def count(name):
    """-> dict of exact parameter counts of a Qwen2.5 built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    hidden, inter, layers, heads, kv, tied = QWEN25[name]
    config = Qwen2Config(vocab_size=151936, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, tie_word_embeddings=tied)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())  # tied weights are one parameter
    block_linears = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lm_head" not in n]
    linear = sum(m.weight.numel() for m in block_linears)
    lora = sum(LORA_R * (m.in_features + m.out_features) for m in block_linears)
    largest = max(p.numel() for p in model.parameters())
    return {"total": total, "block_linear": linear, "largest_layer": largest,
            "trainable_lora": lora + SID_ROWS * hidden * (1 if tied else 2)}


def estimates(c, gpus):
    """GB per GPU (and CPU GB where offloaded) for each config and mode."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    def z2(params, offload=False):
        cpu, gpu = estimate_zero2_model_states_mem_needs(params, num_gpus_per_node=gpus, cpu_offload=offload)
        return gpu, cpu

    def z3(params):
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(params, c["largest_layer"], num_gpus_per_node=gpus,
                                                            cpu_offload=False, cpu_offload_params=False)
        return gpu

    frozen = c["total"]  # LoRA's base: every weight stays, frozen, in bf16
    qlora_base = c["block_linear"] * NF4_BYTES + (c["total"] - c["block_linear"]) * 2
    t = c["trainable_lora"]
    out = {
        "zero2": {"full": z2(c["total"])[0], "lora": 2 * frozen + z2(t)[0], "qlora": qlora_base + z2(t)[0]},
        "zero2_offload": {"full": z2(c["total"], True)[0], "lora": 2 * frozen + z2(t, True)[0],
                          "qlora": qlora_base + z2(t, True)[0]},
        "zero2_offload_cpu": {"full": z2(c["total"], True)[1], "lora": z2(t, True)[1], "qlora": z2(t, True)[1]},
        # z3(t) holds the estimator's gathered largest layer; the frozen base is sharded 1/N.
        "zero3": {"full": z3(c["total"]), "lora": 2 * frozen / gpus + z3(t), "qlora": None},
    }
    return {cfg: {m: (None if v is None else round(v / GB, 1)) for m, v in modes.items()} for cfg, modes in out.items()}


def table(results, cfg, title):
    lines = [f"**{title}**", "", "| model | mode | " + " | ".join(f"{g} GPU{'s' if g > 1 else ''}" for g in GPUS) + " |",
             "|---|---|" + "---|" * len(GPUS)]
    for name in QWEN25:
        for mode in ("full", "lora", "qlora"):
            cells = [results[name]["gpus"][str(g)][cfg][mode] for g in GPUS]
            cells = ["–" if v is None else f"{v:g}" for v in cells]
            lines.append(f"| {name} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/zero_memory.json")
    args = parser.parse_args()
    results = {}
    for name in QWEN25:
        c = count(name)
        assert abs(c["total"] / 1e9 / PUBLISHED_TOTAL_B[name] - 1) < 0.01, (name, c["total"])  # cards round
        results[name] = {"params": c, "gpus": {str(g): estimates(c, g) for g in GPUS}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"lora_r": LORA_R, "sid_rows": SID_ROWS, "unit": "GiB per GPU",
                                          "models": results}, indent=1))
    for cfg, title in (("zero2", "ZeRO-2 (configs/deepspeed/zero2.json), GiB per GPU"),
                       ("zero2_offload", "ZeRO-2 + optimizer offload (zero2_offload.json), GiB per GPU"),
                       ("zero2_offload_cpu", "... and CPU RAM per node for the offloaded states, GiB"),
                       ("zero3", "ZeRO-3 (zero3.json), GiB per GPU")):
        print(table(results, cfg, title), end="\n\n")
    for name, r in results.items():
        p = r["params"]
        print(f"{name}: {p['total']:,} params, LoRA r={LORA_R} + SID rows trainable {p['trainable_lora']:,}")


if __name__ == "__main__":
    main()
