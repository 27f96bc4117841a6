"""Load a real catalog with stock from the committed UCI Online Retail sample.

Each stock code becomes a product with one variant (SKU = stock code). The name is the code's
most frequent description, nicely title-cased; the price is the median positive unit price in
GBP; the category comes from a small keyword rule set; the starting stock is derived from the
units sold in the sample. Non-product codes (postage, fees, discounts, manual adjustments),
cancellations and zero or negative prices are skipped. Loading twice changes nothing.

Data: UCI Machine Learning Repository "Online Retail" (CC BY 4.0), Chen, Sain & Guo (2012);
see ``data/online_retail_sample/README.md``.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TypeVar

from sqlmodel import Session, col, select

from cartwise.commerce.catalog.cache import mark_dirty
from cartwise.commerce.catalog.models import Category, Product, ProductStatus, Variant
from cartwise.commerce.inventory.service import ensure_stock_row
from cartwise.commerce.money import quantize

SAMPLE_ENV = "CARTWISE_SAMPLE_PATH"
SAMPLE_DIR = Path("data") / "online_retail_sample"
SAMPLE_FILE = "online_retail_2011-11.csv.gz"
CURRENCY = "GBP"

# Stock codes that are not products: postage, carriage, fees, discounts, manual entries,
# charity, padding lines and vouchers.
NON_PRODUCT_CODES = frozenset(
    {
        "POST",
        "DOT",
        "D",
        "M",
        "S",
        "B",
        "C2",
        "CRUK",
        "PADS",
        "BANK CHARGES",
        "AMAZONFEE",
        "ADJUST",
        "ADJUST2",
        "TEST001",
        "TEST002",
    }
)
NON_PRODUCT_PREFIXES = ("GIFT_", "DCGSSGIRL_TEST", "TEST")
_SKU_OK = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# Category rules, first match wins: (path from the root, keywords matched as whole words,
# plurals included). Seasonal first, then the most specific objects, then broad materials.
CATEGORY_RULES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (
        ("Christmas",),
        ("christmas", "xmas", "advent", "santa", "reindeer", "snowflake", "bauble", "nativity"),
    ),
    (
        ("Home", "Candles & Lights"),
        ("candle", "t-light", "tealight", "light", "lantern", "lamp", "lights", "nightlight"),
    ),
    (
        ("Home", "Textiles"),
        (
            "hot water bottle",
            "cushion",
            "cushion cover",
            "filler pad",
            "throw",
            "quilt",
            "blanket",
            "slipper",
            "tea cosy",
        ),
    ),
    (
        ("Kitchen & Dining", "Mugs & Cups"),
        ("mug", "cup", "teacup", "beaker", "saucer"),
    ),
    (
        ("Kitchen & Dining", "Baking"),
        ("cake", "baking", "cupcake", "cases", "cookie cutter", "mould", "apron", "oven glove"),
    ),
    (
        ("Kitchen & Dining", "Tableware"),
        (
            "plate",
            "bowl",
            "napkin",
            "jug",
            "teapot",
            "tea towel",
            "cutlery",
            "spoon",
            "tray",
            "doily",
            "coaster",
            "placemat",
            "bottle",
            "lunch box",
            "egg cup",
            "glass",
        ),
    ),
    (
        ("Bags & Accessories", "Bags"),
        ("bag", "shopper", "tote", "purse", "backpack", "rucksack", "wallet"),
    ),
    (
        ("Bags & Accessories", "Jewellery"),
        (
            "necklace",
            "bracelet",
            "earrings",
            "ring",
            "brooch",
            "charm",
            "hair",
            "diamante",
            "bangle",
        ),
    ),
    (
        ("Stationery", "Cards & Wrap"),
        ("card", "postcard", "wrap", "gift tag", "tags", "envelope", "ribbon", "tissue"),
    ),
    (
        ("Stationery", "Paper & Pens"),
        (
            "notebook",
            "book",
            "pencil",
            "pen",
            "sticker",
            "paper",
            "journal",
            "calendar",
            "tape",
            "eraser",
            "ruler",
            "stamp",
        ),
    ),
    (
        ("Party",),
        ("party", "bunting", "balloon", "garland", "birthday", "confetti", "straws"),
    ),
    (
        ("Toys & Games",),
        (
            "toy",
            "game",
            "puzzle",
            "doll",
            "marbles",
            "skittles",
            "dominoes",
            "playhouse",
            "spaceboy",
            "kit",
            "jigsaw",
            "ludo",
            "slate",
            "soldier",
            "teddy",
        ),
    ),
    (
        ("Home", "Decor"),
        ("frame", "wall art", "mirror", "clock", "sign", "plaque"),
    ),
    (
        ("Garden",),
        ("garden", "plant", "watering", "bird", "flower pot", "pot", "seed", "herb", "trowel"),
    ),
    (
        ("Home", "Storage"),
        ("box", "tin", "jar", "basket", "drawer", "storage", "case", "hook", "hanger", "rack"),
    ),
    (
        ("Home", "Decor"),
        (
            "sign",
            "heart",
            "frame",
            "ornament",
            "decoration",
            "wreath",
            "clock",
            "mirror",
            "doormat",
            "vase",
            "plaque",
            "bell",
            "bunny",
            "chalkboard",
            "magnet",
            "cabinet",
            "picture",
            "hanging",
        ),
    ),
)
FALLBACK_CATEGORY: tuple[str, ...] = ("Gifts & Other",)

_SMALL_WORDS = frozenset({"a", "an", "and", "as", "at", "for", "in", "of", "on", "or", "the", "to"})
_KEEP_UPPER = frozenset({"LED", "USB", "UK", "CD", "DVD", "DIY", "TV", "PC"})
_WORD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_T = TypeVar("_T")


@dataclass
class LoadSummary:
    """What a load did: rows read, codes skipped (not products) or unsold, rows written."""

    path: str
    rows: int = 0
    skipped_rows: int = 0
    stock_codes: int = 0
    skipped_codes: list[str] = field(default_factory=list)
    unsold_codes: list[str] = field(default_factory=list)
    categories_created: int = 0
    products_created: int = 0
    products_existing: int = 0
    units_stocked: int = 0

    @property
    def changed(self) -> bool:
        """Whether anything was written."""
        return bool(self.categories_created or self.products_created)


@dataclass
class SampleItem:
    """One sellable stock code of the sample, aggregated."""

    sku: str
    name: str
    price: Decimal
    units_sold: int
    category_path: tuple[str, ...]


def default_sample_path() -> Path:
    """The committed sample: ``$CARTWISE_SAMPLE_PATH``, else found above this file or the cwd."""
    override = os.environ.get(SAMPLE_ENV)
    if override:
        return _resolve(Path(override))
    starts = [Path(__file__).resolve().parent, Path.cwd().resolve()]
    for start in starts:
        for folder in (start, *start.parents):
            candidate = folder / SAMPLE_DIR / SAMPLE_FILE
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"the sample {SAMPLE_DIR / SAMPLE_FILE} was not found; set {SAMPLE_ENV} to its path"
    )


def _resolve(path: Path) -> Path:
    if path.is_dir():
        found = sorted(path.glob("*.csv.gz")) or sorted(path.glob("*.csv"))
        if not found:
            raise FileNotFoundError(f"no .csv or .csv.gz file in {path}")
        return found[0]
    if not path.is_file():
        raise FileNotFoundError(f"sample not found: {path}")
    return path


def nice_name(description: str) -> str:
    """Title-case an upper-case description: small words lower, units and acronyms kept."""
    words = description.split()
    out: list[str] = []
    for i, word in enumerate(words):
        upper = word.upper()
        if upper in _KEEP_UPPER:
            out.append(upper)
        elif any(ch.isdigit() for ch in word):
            out.append(re.sub(r"[^\-/]+", lambda m: _cap_unit(m.group(0)), word))
        elif i > 0 and word.lower() in _SMALL_WORDS:
            out.append(word.lower())
        else:
            out.append(_cap(word))
    return " ".join(out)


def _cap_unit(part: str) -> str:
    # Units and counts: "250G" -> "250g", "60CM" -> "60cm", "SET" -> "Set", "3D" stays.
    if re.fullmatch(r"\d+D", part.upper()):
        return part.upper()
    lower = part.lower()
    return lower[:1].upper() + lower[1:] if lower[:1].isalpha() else lower


def _cap(word: str) -> str:
    # Capitalise each part split by "-" or "/" but not after an apostrophe ("Girl's").
    def cap_part(part: str) -> str:
        lower = part.lower()
        first = next((i for i, ch in enumerate(lower) if ch.isalpha()), None)
        if first is None:
            return lower
        return lower[:first] + lower[first].upper() + lower[first + 1 :]

    return re.sub(r"[^\-/]+", lambda m: cap_part(m.group(0)), word)


def slugify(text: str) -> str:
    """A URL slug of lower-case ASCII words joined by hyphens."""
    words = re.findall(r"[a-z0-9]+", text.lower().replace("&", " and "))
    return "-".join(words) or "item"


def categorize(name: str) -> tuple[str, ...]:
    """The category path of a product name, by the first matching keyword rule."""
    text = " " + " ".join(_WORD.findall(name.lower())) + " "
    for path, keywords in CATEGORY_RULES:
        for keyword in keywords:
            if re.search(rf"(?<![a-z0-9-]){re.escape(keyword)}(?:s|es)?(?![a-z0-9-])", text):
                return path
    return FALLBACK_CATEGORY


def starting_stock(units_sold: int) -> int:
    """Deterministic starting stock: the sample's sales rounded up to tens, within 20..1000."""
    return min(1000, max(20, -(-units_sold // 10) * 10))


def is_product_code(code: str) -> bool:
    """False for postage, fees, discounts, adjustments, vouchers and malformed codes."""
    upper = code.strip().upper()
    if not upper or upper in NON_PRODUCT_CODES or upper.startswith(NON_PRODUCT_PREFIXES):
        return False
    return bool(_SKU_OK.match(code.strip())) and any(ch.isdigit() for ch in upper)


def _rows(path: Path) -> Iterator[dict[str, str]]:
    with (
        gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as raw,
        io.TextIOWrapper(raw, encoding="utf-8", newline="") as fh,
    ):
        yield from csv.DictReader(fh)


def read_sample(path: Path, summary: LoadSummary | None = None) -> list[SampleItem]:
    """Aggregate the sample's rows into one item per sellable stock code, sorted by SKU."""
    summary = summary or LoadSummary(path=str(path))
    names: dict[str, Counter[str]] = defaultdict(Counter)
    prices: dict[str, list[Decimal]] = defaultdict(list)
    sold: Counter[str] = Counter()
    seen: set[str] = set()
    skipped: set[str] = set()
    for row in _rows(path):
        summary.rows += 1
        code = (row.get("StockCode") or "").strip()
        seen.add(code)
        if not is_product_code(code):
            skipped.add(code)
            summary.skipped_rows += 1
            continue
        try:
            quantity = int(float(row.get("Quantity") or "0"))
            price = Decimal((row.get("UnitPrice") or "0").strip())
        except (ValueError, InvalidOperation):
            summary.skipped_rows += 1
            continue
        invoice = (row.get("InvoiceNo") or "").strip().upper()
        # Cancellations ("C..."), returns and zero-price adjustments carry no sale.
        if invoice.startswith("C") or quantity <= 0 or price <= 0:
            summary.skipped_rows += 1
            continue
        description = " ".join((row.get("Description") or "").split())
        if description:
            names[code][description] += 1
        prices[code].append(price)
        sold[code] += quantity

    items: list[SampleItem] = []
    unsold = {code for code in seen if code not in skipped and code not in prices}
    for code in sorted(prices):
        median = quantize(Decimal(statistics.median(prices[code])))
        if median <= 0 or not names[code]:
            unsold.add(code)
            continue
        # Most frequent description; ties broken alphabetically for determinism.
        description = min(names[code].items(), key=lambda kv: (-kv[1], kv[0]))[0]
        name = nice_name(description)[:200]
        items.append(
            SampleItem(
                sku=code,
                name=name,
                price=median,
                units_sold=sold[code],
                category_path=categorize(name),
            )
        )
    summary.stock_codes = len(seen)
    summary.skipped_codes = sorted(skipped)
    summary.unsold_codes = sorted(unsold)
    return items


def ensure_categories(
    session: Session, paths: set[tuple[str, ...]], summary: LoadSummary
) -> dict[tuple[str, ...], int]:
    """The id of every category path, creating the missing ones (shared with the importer)."""
    wanted: dict[tuple[str, ...], str] = {}
    for path in paths:
        for depth in range(1, len(path) + 1):
            prefix = path[:depth]
            wanted[prefix] = slugify("-".join(prefix))
    existing = {
        c.slug: c
        for c in session.exec(select(Category).where(col(Category.slug).in_(wanted.values())))
    }
    ids: dict[tuple[str, ...], int] = {}
    for prefix in sorted(wanted, key=len):
        slug = wanted[prefix]
        category = existing.get(slug)
        if category is None:
            parent_id = ids[prefix[:-1]] if len(prefix) > 1 else None
            category = Category(
                name=prefix[-1],
                slug=slug,
                description=f"{' > '.join(prefix)} (from the UCI Online Retail sample)",
                parent_id=parent_id,
            )
            session.add(category)
            session.flush()
            summary.categories_created += 1
        assert category.id is not None
        ids[prefix] = category.id
    return ids


def load_sample(
    *,
    session: Session,
    path: Path | str | None = None,
    stock: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LoadSummary:
    """Load the sample's products, variants, categories and stock; a second run changes nothing.

    ``stock`` fixes every new SKU's starting stock; by default it is derived from the units
    sold in the sample. ``progress(done, total)`` is called as products are written. Commits.
    """
    sample = _resolve(Path(path)) if path is not None else default_sample_path()
    summary = LoadSummary(path=str(sample))
    items = read_sample(sample, summary)

    skus = [item.sku for item in items]
    existing_skus: set[str] = set()
    for chunk in _chunks(skus, 500):
        existing_skus.update(session.exec(select(Variant.sku).where(col(Variant.sku).in_(chunk))))
    new_items = [item for item in items if item.sku not in existing_skus]
    summary.products_existing = len(items) - len(new_items)
    if not new_items:
        if progress:
            progress(len(items), len(items))
        return summary

    try:
        category_ids = ensure_categories(
            session, {item.category_path for item in new_items}, summary
        )
        slugs = {item.sku: f"{slugify(item.name)}-{item.sku.lower()}" for item in new_items}
        taken: set[str] = set()
        for chunk in _chunks(list(slugs.values()), 500):
            taken.update(session.exec(select(Product.slug).where(col(Product.slug).in_(chunk))))

        done = summary.products_existing
        for batch in _chunks(new_items, 200):
            products: list[Product] = []
            for item in batch:
                slug = free_slug(slugs[item.sku], taken)
                products.append(
                    Product(
                        name=item.name,
                        slug=slug,
                        description=(
                            f"{item.name}. Stock code {item.sku} of the UCI Online Retail "
                            "sample (CC BY 4.0)."
                        ),
                        category_id=category_ids[item.category_path],
                        status=ProductStatus.active,
                    )
                )
            session.add_all(products)
            session.flush()
            variants = []
            for item, product in zip(batch, products, strict=True):
                assert product.id is not None
                variants.append(
                    Variant(
                        product_id=product.id,
                        sku=item.sku,
                        attributes={"stock_code": item.sku},
                        price=item.price,
                        currency=CURRENCY,
                    )
                )
            session.add_all(variants)
            session.flush()
            for item in batch:
                on_hand = stock if stock is not None else starting_stock(item.units_sold)
                ensure_stock_row(session=session, sku=item.sku, on_hand=on_hand)
                summary.units_stocked += on_hand
            summary.products_created += len(batch)
            done += len(batch)
            if progress:
                progress(done, len(items))
        # An app on this engine in this process drops its cached listing on commit; other
        # processes are told by the caller (the CLI bumps the Redis cache version).
        mark_dirty(session)
        session.commit()
    except Exception:
        session.rollback()
        raise
    return summary


def free_slug(slug: str, taken: set[str]) -> str:
    """``slug``, or ``slug-2``, ``slug-3``… if taken; records the one it returns."""
    candidate, n = slug, 2
    while candidate in taken:
        candidate = f"{slug}-{n}"
        n += 1
    taken.add(candidate)
    return candidate


def _chunks(values: list[_T], size: int) -> Iterator[list[_T]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]
