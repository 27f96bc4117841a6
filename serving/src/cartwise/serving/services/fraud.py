"""The fraud service: risk, decision, anomaly and top reasons for an order at checkout.

The features are ``fraud_v1`` from the Feast online store: the customer's profile
(``customer_fraud_profile``) and the on-demand view ``fraud_order_signals``, which needs the
request fields ``order_amount``, ``shipping_country``, ``orders_last_hour`` and
``request_epoch``, sent in the entity row with ``customer_id``. A guest has no customer entity:
the signals are computed here the way the on-demand view computes them for a customer without a
profile, and the profile counts read as "no history" (:func:`fill_no_history`), as in training.
The model input adds ``order_amount`` from the request.

:meth:`FraudService.score_many` scores several orders with one Feast call and one forward pass
(the shape ``@serve.batch`` needs); :meth:`FraudService.score` is one order. Answers are never
cached: every order is new.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cartwise.serving.services.base import ServiceBase, answer, check_int, jsonable

if TYPE_CHECKING:
    import pandas as pd

    from cartwise.models.fraud.predict import FraudScorer
    from cartwise.serving.runtime.holder import LoadedModel

# The on-demand view's outputs: computed here when Feast has no answer for them.
SIGNALS = (
    "amount_vs_avg",
    "is_new_country",
    "order_velocity_1h",
    "account_age_days",
    "failed_payment_share_now",
)
MAX_BATCH = 256


def _request(raw: Any) -> dict[str, Any]:
    """A validated scoring request (``ValueError`` naming the bad field)."""
    if not isinstance(raw, Mapping):
        raise ValueError("a fraud request must be an object")
    known = {
        "order_id",
        "customer_id",
        "order_amount",
        "shipping_country",
        "orders_last_hour",
        "request_epoch",
    }
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown request fields {unknown}; known: {sorted(known)}")
    order_id = raw.get("order_id")
    if order_id is not None and not isinstance(order_id, str | int):
        raise ValueError("order_id must be a string or an integer")
    customer = raw.get("customer_id")
    if customer is not None:
        customer = check_int(customer, "customer_id", minimum=1)
    amount = raw.get("order_amount")
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        raise ValueError("order_amount must be a number")
    amount = float(amount)
    if not math.isfinite(amount) or amount < 0:
        raise ValueError("order_amount must be a finite, non-negative number")
    country = raw.get("shipping_country")
    if country is not None and (not isinstance(country, str) or not 0 < len(country) <= 64):
        raise ValueError("shipping_country must be a country code")
    last_hour = raw.get("orders_last_hour")
    last_hour = 0 if last_hour is None else check_int(last_hour, "orders_last_hour", minimum=0)
    epoch = raw.get("request_epoch")
    epoch = int(time.time()) if epoch is None else check_int(epoch, "request_epoch", minimum=0)
    return {
        "order_id": None if order_id is None else str(order_id),
        "customer_id": customer,
        "order_amount": amount,
        "shipping_country": country,
        "orders_last_hour": last_hour,
        "request_epoch": epoch,
    }


def _no_profile_signals(request: Mapping[str, Any]) -> dict[str, float]:
    """``fraud_order_signals`` for a shopper without a profile (as the on-demand view does)."""
    return {
        # No average to compare with: 1 means "ordinary".
        "amount_vs_avg": 1.0,
        "is_new_country": float(request["shipping_country"] is not None),
        "order_velocity_1h": float(request["orders_last_hour"]),
        "account_age_days": 0.0,
        "failed_payment_share_now": 0.0,
    }


class FraudService(ServiceBase):
    """Order risk from ``models:/fraud@champion`` and ``fraud_v1`` online features."""

    area = "fraud"
    defaults = {"reasons": 3}

    def prepare(self, loaded: LoadedModel) -> None:
        """Run one forward pass so the first checkout does not pay numpy's first-call costs."""
        scorer: FraudScorer = loaded.predictor
        frame = self._frame(scorer, [_request({"order_amount": 10.0})], [{}])
        scorer.score(frame, reasons=0)

    async def exercise(self) -> None:
        """One member order through Feast's on-demand view (its first call is slow)."""
        await self.score(request={"customer_id": 1, "order_amount": 10.0, "shipping_country": "GB"})

    def _frame(
        self,
        scorer: FraudScorer,
        requests: list[dict[str, Any]],
        features: list[dict[str, Any]],
    ) -> pd.DataFrame:
        """The model's input rows: online features, gaps filled, plus the order amount."""
        import pandas as pd

        from cartwise.models.fraud.data import fill_no_history

        rows = []
        for request, found in zip(requests, features, strict=True):
            row: dict[str, Any] = {}
            fallback = _no_profile_signals(request)
            for name in scorer.features:
                value = found.get(name)
                if name == "order_amount":
                    value = request["order_amount"]
                elif value is None and name in fallback:
                    value = fallback[name]
                row[name] = value
            rows.append(row)
        return fill_no_history(pd.DataFrame(rows, columns=list(scorer.features)))

    def _score(
        self,
        scorer: FraudScorer,
        requests: list[dict[str, Any]],
        features: list[dict[str, Any]],
        loaded: LoadedModel | None = None,
    ) -> list[dict[str, Any]]:
        frame = self._frame(scorer, requests, features)
        scored = scorer.score(frame, reasons=0)
        k = int(self.config["reasons"])
        reasons = scorer.explain(frame, k=min(k, len(scorer.features))) if k > 0 else None
        out = []
        for i, request in enumerate(requests):
            row = scored.iloc[i]
            explained = []
            for reason in reasons[i] if reasons is not None else []:
                sign = "+" if reason["contribution"] > 0 else "-"
                explained.append(
                    {
                        **reason,
                        "text": (
                            f"{reason['feature']}={reason['value']:g} "
                            f"({sign}{abs(reason['contribution']):.2f})"
                        ),
                    }
                )
            out.append(
                {
                    "order_id": request["order_id"],
                    "customer_id": request["customer_id"],
                    "risk": float(row["risk"]),
                    "decision": str(row["decision"]),
                    "anomaly": float(row["anomaly"]),
                    "classifier": float(row["classifier"]),
                    "reasons": explained,
                    "features": {name: frame.iloc[i][name] for name in scorer.features},
                    "thresholds": dict(scorer.thresholds),
                }
            )
        if loaded is not None:
            # What was answered, as scored: the model input rows and the risk.
            self.log_features(
                loaded,
                frame.to_dict("records"),
                [float(o["risk"]) for o in out],
                [r["order_id"] for r in requests],
            )
        return [jsonable(o) for o in out]

    async def score_many(self, *, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Score several orders in one Feast call and one forward pass (one answer per order)."""
        if not isinstance(requests, list) or not requests:
            raise ValueError("requests must be a non-empty list")
        if len(requests) > MAX_BATCH:
            raise ValueError(f"at most {MAX_BATCH} requests per call")
        checked = [_request(r) for r in requests]
        loaded = await self.model(None)
        scorer: FraudScorer = loaded.predictor
        members = [r for r in checked if r["customer_id"] is not None]
        found: dict[int, dict[str, Any]] = {}
        if members:
            rows = [
                {
                    "customer_id": r["customer_id"],
                    "order_amount": r["order_amount"],
                    "shipping_country": r["shipping_country"],
                    "orders_last_hour": r["orders_last_hour"],
                    "request_epoch": r["request_epoch"],
                }
                for r in members
            ]
            online = await self.online("fraud_v1", rows)
            found = {i: row for i, row in enumerate(online)}
        features: list[dict[str, Any]] = []
        member = 0
        for r in checked:
            if r["customer_id"] is None:
                features.append({})
            else:
                features.append(found.get(member, {}))
                member += 1
        results = await asyncio.to_thread(self._score, scorer, checked, features, loaded)
        return [answer(loaded, body) for body in results]

    async def score(self, *, request: dict[str, Any]) -> dict[str, Any]:
        """Risk in [0, 1], allow/review/block, anomaly and the top reasons for one order."""
        return (await self.score_many(requests=[request]))[0]
