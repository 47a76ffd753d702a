"""Editing existing images with a trained model:

- `editing.inpaint`: inpainting and outpainting (training-free: the replacement method and RePaint, with every
  sampler; or a mask-conditioned run, `noisecraft.conditions.inpaint`);
- `editing.img2img`: image-to-image (SDEdit, probability-flow ODE inversion);
- `editing.upscale`: super-resolution with an SR3 run (`noisecraft.conditions.low_res`) and cascades.

Structure control is a condition (`noisecraft.conditions.control`) used through `noisecraft.pipelines.generate`.
"""
