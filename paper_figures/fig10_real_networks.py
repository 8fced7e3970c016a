"""Figure 10: real networks (``ufm.networks``) — MNIST head spectra and collapse over training.

Needs ``ufm.networks`` (branch ``net``); without it the figure is skipped with a message.
"""

from . import _common as C


def make(out_dir, quick: bool = False) -> C.FigureResult:
    try:
        import ufm.networks  # noqa: F401
    except ImportError as e:
        raise C.Skipped(f"`ufm.networks` is not available in this installation ({e}); the real-network figure "
                        "needs it (branch `net`).") from None
    raise C.Skipped("`ufm.networks` is present but this figure module has not been written against it yet.")
