from transformers import TrainingArguments

from minirec.sft.trainer import SIDTrainer


def test_no_weight_decay_on_embeddings_norms_or_biases(tiny_model, tmp_path):
    model, _, _ = tiny_model
    trainer = SIDTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[]))
    decayed = trainer.get_decay_parameter_names(model)
    assert decayed and all("embed" not in n and "norm" not in n and "bias" not in n for n in decayed)
    assert any("mlp" in n for n in decayed) and any("self_attn" in n for n in decayed)
