"""Video: data (`noisecraft.data.video`), networks (`noisecraft.models.video_unet`, `video_dit`, `causal_vae`),
the first-frame and inflation conditions (`noisecraft.conditions.first_frame`, `inflate`), and here the parts
above them: output writers (`io`), the frame count of a loaded run (`frames`), presets (`presets`), the causal
autoencoder's training (`autoencoder`) and the metrics (`metrics`). Nothing heavy is imported here.
"""
