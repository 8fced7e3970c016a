"""The model flags of ``ufm train`` / ``ufm verify``, generated from `ufm.UFMSpec`'s fields."""

from __future__ import annotations

import argparse
import dataclasses

from ._common import WIDTH, UsageError, add_precision_args, add_seed, check_memory

__all__ = ["add_spec_args", "spec_from_args", "spec_text", "check_spec_memory"]

#: Help text and short flag of each `UFMSpec` field; the flags themselves (name, type,
#: default, choices, one value or one per layer) are generated from the dataclass.
_SPEC_HELP = {
    "num_classes": ("-K", "K, number of classes"),
    "per_class": ("-n", "n, samples per class"),
    "depth": ("-L", "L, weight layers"),
    "width": ("-d", "d, one value or one per layer"),
    "activation": (None, "after W_1..W_{L-1} (docs/theory.md §1)"),
    "loss": (None, "the data term"),
    "lambda_H": (None, "λ_H, ridge on the free features"),
    "lambda_W": (None, "λ_W, one value or one per layer"),
    "relu_grad0": (
        None,
        "ReLU derivative at 0, a value in [0, 1] (docs/theory.md §6); 1 reproduces the linear spectra",
    ),
    "softplus_beta": (None, "sharpness β of softplus(βx)/β"),
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_spec_args(p: argparse.ArgumentParser) -> None:
    from ..spec import ACTIVATIONS, LOSSES, UFMSpec
    from ._common import finite_float

    choices = {"activation": ACTIVATIONS, "loss": LOSSES}
    g = p.add_argument_group("model (UFMSpec)")
    for f in dataclasses.fields(UFMSpec):
        short, text = _SPEC_HELP[f.name]
        kw = {"dest": f.name, "default": f.default, "help": f"{text} (default {f.default})"}
        if f.name in choices:
            kw["choices"] = choices[f.name]
        else:
            kw["type"] = finite_float if isinstance(f.default, float) else type(f.default)
        if "tuple" in str(f.type):  # one value for every layer, or one per layer
            kw.update(nargs="+", default=[f.default])
        g.add_argument(*([_flag(f.name)] + ([short] if short else [])), **kw)
    add_seed(p)
    p.add_argument("--json", metavar="PATH", help="write the result as JSON (its directory must exist)")
    add_precision_args(p, default=True)


def spec_from_args(args):
    from ..spec import UFMSpec

    one = lambda v: (v[0] if len(v) == 1 else tuple(v)) if isinstance(v, list) else v  # noqa: E731
    try:
        return UFMSpec(**{f.name: one(getattr(args, f.name)) for f in dataclasses.fields(UFMSpec)})
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None


def check_spec_memory(spec, extra_bytes: float = 0.0) -> None:
    """Refuse (before allocating) a spec whose training would not fit in memory: the parameters
    (H_1, W_1..W_L) about six times over (iterate, gradient, the line search's and the optimiser's
    state), every layer's features d_l × N four times (forward and backward), the K × N targets."""
    N = spec.num_samples
    nbytes = 8 * (6 * spec.num_params + 4 * sum(d * N for d in spec.widths) + 2 * spec.num_classes * N)
    check_memory(
        nbytes + extra_bytes,
        f"a deep UFM with {spec.num_params} parameters (N = {N} samples)",
        "lower --per-class, --num-classes or --width",
    )


def spec_text(spec, width: int = WIDTH) -> str:
    """``UFMSpec(...)`` wrapped between fields, never inside a value."""
    items = [f"{k}={v!r}" for k, v in spec.to_dict().items()]
    lines, line = [], "UFMSpec("
    for i, item in enumerate(items):
        item += ")" if i == len(items) - 1 else ","
        if len(line) + 1 + len(item) > width and line.strip() not in ("UFMSpec(", ""):
            lines.append(line)
            line = "    " + item
        else:
            line += ("" if line.endswith("(") else " ") + item
    return "\n".join(lines + [line])
