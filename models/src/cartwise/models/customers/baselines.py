"""Baselines for churn and value: BG/NBD, Gamma-Gamma, historical average, logistic regression.

BG/NBD (Fader, Hardie & Lee 2005) and Gamma-Gamma (Fader, Hardie & Lee 2005b) are fitted by
maximum likelihood with scipy (the ``lifetimes`` package is unmaintained and not installed).
Inputs are the RFM frame of :func:`cartwise.models.customers.data.rfm`: ``frequency`` (repeat
purchase days), ``recency`` and ``T`` in days, ``monetary`` (mean spend of the repeat days).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, special  # type: ignore[import-untyped]


def _arrays(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    missing = {"frequency", "recency", "T"} - set(frame.columns)
    if missing:
        raise ValueError(f"RFM frame lacks {sorted(missing)}")
    x = frame["frequency"].to_numpy(np.float64)
    t_x = frame["recency"].to_numpy(np.float64)
    big_t = np.maximum(frame["T"].to_numpy(np.float64), 1e-6)
    if (x < 0).any() or (t_x < 0).any() or (t_x > big_t + 1e-6).any():
        raise ValueError("RFM needs frequency >= 0 and 0 <= recency <= T")
    return x, t_x, big_t


def bgnbd_loglik(
    params: np.ndarray, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray
) -> np.ndarray:
    """Per-customer BG/NBD log-likelihood of (r, alpha, a, b)."""
    r, alpha, a, b = params
    a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    a2 = (
        special.gammaln(a + b)
        + special.gammaln(b + x)
        - special.gammaln(b)
        - special.gammaln(a + b + x)
    )
    a3 = -(r + x) * np.log(alpha + big_t)
    repeat = x > 0
    a4 = np.full_like(x, -np.inf)
    a4[repeat] = (
        np.log(a) - np.log(b + x[repeat] - 1) - (r + x[repeat]) * np.log(alpha + t_x[repeat])
    )
    result: np.ndarray = a1 + a2 + np.logaddexp(a3, a4)
    return result


@dataclass
class BGNBD:
    """The BG/NBD model: purchase rate ~ Gamma(r, alpha), dropout ~ Beta(a, b) per purchase."""

    r: float = 1.0
    alpha: float = 1.0
    a: float = 1.0
    b: float = 1.0
    penalizer: float = 0.0

    @property
    def params(self) -> dict[str, float]:
        """The fitted parameters."""
        return {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b}

    def fit(self, frame: pd.DataFrame) -> BGNBD:
        """Maximum likelihood on an RFM frame (log-parameters, Nelder-Mead then L-BFGS)."""
        x, t_x, big_t = _arrays(frame)
        if len(x) == 0:
            raise ValueError("no customers to fit")
        scale = max(float(big_t.max()), 1.0) / 10.0  # alpha lives on the scale of T

        def negative(log_params: np.ndarray) -> float:
            params = np.exp(log_params)
            params[1] *= scale
            value = -float(bgnbd_loglik(params, x, t_x, big_t).mean())
            value += self.penalizer * float(np.sum(params**2))
            return value if np.isfinite(value) else 1e12

        start = np.zeros(4)
        first = optimize.minimize(negative, start, method="Nelder-Mead", options={"maxiter": 2000})
        second = optimize.minimize(negative, first.x, method="L-BFGS-B")
        best = second.x if second.fun <= first.fun else first.x
        r, alpha, a, b = np.exp(best)
        self.r, self.alpha, self.a, self.b = float(r), float(alpha * scale), float(a), float(b)
        return self

    def p_alive(self, frame: pd.DataFrame) -> np.ndarray:
        """P(the customer has not dropped out) at T."""
        x, t_x, big_t = _arrays(frame)
        ratio = np.zeros_like(x)
        repeat = x > 0
        ratio[repeat] = np.exp(
            np.log(self.a)
            - np.log(self.b + x[repeat] - 1)
            + (self.r + x[repeat])
            * (np.log(self.alpha + big_t[repeat]) - np.log(self.alpha + t_x[repeat]))
        )
        out: np.ndarray = 1.0 / (1.0 + ratio)
        return out

    def p_no_purchase(self, frame: pd.DataFrame, t: float) -> np.ndarray:
        """P(no purchase in (T, T + t]): dropped out, or alive and no purchase by chance."""
        x, _, big_t = _arrays(frame)
        alive = self.p_alive(frame)
        quiet = np.exp((self.r + x) * (np.log(self.alpha + big_t) - np.log(self.alpha + big_t + t)))
        out: np.ndarray = 1.0 - alive * (1.0 - quiet)
        return out

    def expected_purchases(self, frame: pd.DataFrame, t: float) -> np.ndarray:
        """E[purchases in (T, T + t] | history] (conditional expectation of the paper)."""
        x, t_x, big_t = _arrays(frame)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        if a <= 1:
            # The closed form needs a > 1; this bound is close for the a, b seen in retail.
            a = 1.0 + 1e-6
        z = t / (alpha + big_t + t)
        hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, z)
        head = (a + b + x - 1) / (a - 1)
        body = 1.0 - np.exp((r + x) * (np.log(alpha + big_t) - np.log(alpha + big_t + t))) * hyp
        repeat = (x > 0).astype(float)
        denom = 1.0 + repeat * np.exp(
            np.log(a)
            - np.log(np.maximum(b + x - 1, 1e-12))
            + (r + x) * (np.log(alpha + big_t) - np.log(alpha + t_x))
        )
        out: np.ndarray = np.nan_to_num(np.maximum(head * body / denom, 0.0), nan=0.0, posinf=0.0)
        return out

    def simulate(self, n: int, big_t: float | np.ndarray, seed: int = 0) -> pd.DataFrame:
        """Draw n customers' (frequency, recency, T) from the model (for tests)."""
        rng = np.random.default_rng(seed)
        ts = np.broadcast_to(np.asarray(big_t, dtype=np.float64), (n,))
        lam = rng.gamma(self.r, 1.0 / self.alpha, n)
        p = rng.beta(self.a, self.b, n)
        freq, rec = np.zeros(n), np.zeros(n)
        for i in range(n):
            now, count, last = 0.0, 0, 0.0
            while True:
                now += rng.exponential(1.0 / lam[i])
                if now > ts[i]:
                    break
                count, last = count + 1, now
                if rng.random() < p[i]:
                    break
            freq[i], rec[i] = count, last
        return pd.DataFrame({"frequency": freq, "recency": rec, "T": ts})


