"""Few-step students against their teacher: FD (noisecraft's MNIST features) and classifier rates at 1, 2 and 4
network calls, for each student, for the teacher at its default sampler and steps, and for the teacher's best
deterministic ODE sampler at the same number of calls (the best FD over SOLVERS x STEP_SCHEDULES).

    python benchmarks/few_step.py --teacher runs/few_step/teacher --student cd=runs/few_step/cd \
        --student ect=runs/few_step/ect --num 1000 --json benchmarks/results/few_step_mnist.json
    python benchmarks/few_step.py --teacher runs/few_step/teacher-class --guidance 2 \
        --student lcm=runs/few_step/lcm --num 1000 --json benchmarks/results/few_step_mnist_class.json

Rates, from the same MNIST classifier whose penultimate layer gives the FD features: for a class-conditional run
the fraction of samples classified as the requested digit (digits 0..9 requested in turn); for an unconditional one
the fraction classified with probability >= 0.9 ("confident") and the total variation between the predicted digits'
histogram and the uniform one ("class TV"; a blurred mean image is confidently one digit). A classifier-free-guided
teacher step costs two network evaluations (batched into one call); an LCM student's step costs one. Every sample i
draws its noise from seed + i, so all rows see the same starting noise. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

SOLVERS = ("euler", "dpmpp_2m", "dpmpp_3m", "unipc", "deis", "expint")  # one network evaluation per step
STEP_SCHEDULES = ("karras", "exponential")
NFES = (1, 2, 4)


def score(images: torch.Tensor, class_ids) -> dict:
    """FD against the MNIST train split and the classifier rate (module docstring)."""
    from noisecraft.eval.evaluation import score as fd_score
    from noisecraft.eval.features import get_extractor
    from noisecraft.eval.reference import load_reference

    ext = get_extractor("mnist")
    feats, logits = ext.features_and_logits(images.nan_to_num(0.0).clamp(-1.0, 1.0))  # as saved pictures
    out = {"fd": fd_score(feats, load_reference("mnist", ext, split="train"), ("fd",))["fd"]}
    probs = torch.from_numpy(logits).softmax(1)
    if class_ids is not None:
        out["class_rate"] = float((probs.argmax(1) == torch.tensor(class_ids)).double().mean())
    else:
        out["confident_rate"] = float((probs.max(1).values >= 0.9).double().mean())
        hist = torch.bincount(probs.argmax(1), minlength=10).double() / len(probs)
        out["class_tv"] = float((hist - 0.1).abs().sum() / 2)  # predicted digits vs uniform (MNIST is ~uniform)
    return out


def row(run, label: str, sampler: str, steps: int, schedule: str | None, args, calls_per_step: float) -> dict:
    from noisecraft.pipelines import Request, generate

    class_ids = tuple(i % 10 for i in range(args.num)) if args.guidance is not None else None
    request = Request(class_ids=class_ids, guidance=args.guidance, sampler=sampler, steps=steps,
                      step_schedule=schedule, num=args.num, seed=args.seed, batch_size=250)
    t0 = time.monotonic()
    out = generate(run, request)
    seconds = time.monotonic() - t0
    nfe = (2 * steps - 1) * calls_per_step if sampler == "heun" else steps * calls_per_step
    return {"model": label, "sampler": sampler, "steps": steps, "step_schedule": out.parameters["step_schedule"],
            "nfe": nfe, **score(out.images, class_ids), "sample_seconds": round(seconds, 1)}


def best_ode_rows(teacher, args, cfg_calls: float) -> list[dict]:
    """The teacher's best deterministic sampler at each NFE (lowest FD); every candidate is kept in the JSON."""
    rows = []
    for nfe in NFES:
        candidates = [row(teacher, "teacher", s, nfe, k, args, cfg_calls) for s in SOLVERS for k in STEP_SCHEDULES]
        for c in candidates:
            c["candidate"] = True
        best = dict(min(candidates, key=lambda r: r["fd"]), candidate=False, model="teacher (best ODE)")
        rows += [*candidates, best]
    return rows


def main(argv=None) -> None:
    from noisecraft.pipelines import load

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", required=True, help="the teacher run directory")
    p.add_argument("--student", action="append", default=[], metavar="NAME=DIR", help="a student run (repeat)")
    p.add_argument("--guidance", type=float, help="a class-conditional run: the guidance scale w (teacher CFG, "
                                                  "an LCM student's input); digits 0..9 requested in turn")
    p.add_argument("--num", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write every row (candidates included) here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    teacher = load(args.teacher)
    cfg_calls = 1.0 if args.guidance in (None, 1.0) else 2.0
    s = teacher.config.sample
    rows = [row(teacher, "teacher (default)", s.sampler, s.steps, s.step_schedule, args, cfg_calls)]
    rows += best_ode_rows(teacher, args, cfg_calls)
    for spec in args.student:
        name, _, path = spec.partition("=")
        student = load(path)
        for steps in NFES:
            rows.append(row(student, name, "consistency", steps, "consistency", args, 1.0))
    print_table([r for r in rows if not r.get("candidate")])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"teacher": args.teacher, "students": args.student, "guidance": args.guidance,
                       "num": args.num, "rows": rows}, f, indent=1)


def print_table(rows: list[dict]) -> None:
    rates = ["class_rate"] if "class_rate" in rows[0] else ["confident_rate", "class_tv"]
    print(f"| model | sampler | steps | NFE | FD | {' | '.join(rates)} |\n|---|---|---|---|---|{'---|' * len(rates)}")
    for r in rows:
        cells = " | ".join(f"{100 * r[k]:.1f}%" for k in rates)
        print(f"| {r['model']} | {r['sampler']} ({r['step_schedule']}) | {r['steps']} | {r['nfe']:g} | "
              f"{r['fd']:.2f} | {cells} |")


if __name__ == "__main__":
    main()
