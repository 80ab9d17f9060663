"""Baselines on minirec's splits, scored by minirec's metric code (items -> SIDs, collision
groups counted once): most-popular, recent history then most-popular, and SASRec.

    python -m minirec.baselines popularity --data_dir data/Industrial_and_Scientific
    python -m minirec.baselines recent_popular --data_dir data/Industrial_and_Scientific
    python -m minirec.baselines sasrec --data_dir data/Industrial_and_Scientific

| module | owns |
|---|---|
| ``scoring`` | ranked items -> SID lists -> metrics; split names; metrics.json and the table |
| ``heuristics`` | popularity counts, most-popular, recent-then-popular |
| ``sasrec`` | ``SASRecConfig``, the model, its training/eval tensors |
| ``sasrec_train`` | the training loop, early stopping, the ``sasrec`` run |
| ``commands`` | the three sub-commands (``__main__`` wires them to the CLI) |
"""
