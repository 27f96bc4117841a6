"""The committed UCI Online Retail sample and the catalog loader built on it."""

from __future__ import annotations

import gzip
import hashlib
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, func, select

from cartwise.commerce.catalog import sample
from cartwise.commerce.catalog.models import Category, Product, ProductStatus, Variant
from cartwise.commerce.inventory.models import MovementReason, StockLevel, StockMovement

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "online_retail_sample" / sample.SAMPLE_FILE
SAMPLE_SHA256 = "4f9cbea12640e4df86d2102248f613a6693d0d46aff68e002663bdec7e9ff3e4"
HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"


def _write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_committed_sample_is_small_attributed_and_unchanged() -> None:
    # One month of rows, small enough to commit (the full data set is 7.8 MB gzipped).
    assert SAMPLE.stat().st_size < 1_500_000
    assert hashlib.sha256(SAMPLE.read_bytes()).hexdigest() == SAMPLE_SHA256
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as fh:
        assert fh.readline().strip() == HEADER
    readme = (SAMPLE.parent / "README.md").read_text()
    for needle in ("CC BY 4.0", "Chen, D., Sain, S.L., Guo, K. (2012)", "10.1057/dbm.2012.17"):
        assert needle in readme
    assert SAMPLE_SHA256 in readme


def test_default_path_is_found_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(sample.SAMPLE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert sample.default_sample_path() == SAMPLE
    monkeypatch.setenv(sample.SAMPLE_ENV, str(SAMPLE.parent))
    assert sample.default_sample_path() == SAMPLE
    monkeypatch.setenv(sample.SAMPLE_ENV, str(tmp_path / "missing.csv.gz"))
    with pytest.raises(FileNotFoundError):
        sample.default_sample_path()


@pytest.mark.parametrize(
    ("description", "name"),
    [
        ("WHITE HANGING HEART T-LIGHT HOLDER", "White Hanging Heart T-Light Holder"),
        ("SET/6 RED SPOTTY PAPER CUPS", "Set/6 Red Spotty Paper Cups"),
        ("BAG 250g SWIRLY MARBLES", "Bag 250g Swirly Marbles"),
        ("DOLLY GIRL'S BEAKER", "Dolly Girl's Beaker"),
        ("PACK OF 72 RETROSPOT CAKE CASES", "Pack of 72 Retrospot Cake Cases"),
        ("3D TRADITIONAL CHRISTMAS STICKERS", "3D Traditional Christmas Stickers"),
        ("LED TEA LIGHTS", "LED Tea Lights"),
    ],
)
def test_names_are_title_cased_nicely(description: str, name: str) -> None:
    assert sample.nice_name(description) == name


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("Paper Chain Kit 50's Christmas", ("Christmas",)),
        ("White Hanging Heart T-Light Holder", ("Home", "Candles & Lights")),
        ("Jumbo Bag Red Retrospot", ("Bags & Accessories", "Bags")),
        ("Dolly Girl Lunch Box", ("Kitchen & Dining", "Tableware")),
        ("Set of 3 Cake Tins Pantry Design", ("Kitchen & Dining", "Baking")),
        ("Pink Cherry Lights", ("Home", "Candles & Lights")),
        ("Home Sweet Home Mug", ("Kitchen & Dining", "Mugs & Cups")),
        ("Spring Flower Necklace", ("Bags & Accessories", "Jewellery")),
        ("Vintage Tin Sign", ("Home", "Decor")),
        ("Sombrero", sample.FALLBACK_CATEGORY),
    ],
)
def test_categories_come_from_keywords(name: str, path: tuple[str, ...]) -> None:
    assert sample.categorize(name) == path


def test_reader_skips_dirt_and_aggregates(tmp_path: Path) -> None:
    csv_path = _write_csv(
        tmp_path / "dirty.csv",
        [
            "1,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2011-11-01 08:00:00,2.55,17850.0,UK",
            "2,85123A,WHITE HANGING HEART T-LIGHT HOLDER,12,2011-11-01 09:00:00,2.95,17850.0,UK",
            "3,85123A,CREAM HANGING HEART T-LIGHT HOLDER,2,2011-11-01 10:00:00,3.25,,UK",
            "C4,85123A,WHITE HANGING HEART T-LIGHT HOLDER,-6,2011-11-01 11:00:00,2.55,17850.0,UK",
            "5,85123A,,-20,2011-11-01 11:00:00,0.0,,UK",
            "6,POST,POSTAGE,3,2011-11-01 12:00:00,18.0,12583.0,France",
            "7,M,Manual,1,2011-11-01 12:00:00,4.0,12583.0,France",
            "8,BANK CHARGES,Bank Charges,1,2011-11-01 12:00:00,15.0,,UK",
            "9,gift_0001_20,Dotcomgiftshop Gift Voucher,1,2011-11-01 12:00:00,17.0,,UK",
            "10,22139,RETROSPOT TEA SET CERAMIC 11 PC,0,2011-11-01 12:00:00,4.95,,UK",
            '11,22140,"BELL, HEART DECORATION",3,2011-11-01 12:00:00,0.0,,UK',
            "12,21212,PACK OF 72 RETROSPOT CAKE CASES,24,2011-11-01 12:00:00,0.55,,UK",
        ],
    )
    summary = sample.LoadSummary(path=str(csv_path))
    items = {item.sku: item for item in sample.read_sample(csv_path, summary)}
    assert set(items) == {"85123A", "21212"}
    heart = items["85123A"]
    assert heart.name == "White Hanging Heart T-Light Holder"  # most frequent description
    assert heart.price == Decimal("2.95")  # median of 2.55, 2.95, 3.25
    assert heart.units_sold == 20
    assert heart.category_path == ("Home", "Candles & Lights")
    assert items["21212"].price == Decimal("0.55")
    assert summary.rows == 12
    assert summary.skipped_codes == ["BANK CHARGES", "M", "POST", "gift_0001_20"]
    assert summary.unsold_codes == ["22139", "22140"]  # no sale at a positive price


