"""The ``cartwise`` command-line tool.

Every heavy import (Ray, FastAPI, SQLAlchemy, the commerce app) happens inside the command that
needs it, so ``cartwise --help`` answers at once.
"""

from __future__ import annotations

import secrets
import string
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from cartwise.platform.settings import Settings

app = typer.Typer(
    name="cartwise",
    help="Cartwise: an ML-first commerce platform.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database migrations (Alembic).", no_args_is_help=True)
users_app = typer.Typer(help="User accounts.", no_args_is_help=True)
catalog_app = typer.Typer(help="The product catalog.", no_args_is_help=True)
orders_app = typer.Typer(help="Orders and stock reservations.", no_args_is_help=True)
data_app = typer.Typer(help="Import outside data into the commerce database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(catalog_app, name="catalog")
app.add_typer(orders_app, name="orders")
app.add_typer(data_app, name="data")
features_app = typer.Typer(help="The Feast feature store.", no_args_is_help=True)
flows_app = typer.Typer(help="Prefect flows.", no_args_is_help=True)
models_app = typer.Typer(
    help="Train (Ray Tune → MLflow), gate and promote the models.", no_args_is_help=True
)
app.add_typer(features_app, name="features")
app.add_typer(flows_app, name="flows")
app.add_typer(models_app, name="models")


class Ingress(StrEnum):
    """How HTTP reaches the Serve replicas."""

    haproxy = "haproxy"
    proxy = "proxy"


HostOpt = Annotated[str, typer.Option(help="Interface to listen on.")]
PortOpt = Annotated[int, typer.Option(min=1, max=65535, help="HTTP port.")]
ReplicasOpt = Annotated[
    int, typer.Option("--replicas", min=1, max=64, help="Replicas of the API deployment.")
]
IngressOpt = Annotated[
    Ingress,
    typer.Option(help="haproxy: HAProxy straight to the replicas; proxy: Serve's Python proxy."),
]
MaxOngoingOpt = Annotated[
    int | None, typer.Option(min=1, help="Concurrent requests per replica (Serve).")
]
DashboardOpt = Annotated[bool, typer.Option(help="Start the Ray dashboard on 127.0.0.1:8265.")]


def _console() -> Any:
    from rich.console import Console

    return Console()


def _settings() -> Settings:
    from cartwise.platform.settings import get_settings

    return get_settings()


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # a malformed URL is reported by the command that uses it
        return url


def generate_password(length: int = 20) -> str:
    """A strong random password (letters and digits, at least one of each kind)."""
    alphabet = string.ascii_letters + string.digits
    while True:
        password = "".join(secrets.choice(alphabet) for _ in range(length))
        if (
            any(c.islower() for c in password)
            and any(c.isupper() for c in password)
            and any(c.isdigit() for c in password)
        ):
            return password


# --------------------------------------------------------------------------- db


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Migrate the database up (to the latest revision by default)."""
    from cartwise.commerce import migrations_api

    settings = _settings()
    url = settings.effective_database_url
    _prepare_sqlite_dir(settings)
    migrations_api.upgrade(url, revision)
    _console().print(
        f"[green]database[/] {_redact(url)} at revision "
        f"[bold]{migrations_api.current(url) or 'base'}[/]"
    )


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision ('base' removes all).")],
) -> None:
    """Migrate the database down to a revision."""
    from cartwise.commerce import migrations_api

    url = _settings().effective_database_url
    migrations_api.downgrade(url, revision)
    _console().print(
        f"[yellow]database[/] {_redact(url)} at revision "
        f"[bold]{migrations_api.current(url) or 'base'}[/]"
    )


@db_app.command("current")
def db_current() -> None:
    """Print the revision the database is at."""
    from cartwise.commerce import migrations_api

    url = _settings().effective_database_url
    typer.echo(migrations_api.current(url) or "base")


def _prepare_sqlite_dir(settings: Settings) -> None:
    url = settings.effective_database_url
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)


# ------------------------------------------------------------------------ users


def _create_admin(email: str | None, password: str | None) -> tuple[str, str, bool]:
    from sqlmodel import Session

    from cartwise.commerce.customers.service import ensure_admin
    from cartwise.platform.db import get_engine

    settings = _settings()
    email = (email or settings.admin_email).strip().lower()
    password = password or generate_password()
    if len(password) < 8:
        raise typer.BadParameter("the password needs at least 8 characters", param_hint="password")
    from pydantic import ValidationError

    with Session(get_engine(settings), expire_on_commit=False) as session:
        try:
            _, created = ensure_admin(session=session, email=email, password=password)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise typer.BadParameter(problems) from exc
    return email, password, created


def _print_credentials(email: str, password: str, created: bool) -> None:
    from rich.panel import Panel

    verb = "created" if created else "updated (role admin, password reset)"
    _console().print(
        Panel.fit(
            f"email:    [bold]{email}[/]\npassword: [bold]{password}[/]",
            title=f"admin {verb}",
            border_style="green",
        )
    )


@users_app.command("create-admin")
def users_create_admin(
    email: Annotated[
        str | None, typer.Option(help="Admin email (default: CARTWISE_ADMIN_EMAIL).")
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(help="Password (default: a generated strong one, printed once)."),
    ] = None,
) -> None:
    """Create an admin, or promote an existing account and reset its password."""
    _print_credentials(*_create_admin(email, password))


@orders_app.command("release-expired")
def orders_release_expired(
    limit: Annotated[int, typer.Option(min=1, help="Most orders to handle in one run.")] = 500,
) -> None:
    """Cancel unpaid orders whose stock reservation expired, giving the units back."""
    from sqlmodel import Session

    from cartwise.commerce.orders.service import expire_pending_orders
    from cartwise.platform.db import get_engine

    with Session(get_engine(_settings()), expire_on_commit=False) as session:
        count = expire_pending_orders(session=session, limit=limit)
    _console().print(f"released the reservations of {count} expired order(s)")


# ---------------------------------------------------------------------- catalog


def _load_sample(path: Path | None, stock: int | None) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.table import Table
    from sqlmodel import Session

    from cartwise.commerce.catalog.sample import load_sample
    from cartwise.platform.db import get_engine

    console = _console()
    settings = _settings()
    started = time.perf_counter()
    with (
        Progress(
            TextColumn("loading sample catalog"),
            BarColumn(),
            MofNCompleteColumn(),
            console=console,
            transient=True,
        ) as progress,
        Session(get_engine(settings), expire_on_commit=False) as session,
    ):
        task = progress.add_task("load", total=None)

        def report(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        summary = load_sample(session=session, path=path, stock=stock, progress=report)
    _bump_catalog_cache(settings)

    table = Table(title="sample catalog", show_header=False, title_justify="left")
    table.add_row("source", summary.path)
    table.add_row("rows read", f"{summary.rows:,} ({summary.skipped_rows:,} skipped)")
    table.add_row("stock codes", f"{summary.stock_codes:,}")
    table.add_row("non-product codes", ", ".join(summary.skipped_codes[:12]) or "-")
    table.add_row("codes without a sale", f"{len(summary.unsold_codes):,}")
    table.add_row("categories created", str(summary.categories_created))
    table.add_row("products created", f"{summary.products_created:,}")
    table.add_row("already present", f"{summary.products_existing:,}")
    table.add_row("units stocked", f"{summary.units_stocked:,}")
    table.add_row("time", f"{time.perf_counter() - started:.1f}s")
    console.print(table)
    console.print(
        "[dim]Data: UCI Online Retail (CC BY 4.0), Chen, Sain & Guo (2012), "
        "doi:10.1057/dbm.2012.17[/]"
    )


def _bump_catalog_cache(settings: Settings) -> None:
    # Running servers cache the public listing in Redis; bump its version so they see the
    # new products at once. (Embedded mode keeps that cache in each server's memory.)
    if not settings.redis_url:
        return
    from cartwise.commerce.catalog.cache import invalidate
    from cartwise.platform.cache import JsonCache, get_redis

    invalidate(JsonCache(get_redis(settings), "cw"))


@catalog_app.command("load-sample")
def catalog_load_sample(
    path: Annotated[
        Path | None,
        typer.Option(
            help="A .csv/.csv.gz in the Online Retail format (default: the committed sample, "
            "or CARTWISE_SAMPLE_PATH)."
        ),
    ] = None,
    stock: Annotated[
        int | None,
        typer.Option(min=0, help="Starting stock of every new SKU (default: from sales)."),
    ] = None,
) -> None:
    """Load the real sample catalog (UCI Online Retail) with stock; safe to run twice."""
    _load_sample(path, stock)


# ------------------------------------------------------------------------- data


@data_app.command("import-online-retail")
def data_import_online_retail(
    path: Annotated[
        Path,
        typer.Argument(
            help="The by-day CSV folder, one .csv/.csv.gz, the .parquet file or the .xlsx.",
        ),
    ],
) -> None:
    """Import UCI Online Retail customers, catalog and orders; safe to run twice."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table
    from sqlmodel import Session

    from cartwise.commerce.importing.online_retail import import_online_retail
    from cartwise.platform.db import get_engine

    console = _console()
    settings = _settings()
    _prepare_sqlite_dir(settings)
    started = time.perf_counter()
    with (
        Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress,
        Session(get_engine(settings), expire_on_commit=False) as session,
    ):
        tasks: dict[str, Any] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        try:
            summary = import_online_retail(session=session, path=path, progress=report)
        except (FileNotFoundError, ValueError) as exc:
            raise typer.BadParameter(str(exc), param_hint="PATH") from exc
    _bump_catalog_cache(settings)

    read = Table(title="read", show_header=False, title_justify="left")
    read.add_row("source", f"{summary.path} ({summary.source_format})")
    read.add_row("rows", f"{summary.rows_read:,}")
    read.add_row("invoices", f"{summary.invoices_read:,}")
    read.add_row("customer ids", f"{summary.customers_read:,}")
    read.add_row("stock codes", f"{summary.stock_codes_read:,}")
    read.add_row("countries", f"{summary.countries_read:,}")
    console.print(read)

    skipped = Table(title="skipped rows", title_justify="left")
    skipped.add_column("why")
    skipped.add_column("rows", justify="right")
    for reason, count in summary.skipped.items():
        skipped.add_row(reason, f"{count:,}")
    if not summary.skipped:
        skipped.add_row("nothing skipped", "0")
    console.print(skipped)
    if summary.non_product_codes:
        codes = ", ".join(summary.non_product_codes[:20])
        more = len(summary.non_product_codes) - 20
        console.print(f"[dim]non-product codes: {codes}{f' (+{more})' if more > 0 else ''}[/]")

    written = Table(title="written", title_justify="left")
    written.add_column("what")
    written.add_column("created", justify="right")
    written.add_column("already present", justify="right")
    written.add_row("categories", f"{summary.categories_created:,}", "-")
    written.add_row(
        "products + variants", f"{summary.products_created:,}", f"{summary.products_existing:,}"
    )
    written.add_row(
        "customers", f"{summary.customers_created:,}", f"{summary.customers_existing:,}"
    )
    written.add_row("orders (delivered)", f"{summary.orders_created:,}", "")
    written.add_row("orders (refunded cancellations)", f"{summary.refunds_created:,}", "")
    written.add_row(
        "orders (either kind)",
        f"{summary.orders_created + summary.refunds_created:,}",
        f"{summary.orders_existing:,}",
    )
    written.add_row("order lines", f"{summary.lines_created:,}", "")
    console.print(written)
    console.print(f"time {time.perf_counter() - started:.1f}s")
    console.print(
        "[dim]Data: UCI Online Retail (CC BY 4.0), Chen, Sain & Guo (2012), "
        "doi:10.1057/dbm.2012.17[/]"
    )


class SynthTarget(StrEnum):
    """Where ``data synth`` writes the shop."""

    db = "db"
    parquet = "parquet"


@data_app.command("synth")
def data_synth(
    customers: Annotated[int, typer.Option(min=1, help="Honest customers.")] = 2000,
    days: Annotated[int, typer.Option(min=1, max=3660, help="Days simulated.")] = 120,
    seed: Annotated[int, typer.Option(min=0, help="Random seed: same seed, same shop.")] = 42,
    start: Annotated[
        str | None, typer.Option(help="First day, YYYY-MM-DD (default: the last is yesterday).")
    ] = None,
    products: Annotated[int, typer.Option(min=1, help="Products in the catalog.")] = 300,
    fraud_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Fraud orders per honest order.")
    ] = 0.02,
    chargeback_rate: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Share of paid fraud orders charged back (3-25 days)."),
    ] = 0.7,
    dispute_rate: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Share of paid honest orders disputed (not fraud)."),
    ] = 0.005,
    to: Annotated[
        SynthTarget, typer.Option(help="db: the commerce database; parquet: the facts layout.")
    ] = SynthTarget.db,
    out: Annotated[
        Path | None,
        typer.Option(help="Parquet facts and/or ground_truth/ folder (default: VAR_DIR/synth)."),
    ] = None,
) -> None:
    """Generate a deterministic living shop with its hidden truth; safe to run twice."""
    from datetime import date

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from cartwise.features.synth import Pricing, SynthConfig, synth

    try:
        first = date.fromisoformat(start) if start else None
    except ValueError as exc:
        raise typer.BadParameter("expected YYYY-MM-DD", param_hint="--start") from exc
    console, settings = _console(), _settings()
    config = SynthConfig(
        customers,
        days,
        seed,
        first,
        products,
        fraud_rate,
        chargeback_rate=chargeback_rate,
        dispute_rate=dispute_rate,
    )
    target = out or settings.var_dir / "synth"
    with Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        tasks: dict[str, Any] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        pricing = Pricing.from_settings(settings)
        if to is SynthTarget.db:
            from sqlmodel import Session

            from cartwise.features.synth.write_db import SynthConflict
            from cartwise.platform.db import get_engine

            _prepare_sqlite_dir(settings)
            with Session(get_engine(settings), expire_on_commit=False) as session:
                try:
                    result = synth(
                        config,
                        to="db",
                        out=target,
                        session=session,
                        pricing=pricing,
                        progress=report,
                    )
                except SynthConflict as exc:
                    raise typer.BadParameter(str(exc), param_hint="--seed") from exc
            _bump_catalog_cache(settings)
        else:
            result = synth(config, to="parquet", out=target, pricing=pricing, progress=report)

    c = result.counts
    table = Table(title=f"synthetic shop (seed {seed})", show_header=False, title_justify="left")
    table.add_row("period", f"{result.config.first_day()} + {days} days")
    table.add_row("customers", f"{customers:,} (+{c['fraud_accounts']:,} fraud accounts)")
    table.add_row("products", f"{c['products']:,} in {c['categories']} categories")
    table.add_row("sessions", f"{c['sessions']:,}")
    table.add_row("events", f"{c['events']:,}")
    table.add_row("orders", f"{c['orders']:,} ({c['order_lines']:,} lines)")
    patterns = ", ".join(f"{k} {v}" for k, v in sorted(c["fraud_orders_by_pattern"].items()))
    table.add_row("fraud orders", f"{c['fraud_orders']:,} ({patterns or 'none'})")
    table.add_row("failed payments", f"{c['failed_payments']:,}")
    table.add_row("returns", f"{c['returns']:,}")
    if to is SynthTarget.db:
        new = ", ".join(f"{k} {v:,}" for k, v in result.written.items())
        table.add_row("inserted", new)
    else:
        table.add_row("parquet", str(result.out))
    table.add_row("ground truth", str(result.truth))
    table.add_row("elapsed", f"{result.elapsed:.1f}s")
    console.print(table)


