"""Interoperability with other formats: diffusers model and pipeline folders as runs (`diffusers_load`), Stable
Diffusion single-file checkpoints (`single_file`), LoRA files (`lora`), runs as diffusers folders
(`diffusers_export`), ONNX export and a torch-free runner (`onnx_export`, `onnx_run`).

Nothing is imported here, so `import noisecraft` stays light: `noisecraft.load(folder)` imports
`noisecraft.interop.diffusers_load` (and diffusers) only when the folder is a diffusers one
(`noisecraft.pipelines.loading.LOADERS`).
"""
