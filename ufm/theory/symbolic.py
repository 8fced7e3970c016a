"""Symbolic derivations of the DNC results with sympy (``docs/theory.md`` §3–§5).

Nothing here is transcribed: each function starts from the balanced collapsed ansatz,
writes the loss in its few scalar unknowns, imposes stationarity with ``sympy.diff`` and
solves/simplifies. Conventions are ``docs/theory.md`` §1 (loss ``(1/2N)‖Z−Y‖² + Σ(λ_l/2)‖W_l‖² +
(λ_H/2)‖H_1‖²``, CE mean over N). Symbols (module attributes): ``K, n, L`` (classes, per
class, depth), ``lam`` (λ_l of one layer), ``lam_H``, ``Lam`` (``Π_l λ_l``), ``gamma``,
``alpha``, ``p``, ``sigma`` (σ_l), ``s`` (feature scale), ``b``.

The ansatz: every W_l has K equal singular values σ_l (CE: K−1) between orthonormal
frames, ``M_1ᵀM_1 = s² I`` (CE: ``s² S``); then ``‖W_l‖² = Kσ_l²``, ``‖H_1‖² = Kn s²`` and
the output scale is ``γ = s Π_l σ_l`` (CE: ``α``). Since ``σ_l ∂γ/∂σ_l = γ``, the derivative
in one σ_l is taken with the other factors frozen in a symbol ``P`` (``γ = s P σ_l``).
"""

from __future__ import annotations

import functools

import sympy as sp

__all__ = [
    "ce_critical_point",
    "ce_layer_hessian_levels",
    "ce_scale_equation",
    "full_hessian_matrices",
    "latex_report",
    "mse_existence_bound",
    "mse_feature_hessian_outlier",
    "mse_gradient_moment",
    "mse_layer_outlier",
    "mse_optimal_loss",
    "mse_scale_equation",
    "mse_singular_values",
    "mse_threshold",
    "text_report",
]

K, n, L = sp.symbols("K n L", positive=True, integer=True)
lam, lam_H, Lam = sp.symbols("lambda_l lambda_H Lambda", positive=True)
gamma, alpha, p, sigma, s, b = sp.symbols("gamma alpha p sigma_l s b", positive=True)
_P = sp.Symbol("P", positive=True)  # the frozen product of the other factors
mu_in, mu_out = sp.symbols("m_l m_{l+1}", positive=True)  # class-mean norms ‖μ^{(l)}‖, ‖μ^{(l+1)}‖


def _stationary_square(data, var, reg_coeff, scale_sym):
    """Solve ``d/dvar [data(scale) + reg_coeff var²/2] = 0`` for ``var²`` with ``scale = s P var``."""
    x = sp.Symbol("x", positive=True)
    expr = data.subs(scale_sym, x * _P * var) + reg_coeff * var**2 / 2
    eq = sp.expand(sp.diff(expr, var) * var).subs(x * _P * var, scale_sym).subs(_P, scale_sym / (x * var))
    squares = {sp.simplify(r**2) for r in sp.solve(sp.Eq(eq, 0), var)}
    if len(squares) != 1:
        raise RuntimeError(f"expected one stationary value of {var}², got {squares}")
    return squares.pop()


def _neat(derived: sp.Expr, neat: sp.Expr) -> sp.Expr:
    """Return ``neat``, the readable form, after checking that it equals ``derived``."""
    if sp.simplify(sp.powsimp(sp.expand_power_base(derived - neat, force=True), force=True)) != 0:
        if sp.simplify(derived / neat) != 1:
            raise RuntimeError(f"derivation mismatch: {derived} != {neat}")
    return neat


# ---- MSE (docs/theory.md §3) -----------------------------------------------------------------------------
_MSE_DATA = (1 - gamma) ** 2 / 2  # (1/2N)‖γY − Y‖² = (1−γ)²/2: Y has N unit entries


@functools.cache
def mse_singular_values() -> tuple[sp.Expr, sp.Expr]:
    """``(σ_l², s²)`` at a stationary point: ``γ(1−γ)/(Kλ_l)`` and ``γ(1−γ)/(Knλ_H)``."""
    sig2 = _stationary_square(_MSE_DATA, sigma, K * lam, gamma)
    s2 = _stationary_square(_MSE_DATA, s, K * n * lam_H, gamma)
    return _neat(sig2, gamma * (1 - gamma) / (K * lam)), _neat(s2, gamma * (1 - gamma) / (K * n * lam_H))