def test_starting_stock_is_deterministic_and_bounded() -> None:
    assert sample.starting_stock(0) == 20
    assert sample.starting_stock(37) == 40
    assert sample.starting_stock(100) == 100
    assert sample.starting_stock(50_000) == 1000


def _counts(session: Session) -> tuple[int, ...]:
    session.expire_all()
    return tuple(
        session.exec(select(func.count()).select_from(model)).one()
        for model in (Category, Product, Variant, StockLevel, StockMovement)
    )


def test_load_sample_builds_a_real_catalog_once(client: TestClient, session: Session) -> None:
    # Cache an (empty) listing first: loading must invalidate it.
    assert client.get("/api/v1/products").json()["total"] == 0

    summary = sample.load_sample(session=session)
    assert summary.changed
    assert summary.rows == 84_711
    assert summary.products_created == 2933
    assert summary.products_existing == 0
    assert summary.skipped_codes == [
        "AMAZONFEE", "BANK CHARGES", "C2", "CRUK", "D", "DCGSSGIRL", "DOT", "M", "POST", "S",
    ]  # fmt: skip
    assert len(summary.unsold_codes) == 2963 - 2933 - 10

    categories, products, variants, stock_rows, movements = _counts(session)
    assert (products, variants, stock_rows, movements) == (2933, 2933, 2933, 2933)
    assert categories == summary.categories_created >= 10

    # A tree: children hang under their parents, e.g. Home > Candles & Lights.
    home = session.exec(select(Category).where(Category.slug == "home")).one()
    candles = session.exec(select(Category).where(Category.slug == "home-candles-and-lights")).one()
    assert candles.parent_id == home.id
    assert home.parent_id is None

    variant = session.exec(select(Variant).where(Variant.sku == "85123A")).one()
    product = session.get(Product, variant.product_id)
    assert product is not None
    assert product.name == "White Hanging Heart T-Light Holder"
    assert product.slug == "white-hanging-heart-t-light-holder-85123a"
    assert product.status == ProductStatus.active
    assert product.category_id == candles.id
    assert variant.currency == "GBP"
    assert variant.price == Decimal("2.95")
    level = session.get(StockLevel, "85123A")
    assert level is not None
    assert level.on_hand == 1000
    assert level.reserved == 0
    ledger = session.exec(select(StockMovement).where(StockMovement.sku == "85123A")).one()
    assert ledger.reason == MovementReason.set
    assert ledger.delta_on_hand == 1000

    assert session.exec(select(func.count(func.distinct(Product.slug)))).one() == 2933
    assert session.exec(select(func.min(Variant.price))).one() > 0
    assert session.exec(select(func.min(StockLevel.on_hand))).one() >= 20

    # The public API shows the catalog at once (the cached empty listing was invalidated).
    page = client.get("/api/v1/products", params={"page_size": 5}).json()
    assert page["total"] == 2933
    assert all(item["in_stock"] for item in page["items"])
    in_candles = client.get("/api/v1/products", params={"category": candles.id}).json()
    assert in_candles["total"] > 50

    # A second run changes nothing.
    before = _counts(session)
    again = sample.load_sample(session=session)
    assert not again.changed
    assert again.products_existing == 2933
    assert again.products_created == 0
    assert _counts(session) == before


def test_load_sample_with_fixed_stock_and_existing_skus(session: Session, tmp_path: Path) -> None:
    csv_path = _write_csv(
        tmp_path / "two.csv",
        [
            "1,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2011-11-01 08:00:00,2.55,17850.0,UK",
            "2,21212,PACK OF 72 RETROSPOT CAKE CASES,24,2011-11-01 12:00:00,0.55,,UK",
        ],
    )
    first = sample.load_sample(session=session, path=csv_path, stock=7)
    assert first.products_created == 2
    assert first.units_stocked == 14
    levels = session.exec(select(StockLevel).order_by(col(StockLevel.sku))).all()
    assert [(lv.sku, lv.on_hand) for lv in levels] == [("21212", 7), ("85123A", 7)]

    # A later load adds what is new and leaves existing SKUs (and their stock) untouched.
    more = _write_csv(
        tmp_path / "more.csv",
        [
            "3,85123A,CREAM HANGING HEART T-LIGHT HOLDER,6,2011-11-02 08:00:00,9.99,,UK",
            "4,22139,RETROSPOT TEA SET CERAMIC 11 PC,2,2011-11-02 12:00:00,4.95,,UK",
        ],
    )
    second = sample.load_sample(session=session, path=more, stock=5)
    assert (second.products_existing, second.products_created) == (1, 1)
    session.expire_all()
    heart = session.exec(select(Variant).where(Variant.sku == "85123A")).one()
    assert heart.price == Decimal("2.55")
    level = session.get(StockLevel, "85123A")
    assert level is not None
    assert level.on_hand == 7
    new = session.get(StockLevel, "22139")
    assert new is not None
    assert new.on_hand == 5
