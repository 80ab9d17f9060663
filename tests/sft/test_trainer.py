from transformers import TrainingArguments

from minirec.sft.trainer import SIDTrainer


def test_no_weight_decay_on_embeddings_norms_or_biases(tiny_model, tmp_path):
    model, _, _ = tiny_model
    trainer = SIDTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[]))
    decayed = trainer.get_decay_parameter_names(model)
    assert decayed and all("embed" not in n and "norm" not in n and "bias" not in n for n in decayed)
    assert any("mlp" in n for n in decayed) and any("self_attn" in n for n in decayed)


def test_decay_embeddings_adds_the_embedding_rows(tiny_model, tmp_path):
    model, _, _ = tiny_model
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    decayed = SIDTrainer(model=model, args=args, decay_embeddings=True).get_decay_parameter_names(model)
    assert any("embed" in n for n in decayed)
    assert all("norm" not in n and "bias" not in n for n in decayed)