@functools.cache
def mse_scale_equation() -> sp.Eq:
    """``γ^{L−1}(1−γ)^{L+1} = b`` with ``b = K^{L+1} n λ_H Π λ_l``, from ``γ² = s² Π σ_l²``."""
    sig2, s2 = mse_singular_values()
    # Π_l σ_l² = Π_l γ(1−γ)/(Kλ_l) = (γ(1−γ)/K)^L / Λ
    prod_sig2 = (sig2 * lam) ** L / Lam
    lam_of_gamma = sp.solve(sp.Eq(gamma**2, s2 * prod_sig2), Lam)[0]
    b_expr = sp.powsimp(sp.simplify(K ** (L + 1) * n * lam_H * lam_of_gamma), force=True)
    return sp.Eq(_neat(b_expr, gamma ** (L - 1) * (1 - gamma) ** (L + 1)), b)


@functools.cache
def mse_optimal_loss() -> sp.Expr:
    """The loss at the collapsed stationary point: ``(1−γ)(1+Lγ)/2``."""
    sig2, s2 = mse_singular_values()
    total = _MSE_DATA + L * (K * lam * sig2) / 2 + K * n * lam_H * s2 / 2  # each ridge term equals γ(1−γ)/2
    return _neat(sp.simplify(total), (1 - gamma) * (1 + L * gamma) / 2)


@functools.cache
def mse_threshold() -> sp.Expr:
    """``b`` below which the collapsed point beats zero (loss 1/2): ``(L−1)^{L−1}/L^{2L}``.

    The loss ``(1−γ)(1+Lγ)/2 < 1/2`` iff ``γ > (L−1)/L``; ``b(γ)`` is decreasing there.
    """
    roots = sp.solve(sp.Eq(mse_optimal_loss(), sp.Rational(1, 2)), gamma)
    g0 = [r for r in roots if r != 0][0]
    return sp.simplify(sp.powsimp(mse_scale_equation().lhs.subs(gamma, g0), force=True))


@functools.cache
def mse_existence_bound() -> tuple[sp.Expr, sp.Expr]:
    """``(γ*, max b)``: a collapsed stationary point exists iff ``b <= max_γ γ^{L−1}(1−γ)^{L+1}``."""
    f = mse_scale_equation().lhs
    gstar = [r for r in sp.solve(sp.diff(sp.log(f), gamma), gamma) if r != 1][0]
    return sp.simplify(gstar), sp.simplify(f.subs(gamma, gstar))


@functools.cache
def mse_layer_outlier() -> tuple[sp.Expr, sp.Expr]:
    """Layer-wise data-Hessian outlier: ``(γ² m_l²/(K m_{l+1}²), λ_lγ/(1−γ))``.

    ``A^{(l+1)ᵀ}A^{(l+1)} ⊗ MMᵀ/K`` with rows ``a_c`` of ``A^{(l+1)}`` mapping ``μ_c^{(l+1)}`` to
    ``γ e_c``: ``‖a_c‖ = γ/m_{l+1}``, eigenvalue ``‖a_c‖² m_l²/K`` (in class-mean norms);
    with ``m_{l+1} = σ_l m_l`` it is ``γ²/(Kσ_l²)`` = the key identity ``λ_lγ/(1−γ)``.
    """
    norms = (gamma / mu_out) ** 2 * mu_in**2 / K
    sig2, _ = mse_singular_values()
    return norms, _neat(sp.simplify(norms.subs(mu_out, sp.sqrt(sig2) * mu_in)), lam * gamma / (1 - gamma))


@functools.cache
def mse_feature_hessian_outlier() -> sp.Expr:
    """``H_1`` block ``(1/N)A^{(1)ᵀ}A^{(1)} ⊗ I_N``: value ``γ²/(K n s²) = λ_Hγ/(1−γ)``."""
    _, s2 = mse_singular_values()
    # A^{(1)} = Π σ_l · (frame): ‖a_c‖² = γ²/s²; the block's eigenvalue is ‖a_c‖²/N = γ²/(K n s²)
    return _neat(sp.simplify(gamma**2 / (K * n * s2)), lam_H * gamma / (1 - gamma))


@functools.cache
def mse_gradient_moment() -> sp.Expr:
    """Per-sample data-gradient second moment (rank K): ``(1−γ)²·‖a_c‖²m_l²/K = γ(1−γ)λ_l``."""
    return sp.simplify((1 - gamma) ** 2 * mse_layer_outlier()[1])


