"""Rewards for SID rollouts, in TRL's reward-function form.

Each function takes the decoded ``completions`` plus dataset columns as keyword lists
(``target_sid`` travels with every row, never through a dict keyed by history text: the
same history can have different targets) and ``beam_rank``, the 0-based position of the
completion in its group's beam order, supplied by the rollout. Groups are consecutive runs
of ``num_generations`` completions, as TRL's sampler lays them out.

* ``rule``: 1 for the target SID, else 0.
* ``ranking_only``: within a group that contains the target, each wrong SID is penalised by
  ``-(1/log2(rank+2)) / sum_j 1/log2(j+2)`` (wrong answers ranked high cost most; the
  penalties of a whole group sum to -1); groups without the target get 0. As in MiniOneRec.
* ``ranking``: ``rule + ranking_only``.
* ``prefix``: the fraction of leading SID levels that match the target (partial credit).
* ``semantic``: cosine similarity of item text embeddings (``--item_embeddings`` .npy,
  rows aligned with the catalogue order).
* ``cf``: a collaborative teacher's score of each rollout SID (``--cf_model``, a saved SASRec;
  :mod:`minirec.teacher`), from the prompt's history only, never the target: every group gets
  rewards that vary, including the groups whose rollouts miss the target. ``--cf_reward_scale``
  says which score (:class:`CFReward`).
"""

import math

import numpy as np

from minirec.errors import MinirecError
from minirec.sid.catalogue import split_sid
from minirec.sid.text import load_item_embeddings

REWARD_TYPES = ("rule", "ranking", "ranking_only", "prefix", "semantic", "cf")
CF_SCALES = ("logp", "share", "rank")


def _sid(completion: str) -> str:
    return completion.strip()


def rule_reward(completions, target_sid, **_):
    return [float(_sid(c) == t) for c, t in zip(completions, target_sid)]


def rank_penalties(num_generations: int) -> list[float]:
    weights = [1 / math.log2(i + 2) for i in range(num_generations)]
    total = sum(weights)
    return [-w / total for w in weights]


def _groups(beam_rank):
    """Split positions into groups: a group starts where the beam rank is 0."""
    starts = [i for i, r in enumerate(beam_rank) if r == 0 or i == 0] + [len(beam_rank)]
    return [range(a, b) for a, b in zip(starts, starts[1:])]


class RankingReward:
    """``ranking_only`` (``with_rule=False``) or ``ranking`` (rule + penalty)."""

    def __init__(self, num_generations: int, with_rule: bool):
        self.penalties = rank_penalties(num_generations)
        self.with_rule = with_rule
        self.__name__ = "ranking_reward" if with_rule else "ranking_only_reward"

    def __call__(self, completions, target_sid, beam_rank, **_):
        hit = [_sid(c) == t for c, t in zip(completions, target_sid)]
        out = [0.0] * len(hit)
        for group in _groups(beam_rank):
            if any(hit[i] for i in group):
                for i in group:
                    out[i] = 0.0 if hit[i] else self.penalties[beam_rank[i]]
        if self.with_rule:
            out = [o + float(h) for o, h in zip(out, hit)]
        return out


def prefix_reward(completions, target_sid, **_):
    out = []
    for c, t in zip(completions, target_sid):
        pred, gold = split_sid(_sid(c)), split_sid(t)
        matched = 0
        for p, g in zip(pred, gold):
            if p != g:
                break
            matched += 1
        out.append(matched / len(gold))
    return out


class SemanticReward:
    """Cosine similarity between the predicted and the target item's text embeddings."""

    __name__ = "semantic_reward"

    def __init__(self, catalogue, embeddings_path):
        if not embeddings_path:
            raise MinirecError("--reward_type semantic needs --item_embeddings FILE.npy (one row per catalogue item)")
        emb = load_item_embeddings(embeddings_path, list(catalogue.sids))
        emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        row = {item: i for i, item in enumerate(catalogue.sids)}
        # A SID shared by several items gets the mean of their embeddings.
        self.by_sid = {sid: emb[[row[i] for i in items]].mean(0) for sid, items in catalogue.items_by_sid.items()}

    def __call__(self, completions, target_sid, **_):
        out = []
        for c, t in zip(completions, target_sid):
            if _sid(c) not in self.by_sid:
                raise MinirecError(f"semantic reward: {c!r} is not a catalogue SID (the constraint should prevent this)")
            out.append(float(self.by_sid[_sid(c)] @ self.by_sid[t]))
        return out


