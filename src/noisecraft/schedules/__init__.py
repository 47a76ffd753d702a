"""Training noise schedules and sampling step schedules."""

from noisecraft.schedules.steps import STEP_SCHEDULES, discrete_timesteps, get_sigmas, karras_sigmas
from noisecraft.schedules.training import (
    BETA_SCHEDULES,
    SCHEDULES,
    DiscreteSchedule,
    EDMSchedule,
    FlowSchedule,
    Schedule,
    VESchedule,
    VPSchedule,
    build_schedule,
    make_betas,
)

__all__ = [
    "BETA_SCHEDULES", "SCHEDULES", "STEP_SCHEDULES", "DiscreteSchedule", "EDMSchedule", "FlowSchedule",
    "Schedule", "VESchedule", "VPSchedule", "build_schedule", "discrete_timesteps", "get_sigmas",
    "karras_sigmas", "make_betas",
]