def full_hessian_matrices(depth: int, include_H: bool = False) -> tuple[sp.Matrix, sp.Matrix]:
    """``(S, T)``: the L×L blocks of the full data Hessian on symmetric / antisymmetric frame modes.

    Frame coordinates ``X^l`` (K×K) per layer: the Gauss–Newton form is
    ``‖Σ_l (γ/(σ_l√K)) X^l‖²`` and the residual ``(2/N)⟨Z−Y, A Δ_m P Δ_l H_l⟩`` gives
    ``−2(1−γ)γ/(Kσ_lσ_m) tr(X^m X^l)``; on ``X^l = v_l E`` with ``Eᵀ = ±E`` this is the
    quadratic form of S (+) or T (−). With ``include_H`` layer 0 is H_1 (λ_0 = λ_H).
    """
    names = (["lambda_H"] if include_H else []) + [f"lambda_{l}" for l in range(1, depth + 1)]
    lams = sp.symbols(" ".join(names), positive=True)
    lams = lams if isinstance(lams, tuple) else (lams,)
    sig2, _ = mse_singular_values()
    sigs = [sp.sqrt(sig2.subs(lam, x)) for x in lams]
    m = len(lams)
    gn = sp.Matrix(m, m, lambda i, j: gamma**2 / (K * sigs[i] * sigs[j]))
    res = sp.Matrix(m, m, lambda i, j: 0 if i == j else -(1 - gamma) * gamma / (K * sigs[i] * sigs[j]))
    r = sp.Matrix(m, m, lambda i, j: sp.sqrt(lams[i]) * sp.sqrt(lams[j]) / (1 - gamma))
    D = sp.diag(*lams)
    S = (gn + res).applyfunc(sp.simplify)
    T = (gn - res).applyfunc(sp.simplify)
    S_neat, T_neat = (2 * gamma - 1) * r + D, r - D  # docs/theory.md §4's form
    if (S - S_neat).applyfunc(sp.simplify) != sp.zeros(m, m) or (T - T_neat).applyfunc(sp.simplify) != sp.zeros(m, m):
        raise RuntimeError("derivation mismatch in the full-Hessian blocks")
    return S_neat, T_neat


# ---- cross-entropy (docs/theory.md §5) -----------------------------------------------------------------
_CE_DATA = sp.log(1 + (K - 1) * sp.exp(-alpha))  # −log softmax(α(e_c − 1/K))_c


@functools.cache
def ce_critical_point() -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    """``(p(α), σ_l², s²)`` with σ_l², s² in terms of the symbol p.

    ``p = e^α/(e^α+K−1)``, ``σ_l² = (1−p)α/((K−1)λ_l)``, ``λ_H n s² = (1−p)α/(K−1)``.

    Ridge terms: ``‖W_l‖² = (K−1)σ_l²`` and ``‖H_1‖² = n(K−1)s²`` (ETF frames of rank K−1).
    """
    sig2 = _stationary_square(_CE_DATA, sigma, (K - 1) * lam, alpha)
    s2 = _stationary_square(_CE_DATA, s, (K - 1) * n * lam_H, alpha)
    pe = sp.exp(alpha) / (sp.exp(alpha) + K - 1)
    to_p = lambda e: sp.simplify(e.subs(sp.exp(alpha), (K - 1) * p / (1 - p)))  # noqa: E731
    sig2 = _neat(to_p(sig2), (1 - p) * alpha / ((K - 1) * lam))
    s2 = _neat(to_p(s2), (1 - p) * alpha / ((K - 1) * n * lam_H))
    return pe, sig2, s2


@functools.cache
def ce_scale_equation() -> sp.Eq:
    """``α^{L−1}/(e^α+K−1)^{L+1} = n λ_H Π λ_l`` from ``α² = s² Π σ_l²``."""
    pe, sig2, s2 = ce_critical_point()
    sig2, s2 = sig2.subs(p, pe), s2.subs(p, pe)
    prod_sig2 = (sig2 * lam) ** L / Lam
    lam_of_alpha = sp.solve(sp.Eq(alpha**2, s2 * prod_sig2), Lam)[0]
    lhs = sp.powsimp(sp.simplify(n * lam_H * lam_of_alpha), force=True)
    return sp.Eq(_neat(lhs, alpha ** (L - 1) / (sp.exp(alpha) + K - 1) ** (L + 1)), b)


@functools.cache
def ce_layer_hessian_levels() -> tuple[tuple[sp.Expr, sp.Expr], ...]:
    """The three eigenvalue levels ``(value, multiplicity)`` of the CE layer-wise data Hessian.

    In frame coordinates ``X`` (K×K, ``X1 = 0``, ``1ᵀX = 0``) the block is
    ``(α²/(Kσ_l²)) T`` with ``T(X) = Σ_c ρ_c X s_c s_cᵀ``; writing ``p_c = q1 + (p−q)e_c``,
    ``q = (1−p)/(K−1)``, one gets ``T(X) = q X + (p−q) q K · S diag(X) S``, and
    ``diag(S D S) = (1 − 2/K) D + tr(D)/K² I``. Hence: ``X = S`` (×1),
    ``X = S D S`` with ``tr D = 0`` (×(K−1)), zero-diagonal X (×(K²−3K+1)). Valid for K >= 3;
    for K = 2 the block has rank (K−1)² = 1 and only the first level (``S D S = 0`` for
    traceless D when K = 2).
    """
    q = (1 - p) / (K - 1)
    t_S = q + (p - q) * q * K * (1 - 1 / K)  # diag(S) = (1 − 1/K) I
    t_D = q + (p - q) * q * K * (1 - 2 / K)
    t_0 = q
    _, sig2, _ = ce_critical_point()  # in terms of p
    scale = alpha**2 / (K * sig2)  # (1/K)‖A^{(l+1)}μ‖² factor: α²/σ_l² over K
    return tuple(
        (sp.factor(sp.simplify(scale * t)), mult) for t, mult in ((t_S, 1), (t_D, K - 1), (t_0, K**2 - 3 * K + 1))
    )


