"""Sibling-GRPO: credit at the SID level where a group's rollouts part ways.

From V-STAR (Spend Search Where It Pays: Value-Guided Structured Sampling and Optimization for
Generative Recommendation, arXiv 2602.10699, Sec. 4.3). Plain GRPO gives every token of a rollout
the rollout's advantage, so the first SID token of two rollouts that share it gets opposite
pushes when one hits and the other misses. Sibling-GRPO reads a prompt's G rollouts as a prefix
tree instead:

* for each prefix h that the rollouts reach, the tokens v that follow h in at least one rollout
  are the siblings S(h);
* the node reward R(h, v) is the mean reward of the rollouts routed through h v;
* the node advantage is A(h, v) = (R(h, v) - mean_{u in S(h)} R(h, u)) / (std_{u in S(h)} + 1e-4),
  and 0 where h has fewer than two children (nothing to compare);
* each rollout's token v after h gets A(h, v), and the sibling loss is the mean over SID tokens
  of -A(h, v) * pi(v | x, h) / pi_old(v | x, h), added to the GRPO loss (weight 1 in V-STAR).

The std is the population std over the sibling *nodes* (each distinct child counts once, whatever
the number of rollouts through it), as in V-STAR's official code (``np.std``, ddof 0): two
siblings with different node rewards always get advantages of about +1 and -1, whatever the size
of their reward difference (a 0.01 gap counts as much as a hit against a miss), as V-STAR defines it.

Where this differs from the official code, and why:

* Trees are built per prompt (one group of G rollouts), as the paper defines them; the official
  code pools the SIDs of every prompt in a process's batch into one tree.
* The loss is a per-completion mean over its SID tokens, then a mean over completions (TRL's
  ``grpo`` normalisation). With equal micro-batches and processes this is the exact mean of the
  step under gradient accumulation and data parallelism; the official code divides by the count
  of tokens with a non-zero advantage in each micro-batch, which changes from batch to batch.
* One KL term, TRL's, over all completion tokens: ``--beta`` keeps its meaning. The official
  sibling loss repeats ``beta * KL`` on the SID tokens, i.e. about doubles beta there at weight 1.

EOS is not part of the tree: no catalogue SID is a prefix of another (minirec.sid.collisions),
so after a full SID, EOS is the only child and would get 0 anyway.
"""

import torch

EPSILON = 1e-4  # as in TRL's GRPO advantages and in V-STAR


def _prefix_ids(keys: torch.Tensor) -> torch.Tensor:
    """One id per distinct row of ``keys`` (N, k): rows with the same prefix share an id."""
    return torch.unique(keys, dim=0, return_inverse=True)[1]


def sibling_advantages(tokens: torch.Tensor, sid_mask: torch.Tensor, rewards: torch.Tensor,
                       group_size: int) -> torch.Tensor:
    """Per-token sibling advantages A(h, v) of consecutive groups of ``group_size`` completions.

    ``tokens`` (N, T) are the completions' token ids, ``sid_mask`` (N, T) marks their SID tokens
    (true from position 0 on, for as long as the SID lasts: EOS and padding are false; a row that
    is all false takes no part), ``rewards`` (N,) their rewards. Returns (N, T) float32, 0 outside
    ``sid_mask`` and where a token's parent prefix has fewer than two children in its group.
    Vectorised over the batch: one pass per SID level.
    """
    n, length = tokens.shape
    if n % group_size:
        raise ValueError(f"{n} completions are not whole groups of {group_size}")
    device = tokens.device
    rewards = rewards.to(device=device, dtype=torch.float32)
    group = torch.arange(n, device=device) // group_size
    # Column 0 keeps groups apart; masked positions become -1 so that a prefix's key is its SID tokens.
    keys = torch.cat([group[:, None], torch.where(sid_mask, tokens, -1)], dim=1)
    advantages = torch.zeros(n, length, dtype=torch.float32, device=device)
    parent = group
    for depth in range(length):
        live = sid_mask[:, depth]
        if not live.any():
            break
        node = _prefix_ids(keys[:, : depth + 2])  # the prefix h plus this token v
        size, parents = int(node.max()) + 1, int(parent.max()) + 1
        # Node reward: the mean reward of the live rollouts through the node.
        count = torch.bincount(node[live], minlength=size)
        node_reward = torch.bincount(node[live], weights=rewards[live], minlength=size) / count.clamp(min=1)
        node_parent = torch.zeros(size, dtype=torch.long, device=device).scatter_(0, node[live], parent[live])
        # Mean and population std over each parent's children, every child counted once.
        kids, kid_reward = node_parent[count > 0], node_reward[count > 0]
        children = torch.bincount(kids, minlength=parents)
        mean = torch.bincount(kids, weights=kid_reward, minlength=parents) / children.clamp(min=1)
        spread = torch.bincount(kids, weights=(kid_reward - mean[kids]) ** 2, minlength=parents)
        std = (spread / children.clamp(min=1)).sqrt()
        value = (node_reward[node] - mean[parent]) / (std[parent] + EPSILON)
        advantages[:, depth] = torch.where(live & (children[parent] >= 2), value, 0.0)
        parent = node
    return advantages


def sid_token_mask(completion_ids: torch.Tensor, completion_mask: torch.Tensor, eos_token_ids) -> torch.Tensor:
    """The SID tokens of TRL's completions: inside the completion mask (which ends at EOS), not EOS."""
    eos = torch.tensor(list(eos_token_ids), device=completion_ids.device)
    return completion_mask.bool() & ~torch.isin(completion_ids, eos)


def sibling_loss(per_token_logps: torch.Tensor, old_per_token_logps: torch.Tensor, advantages: torch.Tensor,
                 sid_mask: torch.Tensor) -> torch.Tensor:
    """Mean over completions of the mean over their SID tokens of -A * ratio (unclipped, as in V-STAR).

    The ratio is token-level, pi / pi_old = exp(logp - old_logp): 1 on policy, with the gradient
    of logp. A completion with no SID token (none in minirec) counts as 0.
    """
    ratio = torch.exp(per_token_logps - old_per_token_logps)
    mask = sid_mask.to(per_token_logps.dtype)
    per_completion = (-advantages * ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    return per_completion.mean()