@dataclass
class GammaGamma:
    """Gamma-Gamma spend: the mean spend per purchase of customers with repeat purchases."""

    p: float = 1.0
    q: float = 2.0
    v: float = 1.0

    def fit(self, frame: pd.DataFrame) -> GammaGamma:
        """Maximum likelihood on customers with ``frequency > 0`` and ``monetary > 0``."""
        keep = (frame["frequency"] > 0) & (frame["monetary"] > 0)
        x = frame.loc[keep, "frequency"].to_numpy(np.float64)
        m = frame.loc[keep, "monetary"].to_numpy(np.float64)
        if len(x) < 3:
            raise ValueError("Gamma-Gamma needs at least 3 repeat customers with spend")
        m_scale = float(np.median(m))

        def negative(log_params: np.ndarray) -> float:
            p, q, v = np.exp(log_params)
            v *= m_scale
            ll = (
                special.gammaln(p * x + q)
                - special.gammaln(p * x)
                - special.gammaln(q)
                + q * np.log(v)
                + (p * x - 1) * np.log(m)
                + p * x * np.log(x)
                - (p * x + q) * np.log(x * m + v)
            )
            value = -float(ll.mean())
            return value if np.isfinite(value) else 1e12

        first = optimize.minimize(
            negative, np.zeros(3), method="Nelder-Mead", options={"maxiter": 2000}
        )
        p, q, v = np.exp(first.x)
        self.p, self.q, self.v = float(p), float(q), float(v * m_scale)
        return self

    def expected_spend(self, frame: pd.DataFrame) -> np.ndarray:
        """E[spend per purchase | history]; the population mean for customers without repeats."""
        x = frame["frequency"].to_numpy(np.float64)
        m = frame["monetary"].to_numpy(np.float64)
        q = max(self.q, 1.0 + 1e-6)
        population = self.p * self.v / (q - 1)
        conditional = self.p * (self.v + x * m) / (self.p * x + q - 1)
        out: np.ndarray = np.where((x > 0) & (m > 0), conditional, population)
        return out


def historical_average(frame: pd.DataFrame, horizon: float) -> np.ndarray:
    """Spend per day since the first purchase, times ``horizon``."""
    days = np.maximum(frame["T"].to_numpy(np.float64), 1.0)
    out: np.ndarray = frame["spend"].to_numpy(np.float64) / days * horizon
    return out


def log_rfm(frame: pd.DataFrame) -> np.ndarray:
    """log1p of frequency, recency, T, monetary, spend and the days since the last purchase."""
    cols = [
        frame["frequency"],
        frame["recency"],
        frame["T"],
        frame["monetary"],
        frame["spend"],
        frame["T"] - frame["recency"],
    ]
    out: np.ndarray = np.log1p(
        np.maximum(np.column_stack([c.to_numpy(np.float64) for c in cols]), 0.0)
    )
    return out


class LogisticRFM:
    """Logistic regression on log-scaled RFM: P(churn)."""

    def __init__(self, c: float = 1.0) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))

    def fit(self, frame: pd.DataFrame, churned: np.ndarray) -> LogisticRFM:
        """Fit on RFM rows and their churn labels."""
        self.model.fit(log_rfm(frame), np.asarray(churned).astype(int))
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """P(churn) per row."""
        out: np.ndarray = self.model.predict_proba(log_rfm(frame))[:, 1]
        return out


__all__ = [
    "BGNBD",
    "GammaGamma",
    "LogisticRFM",
    "bgnbd_loglik",
    "historical_average",
    "log_rfm",
]