class CFReward:
    """The teacher's score of each completion's SID given the row's history (``history``: the
    history's item ids, space-separated, one entry per completion, as the dataset column holds it).

    ``scale`` (GRPO then normalises each group's summed rewards by their std):

    * ``logp``: log p_CF(SID | history), the teacher's log-probability of the SID's collision group;
    * ``share``: p_CF renormalised over the group's G SIDs (in [0, 1], summing to 1): the teacher's
      preference among what the policy proposed, blind to how unlikely all of them are;
    * ``rank``: 1 / log2(2 + the SID's rank among the group's distinct SIDs by p_CF): the NDCG
      gain of the teacher's order, bounded like the ranking reward's penalties.

    What the weight W of ``cf:W`` does: TRL scales each group's summed rewards by their std, so in
    a group whose rollouts all miss the target (ranking reward constant) the advantages are the
    teacher's z-scores whatever W is; W sets the teacher's share only in groups that hold the
    target. The teacher was trained on the train split, so on RL's train prompts it has seen
    those targets: its scores lean towards them, more than on unseen histories.
    """

    __name__ = "cf_reward"

    def __init__(self, teacher, catalogue, scale: str = "logp"):
        if scale not in CF_SCALES:
            raise MinirecError(f"--cf_reward_scale {scale!r}: choose one of {', '.join(CF_SCALES)}")
        self.teacher, self.catalogue, self.scale = teacher, catalogue, scale

    def __call__(self, completions, history, beam_rank, **_):
        groups = _groups(beam_rank)
        tables = self.teacher.sid_logp([str(history[g[0]]).split() for g in groups], self.catalogue,
                                       [list(dict.fromkeys(_sid(completions[i]) for i in g)) for g in groups])
        out = [0.0] * len(completions)
        for group, table in zip(groups, tables):
            if any(history[i] != history[group[0]] for i in group):
                raise ValueError("cf reward: a group's completions carry different histories")
            logp = [table[_sid(completions[i])] for i in group]
            if self.scale == "logp":
                values = logp
            elif self.scale == "share":
                top = max(logp)
                weights = [math.exp(v - top) for v in logp]
                values = [w / sum(weights) for w in weights]
            else:  # ranked among the group's distinct SIDs: a SID sampled twice gets one value
                distinct = sorted({(v, _sid(completions[i])) for i, v in zip(group, logp)}, reverse=True)
                rank = {sid: r for r, (_, sid) in enumerate(distinct)}
                values = [1 / math.log2(rank[_sid(completions[i])] + 2) for i in group]
            for i, v in zip(group, values):
                out[i] = v
        return out


def parse_reward_spec(spec: str):
    """``"ranking"`` or ``"rule:1,prefix:0.5"`` -> [(name, weight), ...]."""
    parts = [p.strip() for p in str(spec).split(",") if p.strip()]
    out = []
    for part in parts:
        name, _, weight = (x.strip() for x in part.partition(":"))
        if name not in REWARD_TYPES:
            raise MinirecError(f"--reward_type: unknown reward {name!r}; choose from {', '.join(REWARD_TYPES)}")
        if name in dict(out):
            raise MinirecError(f"--reward_type: {name!r} is given twice; give each reward once with its weight")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise MinirecError(f"--reward_type: weight of {name!r} must be a number, got {weight!r}")
        out.append((name, value))
    if not out:
        raise MinirecError("--reward_type is empty; e.g. ranking or rule:1,prefix:0.5")
    if all(w == 0 for _, w in out):
        raise MinirecError(f"--reward_type {spec}: every weight is 0, so every advantage is 0 and nothing trains")
    if {"ranking", "ranking_only"} <= dict(out).keys():
        raise MinirecError("--reward_type: ranking already is rule + ranking_only; use one of them")
    return out


def build_rewards(spec, catalogue, num_generations, item_embeddings="", teacher=None, cf_scale="logp"):
    """-> (reward functions, weights) for ``GRPOTrainer``; ``teacher`` (a :class:`minirec.teacher.CFTeacher`)
    for the ``cf`` reward."""
    funcs, weights = [], []
    for name, weight in parse_reward_spec(spec):
        if name == "semantic":
            funcs.append(SemanticReward(catalogue, item_embeddings))
        elif name == "cf":
            if teacher is None:
                raise MinirecError("--reward_type cf needs --cf_model DIR (a python -m minirec.baselines sasrec dir)")
            funcs.append(CFReward(teacher, catalogue, cf_scale))
        elif name in ("ranking", "ranking_only"):
            funcs.append(RankingReward(num_generations, with_rule=name == "ranking"))
        else:
            funcs.append({"rule": rule_reward, "prefix": prefix_reward}[name])
        weights.append(weight)
    return funcs, weights
