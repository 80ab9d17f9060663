"""Model side: base loading (tiny, SmolLM2, local HF), SID tokens, PEFT modes, device/dtype."""
