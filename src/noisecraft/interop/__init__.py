"""Interoperability with other formats: diffusers model and pipeline folders as runs (`diffusers_load`), runs
as diffusers folders (`diffusers_export`), ONNX export (`onnx_export`).

Nothing is imported here, so `import noisecraft` stays light: `noisecraft.load(folder)` imports
`noisecraft.interop.diffusers_load` (and diffusers) only when the folder is a diffusers one
(`noisecraft.pipelines.run.LOADERS`).
"""
