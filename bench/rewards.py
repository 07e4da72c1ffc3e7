"""Is the reward right? Gold answers paid, cheap tricks not, on every task of a mix; and what
SmolLM2-135M's own completions earn under each answer rule.

    python bench/rewards.py                    # the probes table for the default mix (~1 min)
    python bench/rewards.py --tasks chain_sum  # another mix
    python bench/rewards.py --plain 200        # correct plain answers on chain_sum level 0
    python bench/rewards.py --model            # + SmolLM2's completions (generated, cached)

Probes (genrl/probes.py), scored through the swarm's one door (genrl/scoring.py: answer
grammar, sandboxed verifier) under the default rule (binary reward, guarded fallback) and,
in a second table, under partial credit (the paper's code):
  * gold answers in tags, in words ("... The answer is X." or a block after "the answer is:")
    and as a bare last line: target 100% paid;
  * echoes, premise copies, lists of candidates, tag spam, the question's own examples: each
    contains the gold answer or is built from the question, target 0 paid.
propositional_logic has no gold answer string: its gold is a conclusion found by search that
the scorer pays (genrl/verifiers.py); the share of questions that have one is printed.
The last lines give the cost of scoring through the sandbox (ms per completion, warm pool).

``--model`` samples G=8 completions per question (temperature 0.7, 256 new tokens, the
worker's prompt) for the mix's tasks, caches them as JSONL, and scores them under ``tags``
(the paper's rule) and ``guarded`` (this project's default): mean reward, share correct,
share of groups with signal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from genrl.data import ReasoningGymSource, TaskSpec, parse_tasks  # noqa: E402
from genrl.tasks import DEFAULT_TASKS  # noqa: E402
from genrl.probes import (GOLD_FORMS, TRICKS, gold_forms, premises_of,  # noqa: E402
                          propositional_conclusion, tricks)
from genrl.rewards import RewardRule, _clean  # noqa: E402
from genrl.scoring import Scorer  # noqa: E402



def questions_of(task: TaskSpec, count: int, seed: int = 3):
    """``count`` training questions of one task, at level 0 (propositional_logic: level 2,
    as level 0's four questions have no conclusion beyond their premises)."""
    source = ReasoningGymSource([task], seed=seed, curriculum=True)
    level = 2 if task.name == "propositional_logic" else 0
    return source.draw("bench-rewards", 0, count, levels={task.name: level})


def probe_table(mix: str, per_task: int, rule: RewardRule) -> list[str]:
    scorer = Scorer(rule)
    finder = Scorer()
    head = (["task", "questions"] + [f"gold {f}" for f in GOLD_FORMS] + list(TRICKS))
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task in parse_tasks(mix):
        paid, seen, golds = Counter(), Counter(), 0
        questions = questions_of(task, per_task)
        for q in questions:
            gold = q.answer if q.answer is not None else propositional_conclusion(q, finder)
            if gold is None:
                continue
            gold, golds = _clean(gold), golds + 1
            for form, text in gold_forms(gold, task.name).items():
                seen[form] += 1
                paid[form] += scorer.score(q, [text])[0].reward >= 1.0
            premises = premises_of(q.text) if task.name == "propositional_logic" else ()
            for family, texts in tricks(q.text, gold, task.name, premises).items():
                for verdict in scorer.score(q, texts):
                    seen[family] += 1
                    paid[family] += verdict.reward > 0
        cells = [task.name, f"{golds}/{len(questions)}" if golds < len(questions) else str(golds)]
        cells += [f"{paid[k] / seen[k]:.0%} ({paid[k]}/{seen[k]})" if seen[k] else "-"
                  for k in [*GOLD_FORMS, *TRICKS]]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def plain_answers(count: int) -> str:
    """chain_sum level 0: correct answers written "The answer is N." -- how many are paid."""
    task = TaskSpec("chain_sum")
    scorer = Scorer()
    questions = questions_of(task, count, seed=11)
    paid = sum(scorer.score(q, [f"The answer is {q.answer}."])[0].correct for q in questions)
    return f"chain_sum level 0: {paid} of {len(questions)} correct plain answers paid"


def scoring_cost() -> str:
    task = TaskSpec("binary_matrix")
    scorer = Scorer()
    questions = questions_of(task, 16)
    scorer.score(questions[0], ["warm"])
    texts = lambda q: [f"<answer>{q.answer}</answer>"] * 4 + [f"<answer>{k} 0</answer>" for k in range(4)]
    t0 = time.perf_counter()
    for q in questions:
        scorer.score(q, texts(q))
    per = (time.perf_counter() - t0) / (8 * len(questions)) * 1e3
    return (f"scoring through the sandbox: {per:.2f} ms per completion ({len(questions)} groups of "
            f"8, 5 distinct answers each, warm pool)")


def model_table(mix: str, per_task: int, cache: str) -> list[str]:
    path = os.path.join(cache, f"rewards-{mix.replace(',', '+')}-{per_task}.jsonl")
    if not os.path.exists(path):
        from genrl.grpo import GRPOConfig, GRPOTrainer
        from genrl.models import DEFAULT_MODEL, build_prompt, load_policy
        policy = load_policy(DEFAULT_MODEL)
        trainer = GRPOTrainer(policy, GRPOConfig())
        with open(path + ".tmp", "w", encoding="utf-8") as out:
            for task in parse_tasks(mix):
                qs = questions_of(task, per_task)
                made = trainer.generate([build_prompt(policy.tokenizer, q.text) for q in qs], 8, seed=1)
                for q, comps in zip(qs, made):
                    out.write(json.dumps({"task": task.name, "source": q.source,
                                          "completions": [c.text for c in comps]}) + "\n")
                print(f"generated {task.name}", flush=True)
        os.replace(path + ".tmp", path)
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    source = ReasoningGymSource(parse_tasks(mix), seed=3, curriculum=True)
    out = ["| answer rule | mean reward | correct | groups with signal |", "|---|---|---|---|"]
    for name, rule in (("tags", RewardRule(fallback="none")), ("guarded", RewardRule())):
        scorer = Scorer(rule)
        rewards = [scorer.rewards(source.regenerate(r["source"]), r["completions"]) for r in rows]
        signal = sum(max(g) > min(g) for g in rewards)
        out.append(f"| {name} | {np.mean(rewards):.3f} | {np.mean([x >= 1 for g in rewards for x in g]):.3f} "
                   f"| {signal}/{len(rewards)} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help=f"TASKS mix (default: {DEFAULT_TASKS})")
    parser.add_argument("--questions", type=int, default=8, help="questions per task")
    parser.add_argument("--plain", type=int, default=200, help="chain_sum questions answered plainly")
    parser.add_argument("--model", action="store_true", help="also score SmolLM2's completions")
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/rl-swarm/bench"))
    args = parser.parse_args()
    t0 = time.perf_counter()
    print(f"probes, {args.questions} questions per task, default rule (binary, guarded):")
    print("\n".join(probe_table(args.tasks, args.questions, RewardRule())))
    print("\nthe same under partial credit (PARTIAL_CREDIT=true, the paper's code):")
    print("\n".join(probe_table(args.tasks, args.questions, RewardRule(partial_credit=True))))
    print()
    print(plain_answers(args.plain))
    print(scoring_cost())
    if args.model:
        os.makedirs(args.cache, exist_ok=True)
        print("\nSmolLM2-135M's completions:")
        print("\n".join(model_table(args.tasks, args.questions, args.cache)))
    print(f"\n({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
