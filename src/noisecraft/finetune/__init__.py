"""Fine-tuning a trained model on a few images of a new concept, and the adapters it writes.

- `noisecraft.finetune.lora`: LoRA (Hu et al. 2021) through peft on U-Net / DiT / diffusers models; adapter files
  in the diffusers/peft key layout; merge several with scales, unmerge exactly (`merge_lora`, `unmerge_lora`);
  attach one unmerged (`attach_lora`).
- `noisecraft.finetune.embeddings`: textual inversion (Gal et al. 2022): new token rows in a frozen text encoder;
  embedding files diffusers' `load_textual_inversion` and A1111 read (`apply_embedding`).
- `noisecraft.finetune.trainer`: the loop (`Finetuner`, `FinetuneConfig`) for lora, dreambooth (Ruiz et al.
  2023, with prior preservation) and textual-inversion, with the trainer's guarantees (atomic saves, exact
  resume, progress bar, sample grid).
- `noisecraft.finetune.data`: the concept image folder.

`noisecraft finetune` (cli/finetune_cmd.py) is the command; `noisecraft sample --lora A.safetensors[:scale]
--embedding E.safetensors` uses what it writes. peft is imported only where a LoRA is trained or attached.
"""
