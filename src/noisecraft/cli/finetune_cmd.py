"""`noisecraft finetune`: teach a trained model a concept from a folder of images - a LoRA, DreamBooth (LoRA or
every weight, with prior preservation) or a textual-inversion embedding (noisecraft.finetune)."""

from __future__ import annotations

from noisecraft.cli.argtypes import positive_float, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune a run on a few images: LoRA, DreamBooth, textual inversion",
                       description="Writes --out (a LoRA or embedding .safetensors, or a run directory for "
                                   "--method dreambooth --full) and its working folder OUT.finetune/ (state for "
                                   "--resume, log, prior images, samples.png drawn while it trains).")
    p.add_argument("--base", required=True, help="the base: a run directory, checkpoint or diffusers folder")
    p.add_argument("--method", required=True, choices=("lora", "dreambooth", "textual-inversion"))
    p.add_argument("--images", required=True, help="folder of the concept's images (5-20, one size)")
    p.add_argument("--prompt", help="the images' prompt with the identifier, e.g. 'a sks glyph' (textual inversion: "
                                    "containing --token)")
    p.add_argument("--class-prompt", help="DreamBooth prior preservation: the class prompt, e.g. 'a glyph'; the base "
                                          "draws --class-images images of it")
    p.add_argument("--class-images", type=positive_int, default=32, help="prior images to draw (default 32)")
    p.add_argument("--prior-weight", type=float, default=1.0, help="lambda of the prior loss (default 1)")
    p.add_argument("--full", action="store_true", help="DreamBooth on every weight (--out is a run directory)")
    p.add_argument("--rank", type=positive_int, default=4, help="LoRA rank (default 4)")
    p.add_argument("--alpha", type=positive_float, help="LoRA alpha (default: the rank)")
    p.add_argument("--dropout", type=float, default=0.0, help="LoRA dropout (default 0)")
    p.add_argument("--targets", nargs="+", default=["attention"], metavar="T",
                   help="LoRA targets: groups attention, conv, feedforward, linear and/or layer names "
                        "(default attention)")
    p.add_argument("--token", default="<sks>", help="textual inversion: the new word (default <sks>)")
    p.add_argument("--init-word", default="glyph", help="textual inversion: the word it starts from (default glyph)")
    p.add_argument("--vectors", type=positive_int, default=1, help="textual inversion: vectors per token (default 1)")
    p.add_argument("--steps", type=positive_int, help="stop after this many steps")
    p.add_argument("--minutes", type=positive_float, help="stop after this much wall time")
    p.add_argument("--lr", type=positive_float, help="learning rate (default 1e-3 LoRA, 5e-3 textual inversion, "
                                                     "1e-4 full DreamBooth)")
    p.add_argument("--batch-size", type=positive_int, default=4, help="images per step (default 4)")
    p.add_argument("--grad-checkpointing", action="store_true",
                   help="recompute activations in backward: the same result with less memory, slower")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--checkpoint-every", type=positive_int, default=50, help="steps between saves (default 50)")
    p.add_argument("--sample-every", type=positive_int, default=100, help="steps between sample grids (default 100)")
    p.add_argument("--sample-steps", type=positive_int, help="sampler steps of the grids and prior images")
    p.add_argument("--out", required=True, help="the adapter .safetensors (a directory with --full)")
    p.add_argument("--resume", action="store_true", help="continue the fine-tune of --out exactly where it stopped")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")


def config_from_args(args):
    from noisecraft.errors import NoisecraftError
    from noisecraft.finetune.lora import LoRAConfig
    from noisecraft.finetune.trainer import FinetuneConfig

    if args.steps is None and args.minutes is None:
        raise NoisecraftError("give --steps N or --minutes M (how long to fine-tune)")
    return FinetuneConfig(
        method=args.method, base=args.base, images=args.images, prompt=args.prompt, class_prompt=args.class_prompt,
        prior_weight=args.prior_weight, class_images=args.class_images, full=args.full,
        lora=LoRAConfig(rank=args.rank, alpha=args.alpha, dropout=args.dropout, targets=tuple(args.targets)),
        token=args.token, init_word=args.init_word, vectors=args.vectors,
        steps=args.steps if args.steps is not None else 10**9, minutes=args.minutes, lr=args.lr,
        batch_size=args.batch_size, grad_checkpointing=args.grad_checkpointing, seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        sample_every=args.sample_every, sample_steps=args.sample_steps)


def run(args) -> int:
    from noisecraft.finetune.trainer import Finetuner, workdir

    result = Finetuner(config_from_args(args), args.out, resume=args.resume, device=args.device).run()
    loss = "n/a" if result["loss"] is None else f"{result['loss']:.4f}"
    print(f"fine-tuned to step {result['step']} (loss {loss}) -> {args.out}; samples in "
          f"{workdir(args.out) / 'samples.png'}")
    return 0
