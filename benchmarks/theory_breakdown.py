"""Where the theory breaks: its fit at every layer over attention sharpness x depth.

Usage: python benchmarks/theory_breakdown.py [--scales 0,1,2,4,8,16] [--batch 64] [--steps N]
       [--tasks previous_token,index_counting] [--threads 1] [--device auto] [--json FILE]

(a) Random init: a 4-layer causal NoPE model (d_model 128, 4 heads, LN, gelu MLP), 64 sequences
    of 32 distinct random tokens. Every block's attention scores are multiplied by each scale
    (``nopelens.analyzer.layer_theory_sharpness``: 0 = exactly uniform, 1 = as initialised).
(b) Trained: the recommended NoPE model of each task (``nopelens.training``), trained for
    ``--steps`` steps, read on the task's own test inputs, as trained (scale 1) and with its
    attention flattened to uniform (scale 0).

For every block, site (attn_out, resid_post) and prediction (first_layer, one_step, propagated) it
prints the mean relative attention entropy (1 = uniform) and Pearson r / RMSE of prediction vs
observation (off-diagonal entries of the batch means). Prints the machine and load first.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from _machine import machine_info, machine_lines


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="0,1,2,4,8,16")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None, help="default: each task's recipe")
    parser.add_argument("--tasks", default="previous_token,index_counting")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    parser.add_argument("--json", default=None)
    return parser.parse_args()


def _print(frame, label: str) -> None:
    wide = frame.pivot_table(
        index=["scale", "layer", "relative_entropy", "site"],
        columns="prediction",
        values=["pearson_r", "rmse"],
    )
    print(f"\n{label}: r / RMSE per prediction (relative entropy H: 1 = uniform attention)")
    names = list(dict.fromkeys(frame["prediction"]))
    print(f"{'scale':>5} {'layer':>5} {'H':>5} {'site':<10} " + " ".join(f"{n:>17}" for n in names))
    for (scale, layer, entropy, site), row in wide.iterrows():
        cells = " ".join(f"{row[('pearson_r', n)]:>8.3f}/{row[('rmse', n)]:<8.3f}" for n in names)
        print(f"{scale:>5g} {layer:>5} {entropy:>5.2f} {site:<10} {cells}")


def run(args: argparse.Namespace) -> dict:
    import torch

    from nopelens import build_model, random_tokens
    from nopelens.analyzer import layer_theory_sharpness
    from nopelens.training import build_task_model, default_config, get_task, train

    torch.set_num_threads(args.threads)
    device = (
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    scales = [float(s) for s in args.scales.split(",")]
    out = {}
    model = build_model(
        n_layers=4, d_model=128, n_heads=4, d_vocab=2048, n_ctx=32, seed=0, device=device
    )
    tokens = random_tokens(args.batch, 32, 2048, seed=1, distinct=True)
    study = layer_theory_sharpness(model, tokens, scales=scales)
    _print(study, "random init (L4 d128)")
    out["random_init"] = study.to_dict("records")
    for name in [t for t in args.tasks.split(",") if t]:
        task = get_task(name)
        model = build_task_model(task, seed=0, device=device)
        config = (
            default_config(task) if args.steps is None else default_config(task, steps=args.steps)
        )
        result = train(model, task, config, progress=False)
        accuracy = result.test_accuracy
        batch = task.sample(args.batch, split="test", generator=0).tokens
        study = layer_theory_sharpness(model, batch, scales=(0.0, 1.0))
        _print(study, f"trained {name} ({config.steps} steps, test accuracy {accuracy:.3f})")
        out[name] = {"accuracy": accuracy, "study": study.to_dict("records")}
    return out


def main() -> None:
    args = _args()
    info = machine_info()
    print("\n".join(machine_lines(info)))
    started = time.perf_counter()
    result = run(args)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\n{time.perf_counter() - started:.0f} s; load average after: {load}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": info, "args": vars(args), **result}, handle, indent=1)


if __name__ == "__main__":
    main()
