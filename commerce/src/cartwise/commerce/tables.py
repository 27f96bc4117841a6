"""Import every table module so ``SQLModel.metadata`` is complete (Alembic, tests)."""

from sqlmodel import SQLModel

from cartwise.commerce.alerts import models as _alerts
from cartwise.commerce.carts import models as _carts
from cartwise.commerce.catalog import models as _catalog
from cartwise.commerce.customers import models as _customers
from cartwise.commerce.events import models as _events
from cartwise.commerce.experiments import models as _experiments
from cartwise.commerce.exports import models as _exports
from cartwise.commerce.inventory import models as _inventory
from cartwise.commerce.monitoring import models as _monitoring
from cartwise.commerce.orders import models as _orders
from cartwise.commerce.outbox import models as _outbox
from cartwise.commerce.payments import models as _payments
from cartwise.commerce.suppliers import models as _suppliers
from cartwise.commerce.vouchers import models as _vouchers

metadata = SQLModel.metadata

__all__ = [
    "_alerts",
    "_carts",
    "_catalog",
    "_customers",
    "_events",
    "_experiments",
    "_exports",
    "_inventory",
    "_monitoring",
    "_orders",
    "_outbox",
    "_payments",
    "_suppliers",
    "_vouchers",
    "metadata",
]