# ---- report ------------------------------------------------------------------------------------
def _report_rows() -> list[list[tuple[str, str, tuple]]]:
    """The derived results, one row per line: ``[(text prefix, LaTeX prefix, expressions)]``.

    A row's items are joined by ``", "`` (LaTeX ``,\\quad``); an item is its prefix followed by
    its expressions joined by ``" = "``. `latex_report` and `text_report` render the same rows.
    """
    sig2, s2 = mse_singular_values()
    gstar, bmax = mse_existence_bound()
    outl_norm, outl_lam = mse_layer_outlier()
    pe, csig2, cs2 = ce_critical_point()
    S2, T2 = full_hessian_matrices(2)
    rows = [
        [
            ("MSE scale: ", r"\text{MSE scale: } ", (mse_scale_equation().lhs, b, K ** (L + 1) * n * lam_H * Lam)),
            ("Z* = ", r"Z^\star = ", (gamma * sp.Symbol("Y", commutative=False),)),
        ],
        [("sigma_l**2 = ", r"\sigma_l^2 = ", (sig2,)), ("s**2 = ", "s^2 = ", (s2,))],
        [
            ("L* = ", r"\mathcal{L}^\star = ", (mse_optimal_loss(),)),
            ("collapse to zero iff b >= ", r"\text{collapse to zero iff } b \ge ", (mse_threshold(),)),
        ],
        [
            ("stationary point exists iff b <= ", r"\text{stationary point exists iff } b \le ", (bmax,)),
            ("at gamma* = ", r"\text{at } \gamma^\ast = ", (gstar,)),
        ],
        [("layer outlier (x K**2) = ", r"\text{layer outlier } (\times K^2) = ", (outl_norm, outl_lam))],
        [
            ("feature block (x K*N) = ", r"\text{feature block } (\times KN) = ", (mse_feature_hessian_outlier(),)),
            (
                "gradient second moment (x K) = ",
                r"\text{gradient second moment } (\times K) = ",
                (mse_gradient_moment(),),
            ),
        ],
        [("L=2: S = ", r"L=2:\ S = ", (S2,)), ("T = ", "T = ", (T2,))],
        [("CE scale: ", r"\text{CE scale: } ", (ce_scale_equation().lhs, b, n * lam_H * Lam)), ("p = ", "p = ", (pe,))],
        [("sigma_l**2 = ", r"\sigma_l^2 = ", (csig2,)), ("s**2 = ", "s^2 = ", (cs2,))],
    ]
    for val, mult in ce_layer_hessian_levels():
        rows.append(
            [
                ("CE layer level: ", r"\text{CE layer level: } ", (val,)),
                ("multiplicity ", r"\text{multiplicity } ", (mult,)),
            ]
        )
    return rows


_HEADER = "ufm.theory.symbolic — derived with sympy from the balanced collapsed ansatz (docs/theory.md §3–§5)"


def latex_report() -> str:
    """Every derived result as a LaTeX ``align*`` block, ready for a paper."""
    lines = [f"% {_HEADER}", r"\begin{align*}"]
    lines += [
        "&" + r",\quad ".join(pre + " = ".join(sp.latex(e) for e in exprs) for _, pre, exprs in row) + r" \\"
        for row in _report_rows()
    ]
    lines[-1] = lines[-1].rstrip(" \\")
    return "\n".join(lines + [r"\end{align*}"])


def text_report() -> str:
    """Every derived result as plain text (sympy's ``str`` form), one result per line."""
    text = lambda e: sp.sstr(e.tolist() if isinstance(e, sp.MatrixBase) else e)  # noqa: E731 (a matrix on one line)
    rows = [", ".join(pre + " = ".join(text(e) for e in exprs) for pre, _, exprs in row) for row in _report_rows()]
    legend = (
        "symbols: K classes, n per class, L depth, lambda_l / lambda_H ridge of layer l / of H_1, "
        "Lambda = prod_l lambda_l, gamma (MSE) / alpha (CE) output scale"
    )
    return "\n".join([_HEADER, legend, ""] + rows)
