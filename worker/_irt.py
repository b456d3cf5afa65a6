"""The 1PL (Rasch) item response model: item difficulties from a crowd's answers, and one
model's ability from its answers on items of known difficulty (PUDF's IRT-AC and DDS-MAE).

P(subject j answers item i correctly) = σ(θ_j − b_i).

* :func:`fit_1pl`: joint MAP estimate of every θ_j and b_i from a subjects × items response
  matrix (1 correct, 0 wrong, NaN unanswered), with N(0, 1) on the abilities (as py-irt's
  "vague" priors) and N(0, ``prior_scale``²) on the difficulties. py-irt puts a scale of 10³
  there, so an item every subject answers correctly drifts towards −∞; the default 3 keeps such
  items finite and still the easiest. Numpy and L-BFGS (scipy), no torch.
* :func:`fit_1pl_pyirt`: the same model fitted by py-irt (variational inference with pyro), for
  the check against it. py-irt 0.7.1 pins typer<0.15, rich<14 and pandas<3, so ``pip install
  py-irt`` downgrades three packages of this environment (it pulls no other torch); install it
  with ``pip install pyro-ppl==1.9.2 && pip install --no-deps py-irt toml ordered-set`` to use
  it (``make setup`` does, so the suite runs the check). It is optional: the worker's
  difficulties come from :func:`fit_1pl`.
* :func:`estimate_ability`: DDS-MAE's per-epoch MAP ability, N(0, 1) prior, Nelder–Mead from
  θ = 0.1 as the reference code.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize

__all__ = ["estimate_ability", "fit_1pl", "fit_1pl_pyirt"]


def fit_1pl(
    responses: np.ndarray, *, prior_scale: float = 3.0, max_iter: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """Joint MAP fit of the 1PL model.

    Args:
        responses: Subjects × items; 1 correct, 0 wrong, NaN not answered.
        prior_scale: Standard deviation of the difficulties' normal prior.
        max_iter: L-BFGS iterations at most.

    Returns:
        The abilities (one per subject) and the difficulties (one per item).

    Raises:
        ValueError: Not a 2-d matrix, values other than 0, 1 and NaN, or no answer at all.
    """
    r = np.asarray(responses, dtype=np.float64)
    if r.ndim != 2 or r.size == 0:
        raise ValueError(f"responses must be a non-empty subjects x items matrix, got {r.shape}")
    answered = ~np.isnan(r)
    if not answered.any():
        raise ValueError("responses hold no answer")
    if not np.isin(r[answered], (0.0, 1.0)).all():
        raise ValueError("responses must be 0 (wrong), 1 (correct) or NaN (not answered)")
    if prior_scale <= 0:
        raise ValueError(f"prior_scale must be > 0, got {prior_scale}")
    y = np.where(answered, r, 0.0)
    mask = answered.astype(np.float64)
    n_subjects, n_items = r.shape
    precision_b = 1.0 / prior_scale**2

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        theta, b = x[:n_subjects], x[n_subjects:]
        z = theta[:, None] - b[None, :]
        # -log-likelihood of Bernoulli(logits z): log(1 + e^z) - y z, stably
        nll = float(np.sum(mask * (np.logaddexp(0.0, z) - y * z)))
        residual = mask * (_sigmoid(z) - y)  # d nll / d z
        value = nll + 0.5 * float(theta @ theta) + 0.5 * precision_b * float(b @ b)
        grad = np.concatenate([residual.sum(1) + theta, -residual.sum(0) + precision_b * b])
        return value, grad

    result = optimize.minimize(
        objective,
        np.zeros(n_subjects + n_items),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter},
    )
    return result.x[:n_subjects].copy(), result.x[n_subjects:].copy()


def estimate_ability(difficulties: np.ndarray, correct: np.ndarray) -> float:
    """DDS-MAE's MAP ability of one model from its answers on items of known difficulty.

    Maximises log N(θ; 0, 1) + Σ_i log σ(±(θ − b_i)) (+ for a correct answer): the reference's
    Σ log(1 + (2σ(θ − b_i) − 1) r_i) is this plus a constant. Nelder–Mead from θ = 0.1.

    Args:
        difficulties: b_i of the items answered.
        correct: Whether each answer was correct.

    Raises:
        ValueError: The arrays differ in length or are empty.
    """
    b = np.asarray(difficulties, dtype=np.float64)
    sign = np.where(np.asarray(correct, dtype=bool), 1.0, -1.0)
    if b.shape != sign.shape or b.size == 0:
        raise ValueError(f"need one answer per difficulty, got {b.shape} and {sign.shape}")

    def negative_posterior(x: np.ndarray) -> float:
        theta = float(x[0])
        return 0.5 * theta**2 + float(np.sum(np.logaddexp(0.0, -sign * (theta - b))))

    result = optimize.minimize(
        negative_posterior, np.array([0.1]), method="Nelder-Mead", options={"xatol": 1e-4}
    )
    return float(result.x[0])


def fit_1pl_pyirt(
    responses: np.ndarray, *, epochs: int = 2000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The 1PL model fitted by py-irt (``IrtModelTrainer``, "vague" priors, SVI on the CPU).

    Args:
        responses: Subjects × items; 1 correct, 0 wrong, NaN not answered.
        epochs: SVI steps.
        seed: pyro's seed.

    Returns:
        The abilities and the difficulties, in the order of ``responses``' rows and columns.

    Raises:
        ImportError: py-irt is not installed (see the module docstring).
    """
    import pandas as pd
    import pyro
    from py_irt.config import IrtConfig
    from py_irt.dataset import Dataset
    from py_irt.training import IrtModelTrainer

    r = np.asarray(responses, dtype=np.float64)
    items = [f"i{i}" for i in range(r.shape[1])]
    frame = pd.DataFrame(r, columns=items)
    frame.insert(0, "subject", [f"s{j}" for j in range(r.shape[0])])
    dataset = Dataset.from_pandas(frame, subject_column="subject", item_columns=items)
    pyro.set_rng_seed(seed)
    trainer = IrtModelTrainer(
        data_path="unused",  # a required keyword even when a dataset is given
        config=IrtConfig(model_type="1pl", epochs=epochs, log_every=epochs + 1),
        dataset=dataset,
        verbose=False,
    )
    trainer.train(device="cpu")
    params = trainer.best_params
    item_ix = {name: ix for ix, name in params["item_ids"].items()}
    subject_ix = {name: ix for ix, name in params["subject_ids"].items()}
    diff = np.array([params["diff"][item_ix[name]] for name in items])
    ability = np.array([params["ability"][subject_ix[f"s{j}"]] for j in range(r.shape[0])])
    return ability, diff


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * z))
    return out