# ------------------------------------------------------------------------ serve


def _replica_overrides(settings: Settings) -> dict[str, Any]:
    # Replicas run in other processes, possibly in another working directory: pin every
    # relative path to an absolute one so they open the same SQLite file and media folder.
    overrides: dict[str, Any] = {"var_dir": str(settings.var_dir.resolve())}
    if settings.storage_local_path is not None:
        overrides["storage_local_path"] = str(settings.storage_local_path.resolve())
    if settings.database_url.startswith("sqlite:///"):
        path = settings.database_url.removeprefix("sqlite:///")
        if path and path != ":memory:" and not Path(path).is_absolute():
            overrides["database_url"] = f"sqlite:///{Path(path).resolve()}"
    return overrides


def _serve_panel_lines(
    base: str,
    *,
    dashboard_url: str | None,
    tracking_uri: str,
    flows_lines: list[str] | None = None,
) -> list[str]:
    """What ``cartwise serve``/``demo`` print once the app answers: URLs and first calls."""
    import shlex

    lines = [
        f"API            {base}/api/v1/products",
        f"API docs       {base}/docs",
        f"health         {base}/readyz",
    ]
    if dashboard_url:
        # The Serve tab lists the deployments (CommerceAPI and the five models) and replicas.
        lines.append(f"Ray dashboard  {dashboard_url}/#/serve")
        lines.append("               (Ray token auth: paste the token in ~/.ray/auth_token)")
    if tracking_uri.startswith(("http://", "https://")):
        lines.append(f"MLflow UI      {tracking_uri}")
    else:
        # The UI is a separate server; point it at the same store the models were logged to.
        store = shlex.quote(tracking_uri)
        lines.append(f"MLflow UI      mlflow ui --backend-store-uri {store} --port 5000")
    lines += flows_lines or []
    lines += [
        "",
        "try:",
        f"  curl -s '{base}/api/v1/recommendations?context=home&k=5&session_id=demo'",
        f"  curl -s '{base}/api/v1/products/1/similar?k=5'",
        f"  curl -s '{base}/api/v1/search?q=heart&per_page=5'",
        f"  curl -s '{base}/api/v1/search/suggest?q=hea'",
    ]
    return lines


