"""SAPO's claim in miniature: sharing rollouts speeds learning.

Toy learners (a softmax over candidate answers per question) train with the
real GRPO loss (genrl.grpo) on groups chosen by the real SAPO selection
(genrl.sapo, RolloutGroups re-scored through a question source). Rewards are
sparse, so a node's own groups often carry no signal; with sharing it trains
on peer groups that do. At the same number of training groups per round,
I=2, J=2 reaches the target reward sooner than I=4, J=0.
"""

import numpy as np
import torch

from genrl.data import InvalidSource, Question
from genrl.grpo import clipped_pg_loss, group_advantages
from genrl.rollouts import RolloutGroup
from genrl.sapo import select_external
from genrl.scoring import Scorer

QUESTIONS, ANSWERS, G, NODES = 12, 32, 4, 6


class ToySource:
    def __init__(self, seed):
        self.answers = np.random.default_rng(seed).integers(0, ANSWERS, QUESTIONS)

    def question(self, k):
        truth = str(self.answers[k])
        return Question(text=f"q{k}", source={"kind": "toy", "index": int(k)}, answer=truth,
                        verify=lambda a, t=truth: float(a == t))

    def regenerate(self, source):
        if source.get("kind") != "toy" or not 0 <= source.get("index", -1) < QUESTIONS:
            raise InvalidSource("not a toy question")
        return self.question(source["index"])


SCORER = Scorer()


def reward(text, q):
    return SCORER.rewards(q, [text])[0]


def run_swarm(I, J, seed, rounds=120, target=0.5):
    """Rounds until the swarm's mean reward (moving average of 5) reaches target."""
    source = ToySource(seed)
    gen = torch.Generator().manual_seed(seed)
    logits = [torch.zeros(QUESTIONS, ANSWERS, requires_grad=True) for _ in range(NODES)]
    opts = [torch.optim.Adam([p], lr=0.1) for p in logits]
    history = []
    for r in range(rounds):
        published, rewards = [], []
        rngs = [np.random.default_rng([seed, n, r]) for n in range(NODES)]
        for n in range(NODES):
            ks = rngs[n].choice(QUESTIONS, I, replace=False)
            picks = torch.multinomial(torch.softmax(logits[n].detach()[ks], -1), G,
                                      replacement=True, generator=gen).tolist()
            local = []
            for k, answers in zip(ks, picks):
                q = source.question(k)
                texts = [str(a) for a in answers]
                local.append(RolloutGroup(node_id=f"n{n}", round=r, model="toy", question=q.text,
                                          source=q.source, completions=texts,
                                          rewards=[reward(t, q) for t in texts]))
            published.append(local)
            rewards += [x for g in local for x in g.rewards]
        history.append(float(np.mean(rewards)))
        for n in range(NODES):
            peers = [g for m, groups in enumerate(published) if m != n for g in groups]
            pick = select_external(peers, J, source, SCORER, rngs[n], exclude_node=f"n{n}")
            batch = [(g.source["index"], g.completions, g.rewards) for g in published[n]]
            batch += [(g.question.source["index"], g.completions, g.rewards) for g in pick.groups]
            rows = torch.tensor([k for k, texts, _ in batch for _ in texts])
            cols = torch.tensor([int(t) for _, texts, _ in batch for t in texts])
            adv = torch.tensor([a for _, _, rs in batch for a in group_advantages(rs)]).float()
            logp = torch.log_softmax(logits[n], -1)[rows, cols]
            loss, _ = clipped_pg_loss(logp, logp.detach(), adv, 0.2, 0.28)
            opts[n].zero_grad()
            loss.mean().backward()                      # token-level: one token per completion
            opts[n].step()
        if len(history) >= 5 and np.mean(history[-5:]) >= target:
            return r + 1
    return rounds


def test_sharing_reaches_the_target_reward_sooner_at_equal_batch_size():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                       # tiny tensors: threads only add overhead
    seeds = range(4)
    alone = [run_swarm(I=4, J=0, seed=s) for s in seeds]
    shared = [run_swarm(I=2, J=2, seed=s) for s in seeds]
    torch.set_num_threads(threads)
    print(f"rounds to target: I=4,J=0 {alone} ; I=2,J=2 {shared}")
    assert np.mean(shared) < 0.9 * np.mean(alone)
    assert all(s < a for s, a in zip(shared, alone))
