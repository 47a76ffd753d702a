"""Editing existing images with a trained model, training-free:

- `editing.inpaint`: inpainting and outpainting (the replacement method and RePaint), with every sampler;
- `editing.img2img`: image-to-image (SDEdit, probability-flow ODE inversion).
"""
