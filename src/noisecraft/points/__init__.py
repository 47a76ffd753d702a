"""3-D point clouds (Point-E style): shapes sampled from primitive meshes (`shapes`), a permutation-equivariant
transformer denoiser (`transformer`), PLY and PNG output (`io`), Chamfer / EMD and MMD / COV / 1-NNA (`metrics`)
and the `points-shapes` preset (`presets`)."""
