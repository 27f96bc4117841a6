"""The customer-insights service: segment, churn probability and 90-day value per customer.

:meth:`CustomerService.insights` reads one customer's ``customer_v1`` online features (RFM,
behaviour, category affinity) and runs the :class:`CustomerModel`. A registered customer with no
feature row yet (signed up since the last materialisation) reads as inactive, the way training
fills gaps; an id that is not a customer is a ``ValueError``.

:meth:`segments` and :meth:`churn_risk` score the whole population (every customer's online
features, in chunks), cached per model version for ``population_ttl_s`` in the replica.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any

from cartwise.serving.services.base import ServiceBase, answer, check_int, jsonable

if TYPE_CHECKING:
    import pandas as pd

    from cartwise.models.customers.predict import CustomerModel
    from cartwise.serving.runtime.holder import LoadedModel

SERVICE = "customer_v1"
CHUNK = 1_000
MAX_LIMIT = 1_000


class CustomerService(ServiceBase):
    """Customer insights from ``models:/customers@champion`` and ``customer_v1`` features."""

    area = "customers"
    defaults = {"population_ttl_s": 300.0}

    def __init__(
        self, settings: dict[str, Any] | None = None, config: dict[str, Any] | None = None
    ) -> None:
        super().__init__(settings, config)
        # (name, version) -> (monotonic time, scored population)
        self._population: dict[tuple[str, int], tuple[float, pd.DataFrame]] = {}
        self._population_lock = threading.Lock()

    async def exercise(self) -> None:
        """Score the population once (segments and churn lists read it)."""
        await self.segments()

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
        """Online rows as the model's input frame, gaps filled as in training."""
        import pandas as pd

        from cartwise.models.customers import data as cdata

        keep = [*cdata.STATS, *cdata.AFFINITY]
        frame = pd.DataFrame(
            [{"customer_id": r["customer_id"], **{c: r.get(c) for c in keep}} for r in rows]
        )
        return cdata.fill_missing(frame)

    def _customer_ids(self) -> list[int]:
        from sqlalchemy import select

        from cartwise.commerce.customers.models import User

        user = User.__table__  # type: ignore[attr-defined]
        stmt = select(user.c.id).where(user.c.role == "customer").order_by(user.c.id)
        with self.engine.connect() as conn:
            return [int(r[0]) for r in conn.execute(stmt)]

    def _is_customer(self, customer_id: int) -> bool:
        from sqlalchemy import select

        from cartwise.commerce.customers.models import User

        user = User.__table__  # type: ignore[attr-defined]
        stmt = select(user.c.id).where(user.c.id == customer_id, user.c.role == "customer")
        with self.engine.connect() as conn:
            return conn.execute(stmt).first() is not None

    @staticmethod
    def _logged_columns(frame: pd.DataFrame) -> list[str]:
        """The numeric statistics of the input frame (the category lists are not logged)."""
        from cartwise.models.customers import data as cdata

        return [c for c in cdata.STATS if c in frame.columns]

    @staticmethod
    def _found(row: dict[str, Any]) -> bool:
        from cartwise.models.customers import data as cdata

        return any(row.get(c) is not None for c in cdata.STATS)

    # ------------------------------------------------------------------ answers

    async def insights(self, *, customer_id: int) -> dict[str, Any]:
        """Segment, churn probability and expected 90-day spend of one customer."""
        customer_id = check_int(customer_id, "customer_id", minimum=1)
        loaded = await self.model(None)
        model: CustomerModel = loaded.predictor
        rows = await self.online(SERVICE, [{"customer_id": customer_id}])
        found = bool(rows) and self._found(rows[0])
        if not found and not await asyncio.to_thread(self._is_customer, customer_id):
            raise ValueError(f"unknown customer {customer_id}")
        frame = self._frame(rows or [{"customer_id": customer_id}])
        out = (await asyncio.to_thread(model.insights, frame)).iloc[0]
        # The churn model's input statistics (the monitored features) and its answer.
        self.log_features(
            loaded,
            frame[self._logged_columns(frame)].to_dict("records"),
            [float(out["churn_probability"])],
            [customer_id],
        )
        body = {
            "customer_id": customer_id,
            "segment": int(out["segment"]),
            "segment_name": str(out["segment_name"]),
            "churn_probability": float(out["churn_probability"]),
            "ltv_90d": float(out["ltv_90d"]),
            "horizon_days": int(model.horizon_days),
            "has_features": found,
        }
        return answer(loaded, body)

    def population(self, loaded: LoadedModel) -> pd.DataFrame:
        """Every customer scored (cached per model version for ``population_ttl_s``)."""
        import pandas as pd

        key = (loaded.name, loaded.version)
        ttl = float(self.config["population_ttl_s"])
        with self._population_lock:
            cached = self._population.get(key)
            if cached is not None and time.monotonic() - cached[0] < ttl:
                return cached[1]
            ids = self._customer_ids()
            rows: list[dict[str, Any]] = []
            for start in range(0, len(ids), CHUNK):
                chunk = [{"customer_id": c} for c in ids[start : start + CHUNK]]
                rows += self.features.get(SERVICE, chunk)
            model: CustomerModel = loaded.predictor
            if rows:
                frame = self._frame(rows)
                scored = model.insights(frame)
                scored["ordered"] = frame["orders_lifetime"].to_numpy() > 0
                scored["has_features"] = [self._found(r) for r in rows]
            else:
                columns = ["customer_id", "segment", "segment_name", "churn_probability"]
                scored = pd.DataFrame(columns=[*columns, "ltv_90d", "ordered", "has_features"])
            # Only this version's population is worth keeping.
            self._population = {key: (time.monotonic(), scored)}
            return scored

    async def segments(self) -> dict[str, Any]:
        """The segments: the model's profiles plus today's sizes, churn and value."""
        loaded = await self.model(None)
        model: CustomerModel = loaded.predictor
        scored = await asyncio.to_thread(self.population, loaded)
        total = len(scored)
        out = []
        for profile in model.profiles:
            sid = int(profile["segment"])
            members = scored[scored["segment"] == sid]
            out.append(
                {
                    **jsonable(profile),
                    "current_customers": len(members),
                    "current_share": (len(members) / total) if total else 0.0,
                    "current_mean_churn_probability": (
                        float(members["churn_probability"].mean()) if len(members) else None
                    ),
                    "current_mean_ltv_90d": (
                        float(members["ltv_90d"].mean()) if len(members) else None
                    ),
                }
            )
        return answer(
            loaded,
            {"segments": out, "customers": total, "horizon_days": int(model.horizon_days)},
        )

    async def churn_risk(self, *, limit: int = 50) -> dict[str, Any]:
        """Customers who have ordered, most likely to churn first, with value and segment."""
        limit = check_int(limit, "limit", minimum=1, maximum=MAX_LIMIT)
        loaded = await self.model(None)
        scored = await asyncio.to_thread(self.population, loaded)
        # Churn means "stops buying": only customers who bought before can churn.
        buyers = scored[scored["ordered"].astype(bool)]
        top = buyers.sort_values(
            ["churn_probability", "ltv_90d", "customer_id"], ascending=[False, False, True]
        ).head(limit)
        customers = [
            {
                "customer_id": int(r.customer_id),
                "churn_probability": float(r.churn_probability),
                "ltv_90d": float(r.ltv_90d),
                "segment": int(r.segment),
                "segment_name": str(r.segment_name),
            }
            for r in top.itertuples(index=False)
        ]
        return answer(loaded, {"customers": customers, "scored": len(buyers), "limit": limit})