def _serve(
    *,
    host: str,
    port: int,
    replicas: int,
    ingress: Ingress,
    max_ongoing: int | None,
    dashboard: bool,
    flows_lines: list[str] | None = None,
) -> None:
    import os

    console = _console()
    settings = _settings()
    _prepare_sqlite_dir(settings)
    if replicas > 1 and not settings.redis_url:
        console.print(
            "[yellow]warning:[/] without CARTWISE_REDIS_URL each replica keeps its own cache and "
            "rate limits; a write on one replica leaves the others' cached listing stale for up "
            f"to {settings.catalog_cache_seconds}s."
        )
    console.print(f"starting Ray and Serve ({ingress.value} ingress, {replicas} replica(s))...")
    from cartwise.serving.args import AppArgs
    from cartwise.serving.launch import DASHBOARD_PORT, deploy, shutdown, start_ray, wait_http

    args: dict[str, Any] = {
        "num_replicas": replicas,
        "settings": _replica_overrides(settings),
        # Every ingress replica reserves one CPU and the five model deployments one between
        # them (cartwise.serving.args); Ray is told it has at least that many.
        "num_cpus": 1.0,
    }
    if max_ongoing is not None:
        args["max_ongoing_requests"] = max_ongoing
    import signal

    def _stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    start_ray(
        num_cpus=max(os.cpu_count() or 1, replicas + 1),
        dashboard=dashboard,
        ingress=ingress.value,
    )
    # SIGTERM (docker stop, systemd, a supervisor) shuts down as cleanly as Ctrl-C does.
    # Installed after ray.init, which sets a handler of its own that just exits.
    signal.signal(signal.SIGTERM, _stop)
    try:
        deploy(AppArgs.model_validate(args), host=host, port=port)
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
        base = f"http://{shown}:{port}"
        wait_http(f"{base}/healthz")
        from rich.panel import Panel

        from cartwise.models.settings import ModelSettings

        lines = _serve_panel_lines(
            base,
            dashboard_url=f"http://127.0.0.1:{DASHBOARD_PORT}" if dashboard else None,
            tracking_uri=ModelSettings().tracking_uri,
            flows_lines=flows_lines,
        )
        console.print(Panel.fit("\n".join(lines), title="Cartwise is up", border_style="cyan"))
        console.print("[dim]Ctrl-C to stop.[/]")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping...")
    finally:
        shutdown()


