"""`noisecraft samplers` (and `noisecraft sample --list-samplers`): every registered sampler with its
aliases (A1111 / k-diffusion / diffusers names) and its options."""

from __future__ import annotations


def add_parser(sub) -> None:
    sub.add_parser("samplers", help="list the samplers, their aliases and their options",
                   description="List every sampler with its aliases and the options `noisecraft sample "
                               "--option KEY=VALUE` takes.")


def listing() -> str:
    """The text `noisecraft samplers` prints."""
    from noisecraft import samplers

    lines = ["Samplers for `noisecraft sample --sampler NAME` (an alias works too, any case; a trailing "
             "' Karras', ' Exponential' or ' AYS' also sets the step schedule, e.g. 'DPM++ 2M Karras'). "
             "Options: --option KEY=VALUE."]
    for name in samplers.available():
        lines += ["", f"{name}: {samplers.DESCRIPTIONS[name]}"]
        aliases = [repr(a) if " " in a else a for a in samplers.aliases_of(name)]
        if aliases:
            lines.append(f"  aliases: {', '.join(aliases)}")
        specs = samplers.option_specs(name).values()
        lines += [f"  option {o.describe()}" for o in specs if o.type is not None] or ["  no options"]
    return "\n".join(lines)


def run(args) -> int:
    print(listing())
    return 0
