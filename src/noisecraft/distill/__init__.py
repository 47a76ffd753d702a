"""Few-step generation: consistency distillation and training, easy consistency tuning, guided (LCM-style)
consistency distillation, rectified-flow reflow and continuous-time consistency distillation (sCM), from any
trained run (`noisecraft distill`).

- `objectives`: the losses as pure functions (discretisations, teacher ODE step, distances, each method's loss);
- `guided`: the guidance-scale input of an LCM student and the guided teacher;
- `trigflow`: continuous-time consistency distillation, sCD (Lu & Song 2024), in TrigFlow form (method scm);
- reflow's teacher ODE pairs are drawn and cached by `trainer` (`reflow_pairs`);
- `trainer`: `Distiller`, the training loop's pieces around those losses (checkpoints, exact resume,
  progress, evaluation, multi-process);
- the run config's `distill` section is `noisecraft.distill_config.DistillConfig` (below the run config, which
  holds it).

Students sample with `noisecraft.samplers` "consistency" (CM Alg. 1). Imports here stay light.
"""