@app.command()
def serve(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    replicas: ReplicasOpt = 1,
    ingress: IngressOpt = Ingress.haproxy,
    max_ongoing_requests: MaxOngoingOpt = None,
    dashboard: DashboardOpt = True,
) -> None:
    """Serve the API with Ray Serve on a local Ray (blocks until Ctrl-C)."""
    _serve(
        host=host,
        port=port,
        replicas=replicas,
        ingress=ingress,
        max_ongoing=max_ongoing_requests,
        dashboard=dashboard,
    )


@app.command()
def api(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    reload: Annotated[bool, typer.Option(help="Restart on code changes.")] = False,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve the same API with plain uvicorn (development)."""
    import uvicorn

    _prepare_sqlite_dir(_settings())
    root = Path(__file__).resolve().parents[4]
    reload_dirs = [
        str(root / member / "src") for member in ("platform", "commerce", "features", "serving")
    ]
    uvicorn.run(
        "cartwise.serving.asgi:create_app",
        factory=True,
        host=host,
        port=port,
        reload=reload,
        reload_dirs=[d for d in reload_dirs if Path(d).is_dir()] if reload else None,
        workers=None if reload else workers,
        log_level="warning",
        proxy_headers=False,
    )


@app.command()
def demo(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    replicas: ReplicasOpt = 1,
    ingress: IngressOpt = Ingress.haproxy,
    email: Annotated[str | None, typer.Option(help="Admin email.")] = None,
    password: Annotated[
        str | None, typer.Option(help="Admin password (default: generated).")
    ] = None,
    dashboard: DashboardOpt = True,
    train: Annotated[bool, typer.Option(help="Train and gate the models before serving.")] = True,
    flows: Annotated[
        bool, typer.Option(help="Run a Prefect server and the flows server beside Serve.")
    ] = True,
    prefect_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port of the Prefect server (UI and API).")
    ] = 4200,
) -> None:
    """Migrate, load the catalog and a generated shop, refresh features, train, gate, serve."""
    console = _console()
    # The Prefect server migrates its database on first start (a minute on 2 cores): start it
    # now so it is ready by the time Serve is.
    beside = _FlowsBeside(_settings(), port=prefect_port) if flows else None
    if beside is not None:
        import signal

        def _stop(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        # SIGTERM before Serve is up (Serve sets its own) still stops the children below.
        signal.signal(signal.SIGTERM, _stop)
    try:
        if beside is not None:
            beside.start_server(console)
        _demo_steps(
            console,
            host=host,
            port=port,
            replicas=replicas,
            ingress=ingress,
            email=email,
            password=password,
            dashboard=dashboard,
            train=train,
            beside=beside,
        )
    finally:
        if beside is not None:
            beside.stop(console)


def _demo_steps(
    console: Any,
    *,
    host: str,
    port: int,
    replicas: int,
    ingress: Ingress,
    email: str | None,
    password: str | None,
    dashboard: bool,
    train: bool,
    beside: _FlowsBeside | None,
) -> None:
    steps = 8
    console.rule(f"1/{steps} migrate")
    db_upgrade("head")
    console.rule(f"2/{steps} admin")
    credentials = _create_admin(email, password)
    _print_credentials(*credentials)
    console.rule(f"3/{steps} sample catalog (real Online Retail products)")
    _load_sample(None, None)
    console.rule(f"4/{steps} generated shop: customers, sessions, orders, searches, fraud")
    # Generated, not the real sample's orders: training needs shopper events, search clicks,
    # fraud labels and purchase orders, which the real data lacks; and the real 2011 orders
    # would stretch every daily feature grid across the fifteen years to today.
    data_synth(
        customers=DEMO_SHOP["customers"],
        days=DEMO_SHOP["days"],
        seed=DEMO_SHOP["seed"],
        start=None,
        products=DEMO_SHOP["products"],
        fraud_rate=DEMO_SHOP["fraud_rate"],
        to=SynthTarget.db,
        out=None,
    )
    console.rule(f"5/{steps} features")
    _refresh_features()
    if train:
        console.rule(f"6/{steps} train all five areas (Ray Tune → MLflow, demo budget)")
        models_train("all", budget="demo", tune_samples=None, seed=0)
        console.rule(f"7/{steps} gate: promote challengers that win on the held-out window")
        models_evaluate("all", margin=None)
    else:
        console.rule(f"6-7/{steps} training skipped (--no-train)")
    console.rule(f"8/{steps} serve" + (" + Prefect flows" if beside is not None else ""))
    flows_lines = beside.start_flows(console) if beside is not None else None
    _serve(
        host=host,
        port=port,
        replicas=replicas,
        ingress=ingress,
        max_ongoing=None,
        dashboard=dashboard,
        flows_lines=flows_lines,
    )


class _FlowsBeside:
    """The demo's child processes: a Prefect server (API + UI) and ``cartwise flows serve``.

    Both run in their own process group with logs under ``var/log``; :meth:`stop` ends them
    with SIGINT (the runner pauses its schedules on the way out), then harder if they hang.
    A server that does not come up is reported and the demo goes on serving without flows.
    """

    def __init__(self, settings: Settings, *, host: str = "127.0.0.1", port: int = 4200) -> None:
        import os

        self.settings = settings
        self.var = settings.var_dir.resolve()
        self.logs = self.var / "log"
        self.external = os.environ.get("PREFECT_API_URL", "")
        self.ui_url = f"http://{host}:{port}"
        self.api_url = self.external or f"{self.ui_url}/api"
        self.host, self.port = host, port
        self.procs: list[tuple[str, Any]] = []

    def _env(self) -> dict[str, str]:
        import os

        env = dict(os.environ)
        env.setdefault("PREFECT_HOME", str(self.var / "prefect"))
        # Nothing phones home from the demo.
        env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        env["DO_NOT_TRACK"] = "1"
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Any:
        import subprocess

        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and Prefect's CLI
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs.append((name, proc))
        return proc

    def healthy(self) -> bool:
        """True when the Prefect API answers its health check."""
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as r:  # noqa: S310
                return int(r.status) == 200
        except OSError:
            return False

    def start_server(self, console: Any) -> None:
        """Start ``prefect server start`` unless an API is configured or already answers."""
        import shutil
        import sys

        if self.external or self.healthy():
            return
        prefect = Path(sys.executable).with_name("prefect")
        binary = str(prefect) if prefect.exists() else shutil.which("prefect")
        if binary is None:
            console.print("[yellow]prefect CLI not found: flows will not be served[/]")
            return
        env = self._env()
        env.pop("PREFECT_API_URL", None)
        self._spawn(
            "prefect-server",
            [binary, "server", "start", "--host", self.host, "--port", str(self.port)],
            env,
        )
        console.print(f"[dim]Prefect server starting on {self.ui_url} (log {self.logs})[/]")

    def _wait_healthy(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        server = dict(self.procs).get("prefect-server")
        while time.monotonic() < deadline:
            if self.healthy():
                return True
            if server is not None and server.poll() is not None:
                return False
            time.sleep(1)
        return False

    def start_flows(
        self, console: Any, *, paused: bool = False, only: list[str] | None = None
    ) -> list[str]:
        """Start ``cartwise flows serve`` against the server; the lines the panel shows.

        ``only`` serves just these flows or deployments (``--only``); the demo serves all.
        """
        import sys

        with console.status("waiting for the Prefect server..."):
            up = self._wait_healthy(240)
        if not up:
            self.stop(console)
            console.print(
                f"[yellow]The Prefect server did not start (see {self.logs}/prefect-server.log);"
                " serving without the flows.[/]"
            )
            return [f"Prefect        not running (see {self.logs}/prefect-server.log)"]
        env = self._env()
        env["PREFECT_API_URL"] = self.api_url
        argv = [sys.executable, "-m", "cartwise.pipelines.cli", "flows", "serve"]
        argv += [arg for name in only or () for arg in ("--only", name)]
        self._spawn("flows-serve", [*argv, "--paused"] if paused else argv, env)
        ui = self.ui_url if not self.external else self.api_url.removesuffix("/api")
        if self.settings.mail_backend == "smtp":
            mails = f"SMTP {self.settings.smtp_host}:{self.settings.smtp_port}"
        else:
            mails = f"{self.var / 'mail'}/*.eml (order, shipping, refund mails; fraud alerts)"
        return [
            f"Prefect UI     {ui}/deployments",
            "flows          served by `cartwise flows serve`; `cartwise flows deployments`",
            f"               lists them (log {self.logs}/flows-serve.log)",
            f"run one now    PREFECT_API_URL={self.api_url} cartwise flows run process-outbox",
            f"mails          {mails}",
        ]

    def stop(self, console: Any) -> None:
        """Stop the children, flows server first; each gets SIGINT, then SIGTERM, then KILL."""
        import os
        import signal
        import subprocess

        for name, proc in reversed(self.procs):
            if proc.poll() is not None:
                continue
            console.print(f"[dim]stopping {name}...[/]")
            for sig, grace in ((signal.SIGINT, 20), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self.procs.clear()


# The demo's generated shop: big enough for every area to learn something, small enough that
# generating it, building its features and training all five areas takes minutes on 2 cores.
DEMO_SHOP: dict[str, Any] = {
    "customers": 2000,
    "days": 120,
    "seed": 42,
    "products": 300,
    "fraud_rate": 0.03,
}


# --------------------------------------------------------------------------- features

FullOpt = Annotated[bool, typer.Option("--full", help="Redo everything, not just what is new.")]


def _feature_settings() -> Any:
    from cartwise.features.settings import get_feature_settings

    return get_feature_settings()


def _counts_table(title: str, counts: dict[str, int]) -> Any:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in counts.items():
        table.add_row(name, f"{rows:,}")
    return table


@features_app.command("export")
def features_export(full: FullOpt = False) -> None:
    """Export the commerce facts to Parquet partitioned by date (incremental, idempotent)."""
    from cartwise.features.export import export_facts
    from cartwise.platform.db import get_engine

    settings = _feature_settings()
    console = _console()
    with console.status("exporting commerce facts...") as status:
        summary = export_facts(
            get_engine(settings),
            settings.exports_dir,
            full=full,
            on_table=lambda name, rows: status.update(f"exported {name} ({rows:,} rows)"),
        )
    console.print(_counts_table(f"export → {settings.exports_dir}", summary.rows))
    console.print(_counts_table("dimensions", summary.dimensions))


@features_app.command("build")
def features_build() -> None:
    """Compute the feature tables from the exports (DuckDB)."""
    from cartwise.features.tables import build_feature_tables

    settings = _feature_settings()
    console = _console()
    with console.status("building feature tables..."):
        counts = build_feature_tables(settings.exports_dir, settings.tables_dir)
    console.print(_counts_table(f"feature tables → {settings.tables_dir}", counts))


@features_app.command("apply")
def features_apply(
    force: Annotated[bool, typer.Option(help="Apply even if nothing changed.")] = False,
) -> None:
    """Register the Feast definitions (skipped when they have not changed)."""
    from cartwise.features import store

    applied = store.apply(_feature_settings(), force=force)
    _console().print("[green]applied[/]" if applied else "definitions unchanged: nothing to apply")


@features_app.command("materialize")
def features_materialize(full: FullOpt = False) -> None:
    """Load feature rows newer than the last run into the online store."""
    from cartwise.features import store

    settings = _feature_settings()
    with _console().status(f"materialising into {settings.online_store_kind}..."):
        summary = store.materialize(settings, full=full)
    if summary.skipped:
        _console().print("nothing new to materialise")
    else:
        _console().print(
            _counts_table(f"materialised up to {summary.end:%Y-%m-%d %H:%M}", summary.rows)
        )


def _refresh_features() -> None:
    """Export, build, apply and materialise in this process (the flow without Prefect's API)."""
    features_export(full=False)
    features_build()
    features_apply(force=False)
    features_materialize(full=False)


# --------------------------------------------------------------------------- flows


def _prefect_home() -> None:
    """Keep Prefect's local state under var/ unless the user chose a Prefect home or API."""
    import os

    if not os.environ.get("PREFECT_HOME") and not os.environ.get("PREFECT_API_URL"):
        os.environ["PREFECT_HOME"] = str((_settings().var_dir / "prefect").resolve())
    # The ephemeral API server imports and migrates for ~20-40 s on 2 cores the first time.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


@flows_app.command("list")
def flows_list() -> None:
    """List the flows ``cartwise flows run`` knows."""
    from cartwise.pipelines.flows import FLOWS

    for name, target in FLOWS.items():
        _console().print(f"{name}  [dim]{target}[/]")


def _parse_params(params: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as JSON when they parse (numbers, null, true)."""
    import json

    parsed: dict[str, Any] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected key=value, got {item!r}", param_hint="--param")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


@flows_app.command("run")
def flows_run(
    name: Annotated[str, typer.Argument(help="The flow, e.g. refresh-features.")],
    full: FullOpt = False,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="A flow parameter, key=value (repeatable)."),
    ] = None,
) -> None:
    """Run a flow once, now, in this process (Prefect's ephemeral API unless one is set)."""
    import importlib
    import inspect

    from cartwise.pipelines.flows import FLOWS

    if name not in FLOWS:
        raise typer.BadParameter(f"unknown flow {name!r}; known: {', '.join(FLOWS)}")
    _prefect_home()
    module, function = FLOWS[name].split(":")
    flow = getattr(importlib.import_module(module), function)
    kwargs = _parse_params(param or [])
    accepted = inspect.signature(flow.fn).parameters
    if full:
        kwargs["full"] = True
    unknown = set(kwargs) - set(accepted)
    if unknown:
        takes = ", ".join(accepted) or "no parameters"
        raise typer.BadParameter(f"{name} takes {takes}; not {', '.join(sorted(unknown))}")
    result = flow(**kwargs)
    console = _console()
    if isinstance(result, dict):
        for step, value in result.items():
            if isinstance(value, dict) and all(isinstance(v, int) for v in value.values()):
                console.print(_counts_table(step, value))
            else:
                console.print(f"{step}: {value}")


OnlyOpt = Annotated[
    list[str] | None,
    typer.Option("--only", help="Only these flows or flow/deployment names, e.g. process-outbox."),
]


def _deployment_specs(only: list[str] | None) -> list[Any]:
    from cartwise.pipelines.deployments import select

    try:
        return select(only)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--only") from exc


@flows_app.command("deployments")
def flows_deployments(only: OnlyOpt = None) -> None:
    """List the deployments ``cartwise flows serve`` registers, with their schedules."""
    import json

    from rich.table import Table

    table = Table(title="Prefect deployments (cartwise flows serve)")
    for column in ("deployment", "schedule", "parameters", "what"):
        table.add_column(column)
    for spec in _deployment_specs(only):
        params = json.dumps(spec.parameters) if spec.parameters else ""
        table.add_row(spec.full_name, spec.schedule_text, params, spec.description)
    _console().print(table)


@flows_app.command("outbox")
def flows_outbox(
    requeue: Annotated[
        int | None, typer.Option(min=1, help="Give this event's dead deliveries a new start.")
    ] = None,
) -> None:
    """What process-outbox has left: pending events, failing and dead (given-up) deliveries."""
    from rich.table import Table
    from sqlmodel import Session, col, func, select

    from cartwise.commerce.outbox import delivery
    from cartwise.commerce.outbox.models import DeliveryStatus, OutboxDelivery, OutboxEvent
    from cartwise.platform.db import get_engine

    console = _console()
    with Session(get_engine(_settings()), expire_on_commit=False) as session:
        if requeue is not None:
            revived = delivery.requeue(session=session, event_id=requeue)
            console.print(f"event {requeue}: {revived} dead deliver(ies) queued again")
        pending = session.exec(
            select(func.count()).where(col(OutboxEvent.processed_at).is_(None))
        ).one()
        failing = session.exec(
            select(OutboxDelivery).where(OutboxDelivery.status == DeliveryStatus.failed)
        ).all()
        dead = delivery.dead_letters(session=session)
    console.print(f"pending events: {pending}")
    table = Table(title="deliveries not sent (failed: retried later; dead: gave up)")
    for column in ("event", "channel", "status", "attempts", "next try", "last error"):
        table.add_column(column)
    for row in [*failing, *dead]:
        table.add_row(
            str(row.event_id),
            row.channel,
            str(row.status),
            str(row.attempts),
            f"{row.next_attempt_at:%Y-%m-%d %H:%M:%S}" if row.next_attempt_at else "-",
            (row.last_error or "")[:80],
        )
    console.print(table)


@flows_app.command("serve")
def flows_serve(
    only: OnlyOpt = None,
    paused: Annotated[
        bool, typer.Option("--paused", help="Register with schedules paused (runs on demand).")
    ] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Most flow runs at once.")] = None,
) -> None:
    """Serve every flow as a deployment with its schedule (prefect.serve; blocks until Ctrl-C)."""
    import os
    import signal

    from cartwise.pipelines.deployments import build

    # A parent started in the background may have left SIGINT ignored; the demo stops this
    # process with SIGINT, so make sure it means KeyboardInterrupt here.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    console = _console()
    specs = _deployment_specs(only)
    _prefect_home()
    if not os.environ.get("PREFECT_API_URL"):
        console.print(
            "[yellow]PREFECT_API_URL is not set:[/] serving against a temporary local API that "
            "no UI shows. Start one with `prefect server start` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api (`cartwise demo` does both)."
        )
    with console.status(f"loading {len(specs)} deployment(s)..."):
        built, skipped = build(specs, paused=paused)
    for name, why in skipped.items():
        console.print(f"[yellow]not served[/] {name}: {why}")
    if not built:
        console.print("[red]no deployment could be built[/]")
        raise typer.Exit(1)
    console.print(
        f"serving {len(built)} deployment(s){' (schedules paused)' if paused else ''}; "
        "Ctrl-C to stop"
    )

    from prefect import serve as prefect_serve

    # The runner handles Ctrl-C and SIGTERM itself: it stops polling and, unless told
    # otherwise, pauses the schedules so runs do not pile up while nobody serves them.
    try:
        prefect_serve(*built, limit=limit, print_starting_message=False)
    except KeyboardInterrupt:
        pass
    finally:
        console.print("flows server stopped")


# --------------------------------------------------------------------------- models

AreaArg = Annotated[
    str, typer.Argument(help="recommend, search, customers, demand, fraud, or all.")
]


def _areas(area: str) -> list[str]:
    from cartwise.pipelines.training import resolve_areas

    try:
        return resolve_areas(area)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="AREA") from exc


def _source() -> Any:
    from cartwise.pipelines.training import model_source

    try:
        return model_source()
    except FileNotFoundError as exc:
        _console().print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc


def _metrics_text(metrics: dict[str, float], limit: int = 4) -> str:
    shown = [(k, v) for k, v in metrics.items() if isinstance(v, int | float)][:limit]
    return ", ".join(f"{k} {v:.4g}" for k, v in shown)


@models_app.command("list")
def models_list() -> None:
    """Each area's registered model: champion and challenger versions and their scores."""
    from rich.table import Table

    from cartwise.pipelines.training import describe_versions

    table = Table(title="models (MLflow registry)")
    for column in ("area", "model", "metric", "champion", "challenger"):
        table.add_column(column)
    for row in describe_versions():

        def cell(entry: dict[str, Any] | None) -> str:
            if entry is None:
                return "—"
            return f"v{entry['version']} ({entry['score'] or '?'})"

        table.add_row(
            row["area"], row["model"], row["metric"], cell(row["champion"]), cell(row["challenger"])
        )
    _console().print(table)


@models_app.command("train")
def models_train(
    area: AreaArg,
    budget: Annotated[
        str, typer.Option(help="demo: a couple of short trials; full: the real search.")
    ] = "demo",
    tune_samples: Annotated[
        int | None, typer.Option(min=1, help="Ray Tune trials (default: the budget's).")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed: same seed and data, same metrics.")] = 0,
) -> None:
    """Tune an area's model with Ray Tune, log trials to MLflow, register it as challenger."""
    from rich.table import Table

    from cartwise.models import areas as model_areas

    if budget not in model_areas.BUDGETS:
        raise typer.BadParameter(f"one of {', '.join(model_areas.BUDGETS)}", param_hint="--budget")
    names = _areas(area)
    console = _console()
    source = _source()
    table = Table(title=f"trained (budget {budget}, data {source.data_version()})")
    for column in ("area", "model", "version", "metrics", "seconds"):
        table.add_column(column)
    for index, name in enumerate(names, 1):
        console.rule(f"train {name} ({index}/{len(names)})")
        with console.status(f"{name}: starting") as status:

            def progress(which: str, message: str, status: Any = status) -> None:
                status.update(f"{which}: {message}")
                console.log(f"{which}: {message}")

            trained = model_areas.train(
                name,
                source,
                budget=budget,  # type: ignore[arg-type]
                tune_samples=tune_samples,
                seed=seed,
                progress=progress,
            )
        table.add_row(
            name,
            trained.model_name,
            f"v{trained.version} (challenger)",
            _metrics_text(trained.metrics),
            f"{trained.seconds:.0f}",
        )
    console.print(table)


@models_app.command("evaluate")
def models_evaluate(
    area: AreaArg,
    margin: Annotated[
        float | None,
        typer.Option(min=0.0, help="Required relative improvement (default: settings)."),
    ] = None,
) -> None:
    """Gate: compare challenger with champion on the held-out window; promote if it wins."""
    from rich.table import Table

    from cartwise.models import areas as model_areas

    names = _areas(area)
    console = _console()
    source = _source()
    table = Table(title="gate decisions")
    for column in ("area", "outcome", "challenger", "champion before", "reason"):
        table.add_column(column)
    for name in names:
        with console.status(f"{name}: evaluating challenger and champion"):
            try:
                decision = model_areas.evaluate(name, source, margin=margin)
            except LookupError as exc:
                table.add_row(name, "no challenger", "—", "—", str(exc))
                continue
        style = "green" if decision.promoted else None
        table.add_row(
            name,
            decision.outcome,
            f"v{decision.challenger_version}",
            f"v{decision.champion_version}" if decision.champion_version else "—",
            decision.reason,
            style=style,
        )
    console.print(table)


@models_app.command("promote")
def models_promote(
    area: Annotated[str, typer.Argument(help="The area whose model to promote.")],
    version: Annotated[int, typer.Option(min=1, help="The version to make champion.")],
    reason: Annotated[str, typer.Option(help="Why (recorded with the decision).")],
) -> None:
    """Point champion at a version by hand (a rollback or an override), recording why."""
    from cartwise.models import gate
    from cartwise.models.areas import spec

    try:
        model = spec(area).model_name
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="AREA") from exc
    try:
        decision = gate.promote(model, version, reason=reason)
    except Exception as exc:  # the registry says which version or model is missing
        _console().print(f"[red]cannot promote {model} v{version}: {exc}[/]")
        raise typer.Exit(1) from exc
    before = f"v{decision.champion_version}" if decision.champion_version else "none"
    _console().print(f"{model}: champion is now v{version} (was {before}); reason: {reason}")


def main() -> None:
    """Entry point of the ``cartwise`` script."""
    app()


if __name__ == "__main__":
    main()
