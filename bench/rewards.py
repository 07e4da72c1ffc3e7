"""What do SmolLM2-135M's completions earn, and which groups carry a real signal?

    python bench/rewards.py                 # generate (cached) then score: ~30 min the first time
    python bench/rewards.py --quick         # 2 questions per task: a few minutes
    python bench/rewards.py --partial       # score what a run still generating has so far

Samples G=8 completions per question at the default settings (temperature 0.7,
256 new tokens, the worker's prompt) for the paper's nine tasks and for the
chain_sum demo mix, caches them as JSONL, then scores the same completions
under each answer rule and reward rule:

* answer rules: ``tags`` (only <answer> tags, the paper's), ``last_line`` (the
  old fallback: any last line), ``guarded`` (the new fallback: an explicit
  "answer is X" or a bare last-line value, never one made of the question's own
  words; no answer scores 0 without asking the verifier, which the other two
  rules do);
* reward rules: ``graded`` (the verifier's score, partial credit included, the
  paper's) and ``binary`` (1 for a fully correct answer, else 0).

For each: mean reward, share of completions correct, share of groups with any
reward spread ("signal"), and of those how many have no correct answer at all
(signal from partial credit or echoes alone), and the largest GRPO advantage a
wrong answer received. The numbers chose the defaults (README, "Rewards").
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from genrl.data import PAPER_TASKS, ReasoningGymSource, TaskSpec, parse_tasks  # noqa: E402

MIXES = {"paper": ",".join(PAPER_TASKS),
         "demo": "chain_sum{min_terms=2;max_terms=2;min_digits=1;max_digits=2}"}
RULES = ("tags", "last_line", "guarded")


def generate(path: str, per_task: int, groups: int) -> None:
    from genrl.grpo import GRPOConfig, GRPOTrainer
    from genrl.models import DEFAULT_MODEL, build_prompt, load_policy
    policy = load_policy(DEFAULT_MODEL)
    trainer = GRPOTrainer(policy, GRPOConfig())
    done = Counter(json.loads(line)["mix"] for line in open(path + ".tmp", encoding="utf-8")) \
        if os.path.exists(path + ".tmp") else Counter()          # resume an interrupted run
    with open(path + ".tmp", "a", encoding="utf-8") as out:
        for mix, spec in MIXES.items():
            source = ReasoningGymSource(parse_tasks(spec), seed=7)
            count = per_task * len(source.tasks) if mix == "paper" else groups
            questions = []
            for task in source.tasks:   # the same number of questions from every task
                one = ReasoningGymSource([TaskSpec(task.name, 1.0, task.settings)], seed=7)
                questions += one.draw("bench-rewards", 0, count // len(source.tasks))
            for start in range(done[mix], len(questions), 8):
                batch = questions[start:start + 8]
                t0 = time.perf_counter()
                made = trainer.generate([build_prompt(policy.tokenizer, q.text) for q in batch], 8,
                                        seed=start)
                for q, comps in zip(batch, made):
                    out.write(json.dumps({"mix": mix, "source": q.source, "question": q.text,
                                          "completions": [c.text for c in comps],
                                          "ended": [c.ended for c in comps]}) + "\n")
                out.flush()
                print(f"{mix}: {start + len(batch)}/{len(questions)} questions "
                      f"({time.perf_counter() - t0:.0f}s)", flush=True)
    os.replace(path + ".tmp", path)


def old_last_line(text: str):
    """The fallback this project used before: tags, else the whole last line ("answer is X"
    trimmed to X), whatever it says -- kept here only to measure against."""
    import re
    pairs = re.findall(r"<answer>(.*?)</answer>", text, re.S | re.I)
    if pairs:
        return pairs[-1].strip() or None
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    said = re.findall(r"\banswer\s*(?:is|:|=)\s*(.+)$", lines[-1], re.I)
    answer = (said[-1] if said else lines[-1]).strip()
    if answer.endswith(".") and not answer.endswith(".."):
        answer = answer[:-1].strip()
    return answer or None


def answer_by(rule: str, text: str, question: str):
    from genrl.rewards import extract_answer
    if rule == "last_line":
        return old_last_line(text)
    return extract_answer(text, "none" if rule == "tags" else "guarded", question)


def score(path: str) -> None:
    from genrl.grpo import group_advantages
    from genrl.rewards import CORRECT, safe_score
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    sources = {mix: ReasoningGymSource(parse_tasks(spec), seed=7) for mix, spec in MIXES.items()}
    for mix in MIXES:
        mine = [r for r in rows if r["mix"] == mix]
        if not mine:
            continue
        print(f"\n{mix} mix: {len(mine)} questions x {len(mine[0]['completions'])} completions")
        print("| answer rule | reward rule | mean reward | correct | groups with signal | "
              "of which none correct | largest advantage of a wrong answer |")
        print("|---|---|---|---|---|---|---|")
        for rule in RULES:
            scores = []
            for r in mine:
                q = sources[mix].regenerate(r["source"])
                answers = [answer_by(rule, t, q.text) for t in r["completions"]]
                # the paper's and the old rule ask the verifier even about no answer at all
                scores.append([0.0 if a is None and rule == "guarded" else safe_score(q.verify, a)
                               for a in answers])
            for reward_rule in ("graded", "binary"):
                rewards = [[float(s >= CORRECT) if reward_rule == "binary" else s for s in g]
                           for g in scores]
                signal = [g for g in rewards if max(g) - min(g) > 1e-9]
                crumbs = [g for g, s in zip(rewards, scores)
                          if max(g) - min(g) > 1e-9 and max(s) < CORRECT]
                worst = max([a for g, s in zip(rewards, scores)
                             for a, x in zip(group_advantages(g), s) if x < CORRECT] or [0.0])
                print(f"| {rule} | {reward_rule} | {np.mean(rewards):.3f} | "
                      f"{np.mean([x >= CORRECT for g in scores for x in g]):.3f} | "
                      f"{len(signal)}/{len(rewards)} | {len(crumbs)} | {worst:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 questions per task, 8 demo groups")
    parser.add_argument("--partial", action="store_true", help="score what an unfinished run has")
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/rl-swarm/bench"),
                        help="folder for the generated completions (reused when present)")
    args = parser.parse_args()
    per_task, groups = (2, 8) if args.quick else (6, 48)
    os.makedirs(args.cache, exist_ok=True)
    path = os.path.join(args.cache, f"rewards-{per_task}x{groups}.jsonl")
    if args.partial:
        print(f"(partial: the completions generated so far, {path}.tmp)")
        score(path + ".tmp")
        return
    if not os.path.exists(path):
        generate(path, per_task, groups)
    score(path)


if __name__ == "__main__":
    main()
