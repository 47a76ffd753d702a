"""MkDocs hook: one API reference page per public package of noisecraft, generated at build time.

A package gets a page only if it exists under src/noisecraft when the site is built, so the nav never
names a module that is not there (the library is being restructured; `conditions` and `pipelines` appear
when they land). Each page is one `::: noisecraft.X` directive; mkdocstrings renders the package and its
public submodules from their docstrings.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

# (package, one line for the top of its page), in the order of the layers (docs/design.md).
PACKAGES = [
    ("core", "The exact core: the Denoiser (preconditioning), prediction types, VP/VE conversions, seeded noise."),
    ("schedules", "Training schedules (what the network sees) and step schedules (which sigmas a sampler visits)."),
    ("samplers", "Pure sampler functions `sample_x(denoiser, x, sigmas, ...)` and their registry."),
    ("guidance", "Denoiser wrappers: classifier-free guidance, autoguidance, classifier guidance."),
    ("models", "Networks `F(x, c_noise, cond)`: the MODELS registry, U-Net, DiT, MLP, the cond contract."),
    ("conditions", "Condition providers: which cond keys a condition produces, from a batch and from a request."),
    ("pipelines", "Generation: load a run, turn a request into images with their seeds and parameters."),
    ("build", "Network and denoiser construction from a run config."),
    ("training", "Run configs, the trainer, checkpoints, distributed training, post-hoc EMA."),
    ("eval", "Metrics (FD, KID, precision/recall, IS), feature extractors, adherence, memorisation."),
    ("data", "Datasets: MNIST, digits, folders, glyphs, scenes, emoji, 2-D toys."),
    ("text", "Text encoders and the caption cache."),
    ("autoencoder", "The latent-diffusion autoencoder: training, checkpoints, diffusers interop, latents."),
    ("editing", "Inpainting and outpainting, image-to-image (SDEdit, ODE inversion), style transfer."),
    ("search", "Similarity search with diffusion features and a faiss index."),
    ("interop", "Other formats: diffusers folders and SD single files in, LoRA files, diffusers and ONNX out."),
    ("distill", "Few-step students: consistency distillation and training, ECT, LCM, reflow, sCM."),
    ("finetune", "Fine-tuning on a few images: LoRA, DreamBooth, textual inversion, and their adapter files."),
    ("serve", "The generation server: A1111-compatible routes, the job API, the queue, batching, safeguards."),
    ("video", "Video: output writers, presets, the causal 3-D autoencoder's use, video metrics."),
    ("audio", "Audio: synthesised Bach chorales, mel spectrograms, Griffin-Lim, WAV output, audio metrics."),
    ("points", "3-D point clouds: primitive shapes, the permutation-equivariant denoiser, PLY output, metrics."),
    ("molecules", "Molecules: E(3)-equivariant diffusion, the RDKit-made dataset, stability and validity."),
]


def _src(config) -> Path:
    return Path(config.config_file_path).resolve().parent / "src" / "noisecraft"


def present(config) -> list[tuple[str, str]]:
    """The (package, blurb) pairs whose package or module exists under src/noisecraft now."""
    root = _src(config)
    return [(name, blurb) for name, blurb in PACKAGES
            if (root / name / "__init__.py").is_file() or (root / f"{name}.py").is_file()]


def page(name: str, blurb: str) -> str:
    return f"# noisecraft.{name}\n\n{blurb}\n\n::: noisecraft.{name}\n    options:\n      show_root_heading: false\n"


def on_config(config, **kwargs):
    api = [{f"noisecraft.{name}": f"api/{name}.md"} for name, _ in present(config)]
    nav = [entry for entry in (config.nav or []) if not (isinstance(entry, dict) and "API reference" in entry)]
    config.nav = nav + [{"API reference": [{"Overview": "api/index.md"}, *api]}]
    return config


def on_files(files, config, **kwargs):
    pkgs = present(config)
    lines = ["# API reference", "",
             "Generated from the docstrings by mkdocstrings, one page per public package that exists in this "
             "checkout (the list is computed when the site is built).", "",
             "| package | what it holds |", "|---|---|"]
    lines += [f"| [noisecraft.{name}]({name}.md) | {blurb} |" for name, blurb in pkgs]
    files.append(File.generated(config, "api/index.md", content="\n".join(lines) + "\n"))
    for name, blurb in pkgs:
        files.append(File.generated(config, f"api/{name}.md", content=page(name, blurb)))
    return files
