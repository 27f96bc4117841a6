"""Write a run into the commerce database with Core bulk inserts, keeping the API's invariants.

The style of :mod:`cartwise.commerce.importing.online_retail`: no per-row ORM objects,
``ON CONFLICT DO NOTHING`` on natural keys (SQLite and PostgreSQL), commits in chunks so an
interrupted run resumes where it stopped. What is written:

- **categories** (slugs as :func:`~cartwise.commerce.catalog.sample.ensure_categories` makes
  them), **products** and one **variant** each (SKU ``SY<seed>-<n>``, final list price,
  attributes material/collection/supplier);
- **users**: role customer, email ``synth-<seed>-<n>@synth.example``, the unusable password
  hash ``"!"`` (no password verifies against it, so they cannot log in);
- **orders** ``sy-<seed>-<n>`` with their lines, every **transition** reached by the end of
  the period, **payments** (declined attempts and the one that succeeded, provider
  ``manual``) and **refunds** of returned orders; totals as checkout computes them;
- **chargebacks** (disputes) of paid orders, keyed by dispute id ``synth-dp-<order id>``
  (see :mod:`.outcomes`), so ``features export`` carries them into ``order_outcomes``;
- **stock**: one ``stock_level`` per SKU (the final on-hand, nothing reserved: historical
  orders hold no reservations) and its **ledger** (initial ``set``, ``restock`` deliveries,
  ``sale`` when an order is paid, ``refund`` when a return is booked), never below zero;
- **suppliers** (keyed by name, promised lead time) and their **purchase orders**
  ``sypo-<seed>-<n>`` (one line each, status and quantities as at the end of the period, a
  **receipt** per delivery); each delivery is the ``restock`` movement of the ledger that
  names its purchase order, so the lines' ``quantity_received`` add up to the restocks;
- **shopper events** with ``received_at = client_ts`` and properties (source, quantity,
  order id).

A second run with the same config inserts nothing: users are keyed by email, variants by
SKU, orders by id (their lines, transitions, payments and refunds are written with them),
stock rows by SKU (with their ledger), suppliers by name, purchase orders by id (with their
lines and receipts) and events by their deterministic ``event_id``. A run
with the same seed but other arguments would mix two shops, so it is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Table, func, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert
from sqlmodel import Session, col, select

from cartwise.commerce.catalog.models import Category, Product, ProductStatus, Variant
from cartwise.commerce.catalog.sample import LoadSummary, ensure_categories, free_slug, slugify
from cartwise.commerce.customers.models import User
from cartwise.commerce.events.models import ShopperEvent
from cartwise.commerce.inventory.models import StockLevel, StockMovement
from cartwise.commerce.orders.models import Order, OrderLine, OrderTransition
from cartwise.commerce.payments.models import Chargeback, Payment, Refund
from cartwise.commerce.suppliers.models import (
    PurchaseOrder,
    PurchaseOrderLine,
    PurchaseOrderReceipt,
    Supplier,
)
from cartwise.features.synth.shop import EMAIL_DOMAIN, Shop
from cartwise.platform.auth import Role

# Not a password: a hash no password verifies against, so synthetic shoppers cannot log in.
UNUSABLE_PASSWORD_HASH = "!"  # noqa: S105
ORDER_CHUNK = 2_000
STOCK_CHUNK = 200  # SKUs (with their ledgers) per commit
EVENT_CHUNK = 50_000
PROVIDER = "manual"

Progress = Callable[[str, int, int], None]


class SynthConflict(ValueError):
    """The database already holds a different synthetic run under the same seed."""


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


def _insert(session: Session, model: Any, conflict: Sequence[str] | None = None) -> Insert:
    table = _table(model)
    if conflict is None:
        return insert(table)
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=list(conflict))
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(conflict))
    raise NotImplementedError(f"synthetic data is not supported on {dialect}")


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


def _when(us: pd.Series | np.ndarray) -> list[datetime]:
    """Aware UTC datetimes from microseconds since the epoch."""
    stamps = pd.to_datetime(np.asarray(us, dtype=np.int64), unit="us", utc=True)
    return list(stamps.to_pydatetime())


def _money(cents: int) -> Decimal:
    return Decimal(int(cents)).scaleb(-2)


def _count(session: Session, model: Any, *where: Any) -> int:
    return int(
        session.execute(select(func.count()).select_from(_table(model)).where(*where)).one()[0]
    )


def _check_same_run(session: Session, shop: Shop, seed: int) -> None:
    """Refuse to add to orders of this seed that another config generated."""
    ours = {
        oid: (int(created), int(total))
        for oid, created, total in zip(
            shop.orders["order_id"], shop.orders["created_us"], shop.orders["total"], strict=True
        )
    }
    stored = session.execute(
        select(col(Order.id), col(Order.created_at), col(Order.total)).where(
            col(Order.id).like(f"sy-{seed}-%")
        )
    )
    for oid, created, total in stored:
        mine = ours.get(str(oid))
        when = pd.Timestamp(created)
        when = when.tz_localize("UTC") if when.tzinfo is None else when
        theirs = (when.value // 1000, round(Decimal(str(total)) * 100))
        if mine != theirs:
            raise SynthConflict(
                f"the database already holds a synthetic shop with seed {seed} generated with "
                "other arguments; use another --seed (or the same arguments as before)"
            )


def _write_categories(session: Session, shop: Shop) -> tuple[dict[int, int], int]:
    """Category rows with synthetic descriptions; returns synthetic id -> database id."""
    paths = [tuple(p.split(" > ")) for p in shop.categories["path"]]
    wanted = {slugify("-".join(p)): p for p in paths}
    before = _count(session, Category, col(Category.slug).in_(list(wanted)))
    ids: dict[tuple[str, ...], int] = {}
    # Parents first, so children can point at them; existing slugs are kept as they are.
    for path in sorted(paths, key=len):
        parent = ids.get(path[:-1]) if len(path) > 1 else None
        session.execute(
            _insert(session, Category, ["slug"]),
            [
                {
                    "name": path[-1],
                    "slug": slugify("-".join(path)),
                    "description": f"{' > '.join(path)} (synthetic shop)",
                    "parent_id": parent,
                }
            ],
        )
        ids.update(ensure_categories(session, {path}, LoadSummary(path="synth")))
    session.commit()
    created = len(wanted) - before
    by_synthetic = {
        int(cid): ids[path] for cid, path in zip(shop.categories["category_id"], paths, strict=True)
    }
    return by_synthetic, created


def _write_catalog(
    session: Session, shop: Shop, seed: int, categories: dict[int, int]
) -> tuple[dict[str, tuple[int, int]], int]:
    """Products and variants for new SKUs; returns SKU -> (variant id, product id)."""
    prefix = f"SY{seed}-"
    existing = {
        str(s)
        for s in session.execute(
            select(Variant.sku).where(col(Variant.sku).like(f"{prefix}%"))
        ).scalars()
    }
    products = shop.products[~shop.products["sku"].isin(existing)]
    if len(products):
        taken = {
            str(s)
            for s in session.execute(
                select(Product.slug).where(col(Product.slug).like(f"%-{prefix.lower()}%"))
            ).scalars()
        }
        created = _when(products["created_us"])
        rows = [
            {
                "name": name,
                "slug": free_slug(f"{slugify(name)}-{sku.lower()}"[:200], taken),
                "description": description,
                "category_id": categories[int(category)],
                "status": ProductStatus.active.value,
                "created_at": when,
                "updated_at": when,
            }
            for name, sku, description, category, when in zip(
                products["name"],
                products["sku"],
                products["description"],
                products["category_id"],
                created,
                strict=True,
            )
        ]
        table = _table(Product)
        ids: list[int] = []
        for chunk in _chunks(rows, 1000):
            stmt = insert(table).returning(table.c.id, sort_by_parameter_order=True)
            ids.extend(int(r[0]) for r in session.execute(stmt, list(chunk)))
        variants = [
            {
                "product_id": pid,
                "sku": sku,
                "attributes": {
                    "material": material,
                    "collection": collection,
                    "supplier": supplier,
                },
                "price": _money(price),
                "currency": currency,
                "is_active": True,
            }
            for pid, sku, material, collection, supplier, price, currency in zip(
                ids,
                products["sku"],
                products["material"],
                products["collection"],
                products["supplier"],
                products["price"],
                products["currency"],
                strict=True,
            )
        ]
        session.execute(_insert(session, Variant, ["sku"]), variants)
        session.commit()
    found = {
        str(sku): (int(vid), int(pid))
        for sku, vid, pid in session.execute(
            select(Variant.sku, Variant.id, Variant.product_id).where(
                col(Variant.sku).like(f"{prefix}%")
            )
        )
    }
    return found, len(products)


def _write_users(session: Session, shop: Shop, seed: int) -> tuple[dict[int, int], int]:
    """Customers keyed by email; returns synthetic user id -> database id."""
    pattern = f"synth-{seed}-%@{EMAIL_DOMAIN}"
    before = _count(session, User, col(User.email).like(pattern))
    c = shop.customers
    rows = [
        {
            "email": email,
            "full_name": name,
            "hashed_password": UNUSABLE_PASSWORD_HASH,
            "role": Role.customer.value,
            "is_active": True,
            "created_at": when,
        }
        for email, name, when in zip(
            c["email"], c["full_name"], _when(c["created_us"]), strict=True
        )
    ]
    for chunk in _chunks(rows, 5000):
        session.execute(_insert(session, User, ["email"]), list(chunk))
    session.commit()
    by_email = {str(e): int(u) for u, e in zip(c["user_id"], c["email"], strict=True)}
    ids: dict[int, int] = {}
    for uid, email in session.execute(
        select(User.id, User.email).where(col(User.email).like(pattern))
    ):
        synthetic = by_email.get(str(email))
        if synthetic is not None:
            ids[synthetic] = int(uid)
    return ids, len(ids) - before


def _write_orders(
    session: Session,
    shop: Shop,
    seed: int,
    users: dict[int, int],
    variants: dict[str, tuple[int, int]],
    progress: Progress | None,
) -> dict[str, int]:
    """Orders with lines, transitions, payments and refunds, committed together per chunk."""
    existing = {
        str(i)
        for i in session.execute(
            select(Order.id).where(col(Order.id).like(f"sy-{seed}-%"))
        ).scalars()
    }
    orders = shop.orders[~shop.orders["order_id"].isin(existing)]
    counts = {"orders": 0, "order_lines": 0, "order_transitions": 0, "payments": 0, "refunds": 0}
    if orders.empty:
        return counts
    new = set(orders["order_id"])
    lines = shop.order_lines[shop.order_lines["order_id"].isin(new)]
    transitions = shop.transitions[shop.transitions["order_id"].isin(new)]
    payments = shop.payments[shop.payments["order_id"].isin(new)]
    refunds = shop.refunds[shop.refunds["order_id"].isin(new)]
    line_groups = lines.groupby("order_id", sort=False).indices
    transition_groups = transitions.groupby("order_id", sort=False).indices
    payment_groups = payments.groupby("order_id", sort=False).indices
    refund_of_payment = dict(zip(refunds["payment_id"], range(len(refunds)), strict=True))
    order_cols = {name: orders[name].tolist() for name in orders.columns}
    order_created, order_updated = _when(orders["created_us"]), _when(orders["updated_us"])
    line_cols = {
        name: lines[name].tolist()
        for name in ("sku", "product_name", "quantity", "unit_price", "line_total")
    }
    t_cols = {
        name: transitions[name].tolist()
        for name in ("from_status", "to_status", "actor", "actor_user", "reason")
    }
    t_when = _when(transitions["created_us"])
    p_cols = {
        name: payments[name].tolist()
        for name in ("payment_id", "status", "amount", "refunded_amount")
    }
    p_created, p_updated = _when(payments["created_us"]), _when(payments["updated_us"])
    r_when = _when(refunds["created_us"])
    r_amount = refunds["amount"].tolist()
    order_stmt = _insert(session, Order, ["id"])
    line_stmt, transition_stmt, refund_stmt = (
        insert(_table(OrderLine)),
        insert(_table(OrderTransition)),
        insert(_table(Refund)),
    )
    payment_table = _table(Payment)
    payment_stmt = insert(payment_table).returning(payment_table.c.id, sort_by_parameter_order=True)
    total = len(orders)
    if progress:
        progress("database: orders", 0, total)
    for start in range(0, total, ORDER_CHUNK):
        order_rows: list[dict[str, Any]] = []
        line_rows: list[dict[str, Any]] = []
        transition_rows: list[dict[str, Any]] = []
        payment_rows: list[dict[str, Any]] = []
        payment_refund: list[int] = []
        for h in range(start, min(start + ORDER_CHUNK, total)):
            oid = order_cols["order_id"][h]
            user_id = users[int(order_cols["user_id"][h])]
            order_rows.append(
                {
                    "id": oid,
                    "user_id": user_id,
                    "cart_id": None,
                    "email": order_cols["email"][h],
                    "status": order_cols["status"][h],
                    "currency": order_cols["currency"][h],
                    "subtotal": _money(order_cols["subtotal"][h]),
                    "discount": _money(order_cols["discount"][h]),
                    "shipping": _money(order_cols["shipping"][h]),
                    "tax": _money(order_cols["tax"][h]),
                    "total": _money(order_cols["total"][h]),
                    "refunded_amount": _money(order_cols["refunded_amount"][h]),
                    "voucher_code": None,
                    # The shape checkout stores (AddressBase as JSON).
                    "shipping_address": {
                        "full_name": order_cols["full_name"][h],
                        "line1": order_cols["line1"][h],
                        "line2": "",
                        "city": order_cols["city"][h],
                        "postcode": order_cols["postcode"][h],
                        "country": order_cols["country"][h],
                        "phone": "",
                    },
                    "country": order_cols["country"][h],
                    "payment_provider": PROVIDER,
                    "idempotency_scope": None,
                    "idempotency_key": None,
                    "request_hash": None,
                    "created_at": order_created[h],
                    "updated_at": order_updated[h],
                }
            )
            for i in line_groups.get(oid, ()):
                sku = line_cols["sku"][i]
                vid, pid = variants[sku]
                line_rows.append(
                    {
                        "order_id": oid,
                        "variant_id": vid,
                        "product_id": pid,
                        "sku": sku,
                        "product_name": line_cols["product_name"][i],
                        "quantity": int(line_cols["quantity"][i]),
                        "unit_price": _money(line_cols["unit_price"][i]),
                        "line_total": _money(line_cols["line_total"][i]),
                    }
                )
            for i in transition_groups.get(oid, ()):
                actor_user = int(t_cols["actor_user"][i])
                transition_rows.append(
                    {
                        "order_id": oid,
                        "from_status": t_cols["from_status"][i],
                        "to_status": t_cols["to_status"][i],
                        "actor_id": user_id if actor_user > 0 else None,
                        "actor": t_cols["actor"][i],
                        "reason": t_cols["reason"][i],
                        "created_at": t_when[i],
                    }
                )
            for k, i in enumerate(payment_groups.get(oid, ())):
                payment_rows.append(
                    {
                        "order_id": oid,
                        "provider": PROVIDER,
                        "provider_ref": f"synth-{oid}-{k + 1}",
                        "amount": _money(p_cols["amount"][i]),
                        "refunded_amount": _money(p_cols["refunded_amount"][i]),
                        "currency": order_cols["currency"][h],
                        "status": p_cols["status"][i],
                        "created_at": p_created[i],
                        "updated_at": p_updated[i],
                    }
                )
                payment_refund.append(refund_of_payment.get(p_cols["payment_id"][i], -1))
        session.execute(order_stmt, order_rows)
        session.execute(line_stmt, line_rows)
        session.execute(transition_stmt, transition_rows)
        payment_ids = (
            [int(r[0]) for r in session.execute(payment_stmt, payment_rows)] if payment_rows else []
        )
        refund_rows = [
            {
                "payment_id": pid,
                "order_id": payment_rows[k]["order_id"],
                "amount": _money(r_amount[r]),
                "reason": "returned by the customer",
                "provider_ref": f"synth-refund-{payment_rows[k]['order_id']}",
                "idempotency_key": f"{payment_rows[k]['order_id']}:synth-return",
                "created_by": None,
                "created_at": r_when[r],
            }
            for k, (pid, r) in enumerate(zip(payment_ids, payment_refund, strict=True))
            if r >= 0
        ]
        if refund_rows:
            session.execute(refund_stmt, refund_rows)
        session.commit()
        counts["orders"] += len(order_rows)
        counts["order_lines"] += len(line_rows)
        counts["order_transitions"] += len(transition_rows)
        counts["payments"] += len(payment_rows)
        counts["refunds"] += len(refund_rows)
        if progress:
            progress("database: orders", min(start + ORDER_CHUNK, total), total)
    return counts


def _write_chargebacks(session: Session, shop: Shop) -> int:
    """The run's disputes as ``chargeback`` rows, keyed by dispute id; returns rows inserted.

    Each names the payment that collected its order (found by the ``provider_ref`` the order
    writer gave it), so a chargeback of an order already stored by an earlier run still finds
    its payment.
    """
    cb = shop.chargebacks
    if cb.empty:
        return 0
    refs = cb["payment_ref"].astype(str).tolist()
    payment_of: dict[str, int] = {}
    for chunk in _chunks(refs, 500):
        rows = session.execute(
            select(col(Payment.provider_ref), col(Payment.id)).where(
                col(Payment.provider) == PROVIDER, col(Payment.provider_ref).in_(list(chunk))
            )
        )
        payment_of.update({str(ref): int(pid) for ref, pid in rows})
    created, updated = _when(cb["created_us"]), _when(cb["updated_us"])
    closed = _when(np.maximum(cb["closed_us"].to_numpy(dtype=np.int64), 0))
    rows_out = [
        {
            "dispute_id": dispute_id,
            "provider": PROVIDER,
            "order_id": order_id,
            "payment_id": payment_of[ref],
            "reason": reason,
            "amount": _money(amount),
            "currency": currency,
            "status": status,
            "created_at": created[i],
            "updated_at": updated[i],
            "closed_at": closed[i] if closed_us >= 0 else None,
        }
        for i, (
            dispute_id,
            order_id,
            ref,
            reason,
            amount,
            currency,
            status,
            closed_us,
        ) in enumerate(
            zip(
                cb["dispute_id"],
                cb["order_id"],
                refs,
                cb["reason"],
                cb["amount"],
                cb["currency"],
                cb["status"],
                cb["closed_us"],
                strict=True,
            )
        )
        if ref in payment_of
    ]
    before = _count(session, Chargeback)
    for chunk in _chunks(rows_out, ORDER_CHUNK):
        session.execute(_insert(session, Chargeback, ["dispute_id"]), list(chunk))
    session.commit()
    return _count(session, Chargeback) - before


def _write_suppliers(session: Session, shop: Shop) -> tuple[dict[int, int], int]:
    """Suppliers keyed by name; returns synthetic supplier id -> database id."""
    sup = shop.suppliers
    if sup.empty:
        return {}, 0
    names = [str(n) for n in sup["name"]]
    before = _count(session, Supplier, col(Supplier.name).in_(names))
    first = shop.products["created_us"].min() if len(shop.products) else 0
    [since] = _when(np.array([first]))
    rows = [
        {
            "name": name,
            "email": email,
            "lead_time_days": int(lead),
            "is_active": bool(active),
            "created_at": since,
            "updated_at": since,
        }
        for name, email, lead, active in zip(
            names, sup["email"], sup["lead_time_days"], sup["is_active"], strict=True
        )
    ]
    session.execute(_insert(session, Supplier, ["name"]), rows)
    session.commit()
    by_name = {name: int(i) for i, name in zip(sup["supplier_id"], names, strict=True)}
    ids = {
        by_name[str(name)]: int(db)
        for db, name in session.execute(
            select(Supplier.id, Supplier.name).where(col(Supplier.name).in_(names))
        )
    }
    return ids, len(ids) - before


def _when_or_none(us: pd.Series | np.ndarray) -> list[datetime | None]:
    values = np.asarray(us, dtype=np.int64)
    return [
        t if u >= 0 else None for u, t in zip(values, _when(np.maximum(values, 0)), strict=True)
    ]


def _write_purchase_orders(
    session: Session,
    shop: Shop,
    seed: int,
    suppliers: dict[int, int],
    variants: dict[str, tuple[int, int]],
) -> dict[str, int]:
    """Purchase orders with their line and delivery receipt, committed together per chunk."""
    counts = {"purchase_orders": 0, "purchase_order_lines": 0, "purchase_order_receipts": 0}
    existing = {
        str(i)
        for i in session.execute(
            select(PurchaseOrder.id).where(col(PurchaseOrder.id).like(f"sypo-{seed}-%"))
        ).scalars()
    }
    pos = shop.purchase_orders
    if pos.empty:
        return counts
    pos = pos[~pos["po_id"].isin(existing)]
    if pos.empty:
        return counts
    cols = {name: pos[name].tolist() for name in pos.columns}
    placed, expected = _when(pos["placed_us"]), _when(pos["expected_us"])
    received, updated = _when_or_none(pos["received_us"]), _when(pos["updated_us"])
    po_stmt = _insert(session, PurchaseOrder, ["id"])
    line_stmt, receipt_stmt = (
        insert(_table(PurchaseOrderLine)),
        insert(_table(PurchaseOrderReceipt)),
    )
    for start in range(0, len(pos), ORDER_CHUNK):
        po_rows: list[dict[str, Any]] = []
        line_rows: list[dict[str, Any]] = []
        receipt_rows: list[dict[str, Any]] = []
        for h in range(start, min(start + ORDER_CHUNK, len(pos))):
            po_id, sku = cols["po_id"][h], cols["sku"][h]
            vid, pid = variants[sku]
            po_rows.append(
                {
                    "id": po_id,
                    "supplier_id": suppliers[int(cols["supplier_id"][h])],
                    "status": cols["status"][h],
                    "currency": cols["currency"][h],
                    "note": "synthetic",
                    "created_by": None,
                    "idempotency_key": None,
                    "request_hash": None,
                    "placed_at": placed[h],
                    "expected_at": expected[h],
                    "received_at": received[h],
                    "updated_at": updated[h],
                }
            )
            units = int(cols["quantity_received"][h])
            line_rows.append(
                {
                    "purchase_order_id": po_id,
                    "variant_id": vid,
                    "product_id": pid,
                    "sku": sku,
                    "quantity_ordered": int(cols["quantity_ordered"][h]),
                    "quantity_received": units,
                    "unit_cost": _money(cols["unit_cost"][h]),
                }
            )
            if units > 0:
                receipt_rows.append(
                    {
                        "purchase_order_id": po_id,
                        "receipt_key": "synth-delivery",
                        "request_hash": "synthetic",
                        "quantities": {sku: units},
                        "actor_id": None,
                        "note": "supplier delivery",
                        "created_at": received[h],
                    }
                )
        session.execute(po_stmt, po_rows)
        session.execute(line_stmt, line_rows)
        if receipt_rows:
            session.execute(receipt_stmt, receipt_rows)
        session.commit()
        counts["purchase_orders"] += len(po_rows)
        counts["purchase_order_lines"] += len(line_rows)
        counts["purchase_order_receipts"] += len(receipt_rows)
    return counts


def _write_stock(
    session: Session, shop: Shop, seed: int, progress: Progress | None
) -> dict[str, int]:
    """Stock levels of SKUs that have none yet, each with its whole ledger."""
    prefix = f"SY{seed}-"
    existing = {
        str(s)
        for s in session.execute(
            select(StockLevel.sku).where(col(StockLevel.sku).like(f"{prefix}%"))
        ).scalars()
    }
    products = shop.products[~shop.products["sku"].isin(existing)]
    counts = {"stock_levels": 0, "stock_movements": 0}
    if products.empty:
        return counts
    moves = shop.stock_movements[shop.stock_movements["sku"].isin(set(products["sku"]))]
    groups = moves.groupby("sku", sort=False).indices
    m_cols = {
        name: moves[name].tolist()
        for name in (
            "reason",
            "delta_on_hand",
            "on_hand_after",
            "order_id",
            "purchase_order_id",
            "note",
        )
    }
    m_when = _when(moves["created_us"])
    skus, on_hand = products["sku"].tolist(), products["on_hand"].tolist()
    level_stmt = _insert(session, StockLevel, ["sku"])
    move_stmt = insert(_table(StockMovement))
    total = len(skus)
    for start in range(0, total, STOCK_CHUNK):
        levels: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        for j in range(start, min(start + STOCK_CHUNK, total)):
            sku = skus[j]
            ledger = groups.get(sku, ())
            for i in ledger:
                rows.append(
                    {
                        "sku": sku,
                        "reason": m_cols["reason"][i],
                        "delta_on_hand": int(m_cols["delta_on_hand"][i]),
                        "delta_reserved": 0,
                        "on_hand_after": int(m_cols["on_hand_after"][i]),
                        "reserved_after": 0,
                        "order_id": m_cols["order_id"][i],
                        "purchase_order_id": m_cols["purchase_order_id"][i],
                        "actor_id": None,
                        "note": m_cols["note"][i],
                        "created_at": m_when[i],
                    }
                )
            # Every SKU's ledger starts with its initial stock, so it has a last movement.
            levels.append(
                {
                    "sku": sku,
                    "on_hand": int(on_hand[j]),
                    "reserved": 0,
                    "updated_at": m_when[ledger[-1]],
                }
            )
        session.execute(level_stmt, levels)
        if rows:
            session.execute(move_stmt, rows)
        session.commit()
        counts["stock_levels"] += len(levels)
        counts["stock_movements"] += len(rows)
        if progress:
            progress("database: stock", min(start + STOCK_CHUNK, total), total)
    return counts


EVENT_COLUMNS = (
    "event_id",
    "type",
    "session_id",
    "user_id",
    "product_id",
    "sku",
    "query",
    "position",
    "properties",
    "client_ts",
    "received_at",
)


def _event_columns(
    part: pd.DataFrame, db_user: np.ndarray, db_product: np.ndarray
) -> dict[str, list[Any]]:
    """The table columns of a slice of events (properties as JSON text)."""
    properties = []
    for source, qty, order_id in zip(
        part["source"], part["quantity"], part["order_id"], strict=True
    ):
        # Hand-written JSON: the values are plain words, digits and order ids.
        fields = ['"synthetic": true']
        if source is not None:
            fields.append(f'"source": "{source}"')
        if qty > 0:
            fields.append(f'"quantity": {int(qty)}')
        if order_id is not None:
            fields.append(f'"order_id": "{order_id}"')
        properties.append("{" + ", ".join(fields) + "}")
    position = part["position"].to_numpy()
    return {
        "event_id": part["event_id"].tolist(),
        "type": part["type"].tolist(),
        "session_id": part["session_id"].tolist(),
        "user_id": [int(u) if u > 0 else None for u in db_user.tolist()],
        "product_id": [int(p) if p > 0 else None for p in db_product.tolist()],
        "sku": part["sku"].tolist(),
        "query": part["query"].tolist(),
        "position": [int(p) if p >= 0 else None for p in position.tolist()],
        "properties": properties,
    }


def _events_postgresql(
    session: Session, columns: dict[str, list[Any]], when: list[datetime]
) -> None:
    """COPY into a temporary table, then one INSERT ... ON CONFLICT DO NOTHING (fast)."""
    # psycopg's own connection: its cursors do COPY (the DB-API has no word for it).
    dbapi: Any = session.connection().connection.dbapi_connection
    # Only constant column names are formatted into these statements; values go by COPY.
    names = ", ".join(EVENT_COLUMNS)
    with dbapi.cursor() as cur:
        create = f"CREATE TEMP TABLE IF NOT EXISTS synth_event_load AS SELECT {names} FROM"
        cur.execute(create + " shopper_event WITH NO DATA")
        cur.execute("TRUNCATE synth_event_load")
        with cur.copy(f"COPY synth_event_load ({names}) FROM STDIN") as copy:
            for row in zip(*(columns[c] for c in EVENT_COLUMNS[:-2]), when, when, strict=True):
                copy.write_row(row)
        move = f"INSERT INTO shopper_event ({names}) SELECT {names} FROM synth_event_load"  # noqa: S608
        cur.execute(move + " ORDER BY received_at ON CONFLICT (event_id) DO NOTHING")


def _events_sqlite(session: Session, columns: dict[str, list[Any]], stamps: list[str]) -> None:
    """One executemany on the driver, values already in the form SQLAlchemy stores."""
    dbapi: Any = session.connection().connection.dbapi_connection
    names = ", ".join(EVENT_COLUMNS)
    marks = ", ".join("?" for _ in EVENT_COLUMNS)
    rows = zip(*(columns[c] for c in EVENT_COLUMNS[:-2]), stamps, stamps, strict=True)
    # Constant column names and placeholders only; the values are bound.
    sql = f"INSERT INTO shopper_event ({names}) VALUES ({marks})"  # noqa: S608
    sql += " ON CONFLICT (event_id) DO NOTHING"
    dbapi.cursor().executemany(sql, rows)


def _sqlite_stamps(us: np.ndarray) -> list[str]:
    """SQLite datetime text as SQLAlchemy writes it (naive UTC, microseconds)."""
    text = np.datetime_as_string(np.asarray(us, dtype=np.int64).astype("datetime64[us]"), unit="us")
    return list(np.char.replace(text, "T", " "))


def _sqlite_format_matches(session: Session) -> bool:
    """Whether the hand-formatted SQLite timestamps equal what the column type binds."""
    dialect = session.get_bind().dialect
    column_type = _table(ShopperEvent).c.client_ts.type.dialect_impl(dialect)
    processor = column_type.bind_processor(dialect)
    sample = np.array([1_700_000_000_123_456, 1_700_000_000_000_000])
    bound = [processor(t) if processor else t for t in _when(sample)]
    return bound == _sqlite_stamps(sample)


def _write_events(
    session: Session,
    shop: Shop,
    seed: int,
    users: dict[int, int],
    products: dict[int, int],
    progress: Progress | None,
) -> int:
    """Shopper events, skipping ids already stored; returns how many were inserted."""
    session_like = col(ShopperEvent.session_id).like(f"sy{seed}-s%")
    before = _count(session, ShopperEvent, session_like)
    ev = shop.events
    total = len(ev)
    if progress:
        progress("database: events", 0, total)
    if before >= total:  # a complete earlier run: nothing to send
        if progress:
            progress("database: events", total, total)
        return 0
    # Map synthetic ids to database ids once, vectorised.
    user_map = np.zeros(int(ev["user_id"].to_numpy().max(initial=0)) + 1, dtype=np.int64)
    for synthetic, db in users.items():
        if synthetic < len(user_map):
            user_map[synthetic] = db
    product_map = np.zeros(int(ev["product_id"].to_numpy().max(initial=0)) + 1, dtype=np.int64)
    for synthetic, db in products.items():
        if synthetic < len(product_map):
            product_map[synthetic] = db
    uid = ev["user_id"].to_numpy()
    pid = ev["product_id"].to_numpy()
    db_user = np.where(uid > 0, user_map[np.maximum(uid, 0)], -1)
    db_product = np.where(pid > 0, product_map[np.maximum(pid, 0)], -1)
    dialect = session.get_bind().dialect.name
    fast_sqlite = dialect == "sqlite" and _sqlite_format_matches(session)
    stmt = _insert(session, ShopperEvent, ["event_id"])
    for start in range(0, total, EVENT_CHUNK):
        stop = min(start + EVENT_CHUNK, total)
        part = ev.iloc[start:stop]
        columns = _event_columns(part, db_user[start:stop], db_product[start:stop])
        if dialect == "postgresql":
            _events_postgresql(session, columns, _when(part["time_us"]))
        elif fast_sqlite:
            _events_sqlite(session, columns, _sqlite_stamps(part["time_us"].to_numpy()))
        else:
            when = _when(part["time_us"])
            rows = [
                {
                    **dict(zip(EVENT_COLUMNS[:-3], values, strict=True)),
                    "properties": json.loads(props),
                    "client_ts": t,
                    "received_at": t,
                }
                for *values, props, t in zip(
                    *(columns[c] for c in EVENT_COLUMNS[:-2]), when, strict=True
                )
            ]
            session.execute(stmt, rows)
        session.commit()
        if progress:
            progress("database: events", stop, total)
    return _count(session, ShopperEvent, session_like) - before


def write_db(
    session: Session, shop: Shop, seed: int, progress: Progress | None = None
) -> tuple[dict[str, int], dict[str, dict[int, int]]]:
    """Write a run into the database; returns rows inserted per table and the id maps."""
    try:
        _check_same_run(session, shop, seed)
        if progress:
            progress("database: catalog", 0, 1)
        categories, n_categories = _write_categories(session, shop)
        variants, n_products = _write_catalog(session, shop, seed, categories)
        if progress:
            progress("database: catalog", 1, 1)
        users, n_users = _write_users(session, shop, seed)
        orders = _write_orders(session, shop, seed, users, variants, progress)
        orders["chargebacks"] = _write_chargebacks(session, shop)
        suppliers, n_suppliers = _write_suppliers(session, shop)
        purchases = _write_purchase_orders(session, shop, seed, suppliers, variants)
        stock = _write_stock(session, shop, seed, progress)
        products = {
            int(pid): variants[sku][1]
            for pid, sku in zip(shop.products["product_id"], shop.products["sku"], strict=True)
        }
        n_events = _write_events(session, shop, seed, users, products, progress)
    except Exception:
        session.rollback()
        raise
    written = {
        "categories": n_categories,
        "products": n_products,
        "customers": n_users,
        **orders,
        "suppliers": n_suppliers,
        **purchases,
        **stock,
        "events": n_events,
    }
    return written, {"users": users, "products": products, "suppliers": suppliers}
