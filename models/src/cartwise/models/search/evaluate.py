"""Search quality: the gate's holdout (MRR@10 on recent clicks) and the typo benchmark.

**Holdout** (:func:`holdout`): the last :data:`~.train.HOLDOUT_DAYS` days of events, which
:func:`~.tune.run` never trains on. Each search followed by clicks is one query; its clicked
products are the relevant ones; the score is MRR@10 (and NDCG@10) of the loaded predictor's
full stack (spelling → hybrid retrieval → learned ranker).

**Benchmark** (:func:`benchmark`, for ``bench/quality.py``): misspelled queries against their
target products, every retrieval stack measured in the same run, on

(a) a generated shop: the shopper queries with typos and their correctly spelled twins, read
    back from its search events (a search names the product listed first; the generator makes
    three clean queries per product and the same three with one typo each); relevant = every
    product whose name contains the clean query as a phrase;
(b) the Online Retail catalog: queries of 1-3 consecutive words of a product's name with one
    typo (deletion, transposition, keyboard substitution or insertion), deterministic for the
    seed; relevant = every product with the identical name.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cartwise.models import areas
from cartwise.models.report import Row, Section
from cartwise.models.search.data import (
    Catalog,
    catalog_from_source,
    normalize_query,
    product_stats,
    search_sessions,
    stats_matrix,
)
from cartwise.models.search.predict import SearchPredictor
from cartwise.models.search.train import (
    RankLists,
    attach,
    build_lists,
    holdout_window,
    prepare,
    train,
)
from cartwise.models.settings import ModelSettings
from cartwise.models.source import Source

Progress = Callable[[str, int, int], None]
K = 10
METRICS = ["mrr_at_10", "ndcg_at_10", "recall_at_10"]
# Keyboard neighbours for substitution typos (QWERTY).
_NEAR = {
    "a": "qsz", "b": "vgn", "c": "xdv", "d": "sfe", "e": "wrd", "f": "dgr", "g": "fht",
    "h": "gjy", "i": "uok", "j": "hku", "k": "jli", "l": "kop", "m": "nj", "n": "bmh",
    "o": "ipl", "p": "ol", "q": "wa", "r": "etf", "s": "adw", "t": "ryg", "u": "yij",
    "v": "cbf", "w": "qes", "x": "zcs", "y": "tuh", "z": "xa",
}  # fmt: skip
GOAL = "misspelled: full stack MRR@10 ≥ 1.4 x BM25 as typed, and ≥ 0.9 x itself spelled right"
RANKER_CONFIG: dict[str, Any] = {"hidden": 32, "lr": 0.01, "epochs": 12}


# ---------------------------------------------------------------------- metrics


def ranking_metrics(
    ranked: Sequence[Sequence[int]], relevant: Sequence[set[int]], k: int = K
) -> dict[str, float]:
    """Mean MRR@k, NDCG@k and Recall@k of ranked id lists against relevant id sets."""
    rr, ndcg, recall = [], [], []
    for items, rel in zip(ranked, relevant, strict=True):
        top = list(items)[:k]
        hits = [1.0 if i in rel else 0.0 for i in top]
        first = next((r for r, h in enumerate(hits, start=1) if h), 0)
        rr.append(1.0 / first if first else 0.0)
        dcg = sum(h / math.log2(r + 1) for r, h in enumerate(hits, start=1))
        ideal = sum(1.0 / math.log2(r + 1) for r in range(1, min(len(rel), k) + 1))
        ndcg.append(dcg / ideal if ideal > 0 else 0.0)
        recall.append(sum(hits) / min(len(rel), k) if rel else 0.0)
    n = max(len(rr), 1)
    return {"mrr_at_10": sum(rr) / n, "ndcg_at_10": sum(ndcg) / n, "recall_at_10": sum(recall) / n}


# ---------------------------------------------------------------------- the gate's holdout


def holdout(source: Source, *, settings: ModelSettings | None = None) -> areas.Holdout:
    """MRR@10 of a loaded search model on the searches (with clicks) of the last two weeks."""
    start, end = holdout_window(source)
    sessions = search_sessions(source, start=start, end=end)
    sessions = sessions[sessions["clicked"].str.len() > 0].reset_index(drop=True)
    if sessions.empty:
        raise ValueError(f"no searches with clicks between {start.date()} and {end.date()}")
    queries = [str(q) for q in sessions["query"]]
    relevant = [set(int(p) for p in c) for c in sessions["clicked"]]

    def evaluate(loaded: Any) -> dict[str, float]:
        predictor = loaded.predictor
        results = predictor.search_batch(queries, K)
        metrics = ranking_metrics([r.items for r in results], relevant)
        return {**metrics, "searches": float(len(queries))}

    window = f"{start.date()}/{(end - pd.Timedelta(days=1)).date()}"
    return areas.Holdout(evaluate=evaluate, window=window)


# ---------------------------------------------------------------------- typo benchmark


def typo(text: str, rng: np.random.Generator) -> str:
    """One typing slip in one word of ≥ 4 letters (never its first letter)."""
    words = text.split(" ")
    choices = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not choices:
        return text
    w = int(choices[int(rng.integers(len(choices)))])
    word = words[w]
    i = int(rng.integers(1, len(word)))
    kind = int(rng.integers(4))
    if kind == 0 and i + 1 < len(word):  # transposition
        word = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    elif kind <= 1:  # deletion (also stands in for a transposition at the last letter)
        word = word[:i] + word[i + 1 :]
    elif kind == 2:  # insertion of a keyboard neighbour
        near = _NEAR.get(word[i], "e")
        word = word[:i] + near[int(rng.integers(len(near)))] + word[i:]
    else:  # substitution by a keyboard neighbour
        near = _NEAR.get(word[i], "e")
        word = word[:i] + near[int(rng.integers(len(near)))] + word[i + 1 :]
    words[w] = word
    return " ".join(words)


def name_queries(
    catalog: Catalog, products: np.ndarray, seed: int
) -> tuple[list[str], list[str], list[set[int]]]:
    """Clean queries (1-3 consecutive name words), their typo twins and relevant id sets."""
    rng = np.random.default_rng(seed)
    by_name: dict[str, set[int]] = {}
    for pid, name in zip(catalog.product_ids.tolist(), catalog.names, strict=True):
        by_name.setdefault(normalize_query(name), set()).add(int(pid))
    clean, typos, relevant = [], [], []
    for i in products:
        name = normalize_query(catalog.names[int(i)])
        words = [w for w in name.split() if w.isalpha() and len(w) >= 3]
        if not words:
            continue
        n = int(rng.integers(1, min(3, len(words)) + 1))
        first = int(rng.integers(0, len(words) - n + 1))
        query = " ".join(words[first : first + n])
        slipped = typo(query, rng)
        if slipped == query:
            continue
        clean.append(query)
        typos.append(slipped)
        relevant.append(by_name[name])
    return clean, typos, relevant


def synth_queries(source: Source, catalog: Catalog) -> tuple[list[str], list[str], list[set[int]]]:
    """(typo, clean, relevant) triples read back from a generated shop's search events."""
    from rapidfuzz.distance import OSA

    sessions = search_sessions(source)
    sessions = sessions[sessions["lead"] >= 0]
    names = {
        int(p): normalize_query(n) for p, n in zip(catalog.product_ids, catalog.names, strict=True)
    }
    pairs = sessions.assign(key=[normalize_query(q) for q in sessions["query"]])
    by_lead = pairs.groupby("lead")["key"].agg(lambda s: sorted(set(s)))
    found: dict[str, str] = {}
    for lead, queries in by_lead.items():
        name = f" {names.get(int(lead), '')} "
        clean = [q for q in queries if f" {q} " in name]
        for q in queries:
            if q in clean or q in found:
                continue
            twins = [c for c in clean if OSA.distance(q, c) == 1]
            if len(twins) == 1:
                found[q] = twins[0]
    typos = sorted(found)
    cleans = [found[t] for t in typos]
    relevant = [{p for p, n in names.items() if f" {c} " in f" {n} "} for c in cleans]
    return typos, cleans, relevant


def _rows(
    predictor: SearchPredictor,
    typos: list[str],
    clean: list[str],
    relevant: list[set[int]],
    ranked: bool,
) -> list[Row]:
    """Every stack on the misspelled queries, and BM25 and the full stack spelled right."""
    plans: list[tuple[str, list[str], str, bool, bool, str]] = [
        ("BM25 (as typed)", typos, "bm25", False, True, "misspelled"),
        ("MiniLM semantic (as typed)", typos, "semantic", False, True, "misspelled"),
        ("BM25 + spelling", typos, "bm25", True, False, "misspelled"),
        ("hybrid BM25+MiniLM (RRF) + spelling", typos, "hybrid", True, False, "misspelled"),
    ]
    if ranked:
        plans.append(
            ("hybrid + learned ranker + spelling", typos, "ranked", True, False, "misspelled")
        )
    full = "ranked" if ranked else "hybrid"
    plans += [
        (
            "BM25, spelled right",
            clean,
            "bm25",
            False,
            False,
            "reference: the same queries spelled right",
        ),
        (
            "full stack, spelled right",
            clean,
            full,
            True,
            False,
            "reference: the same queries spelled right",
        ),
    ]
    rows = []
    for name, queries, mode, spell, baseline, note in plans:
        started = time.perf_counter()
        results = predictor.search_batch(queries, K, mode=mode, spell=spell)
        seconds = time.perf_counter() - started
        metrics = ranking_metrics([r.items for r in results], relevant)
        metrics["ms_per_query"] = 1000 * seconds / max(len(queries), 1)
        rows.append(Row(name, metrics, baseline=baseline, note=note, seconds=seconds))
    return rows


def _goal(section: Section, subject: str, clean_subject: str) -> tuple[bool, list[str]]:
    full = section.row(subject).metrics["mrr_at_10"]
    bm25 = section.row("BM25 (as typed)").metrics["mrr_at_10"]
    right = section.row(clean_subject).metrics["mrr_at_10"]
    ratio = full / bm25 if bm25 > 0 else math.inf
    kept = full / right if right > 0 else math.nan
    met = ratio >= 1.4 and kept >= 0.9
    return met, [
        f"Misspelled: full stack MRR@10 {full:.4f} = {ratio:.2f} x BM25 as typed ({bm25:.4f}); "
        f"goal ≥ 1.4 x.",
        f"Full stack misspelled / spelled right: {full:.4f} / {right:.4f} = {kept:.3f}; "
        f"goal ≥ 0.90 (within 10%).",
    ]


def _speller_accuracy(predictor: SearchPredictor, typos: list[str], clean: list[str]) -> float:
    fixed = sum(
        predictor.speller.correct(t) == normalize_query(c)
        for t, c in zip(typos, clean, strict=True)
    )
    return fixed / max(len(typos), 1)


def _vectors(catalog: Catalog, cache: Path | None) -> np.ndarray:
    """MiniLM vectors of the catalog texts, cached on disk by a hash of the texts."""
    from cartwise.models.text import encode

    texts = catalog.texts()
    digest = hashlib.sha256("\x1f".join(texts).encode()).hexdigest()[:16]
    path = None if cache is None else cache / f"search-minilm-{digest}.npy"
    if path is not None and path.is_file():
        cached: np.ndarray = np.load(path)
        return cached
    vectors = encode(texts)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    return vectors


def _exact_vs_ann(vectors: np.ndarray, seed: int) -> str:
    """Time exact numpy top-100 search against MiniLM's own per-query encoding."""
    from cartwise.models.text import encode

    rng = np.random.default_rng(seed)
    queries = vectors[rng.integers(len(vectors), size=200)] + np.float32(0.01)
    runs = []
    for _ in range(3):  # the fastest of three: the machine is shared, the maths is not
        started = time.perf_counter()
        for q in queries:
            scores = vectors @ q
            np.argpartition(-scores, min(99, len(scores) - 1))[:100]
        runs.append(1000 * (time.perf_counter() - started) / len(queries))
    encode_ms = []
    for i in range(10):
        started = time.perf_counter()
        encode([f"query number {i} {seed}"])
        encode_ms.append(1000 * (time.perf_counter() - started))
    return (
        f"Semantic retrieval is exact: a numpy mat-vec over {len(vectors)} x {vectors.shape[1]} "
        f"float32 vectors plus a top-100 argpartition takes {min(runs):.3f} ms per query, while "
        f"encoding one query with MiniLM takes {float(np.median(encode_ms)):.1f} ms (median). "
        "An ANN index could only shave part of the first number at this catalog size (and no "
        "ANN library is installed), so none is used."
    )


def _suggest_note(predictor: SearchPredictor, seed: int) -> str:
    """Time autocomplete on prefixes (1-8 letters) of product names."""
    rng = np.random.default_rng(seed)
    names = [
        normalize_query(predictor.names[int(i)])
        for i in rng.integers(predictor.n_products, size=500)
    ]
    prefixes = [n[: int(rng.integers(1, 9))] for n in names if n]
    predictor.suggest("a")
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        for p in prefixes:
            predictor.suggest(p, 8)
        runs.append(1e6 * (time.perf_counter() - started) / len(prefixes))
    return (
        f"Autocomplete over {len(predictor.autocomplete)} phrases: {min(runs):.0f} µs per "
        "prefix (mean over name prefixes of 1-8 letters; sorted keys + binary search)."
    )


def synth_section(
    data: Any, *, quick: bool, seed: int, progress: Progress | None = None
) -> Section:
    """(a) The generated shop: misspelled shopper queries against their products."""

    def say(stage: str, done: int, total: int) -> None:
        if progress:
            progress(f"generated shop: {stage}", done, total)

    source: Source = data.synth_source()
    started = time.perf_counter()
    prepared = prepare(source, progress=say)
    train_lists, valid_lists = prepared.lists.split(0.2)
    weights, history = train({**RANKER_CONFIG, "seed": seed}, train_lists, valid_lists)
    predictor = attach(prepared.predictor, weights)
    say("scoring queries", 5, 6)
    typos, clean, relevant = synth_queries(source, _catalog(predictor))
    if quick:
        keep = np.random.default_rng(seed).permutation(len(typos))[:300]
        typos, clean, relevant = ([x[i] for i in sorted(keep)] for x in (typos, clean, relevant))  # type: ignore[assignment]
    rows = _rows(predictor, typos, clean, relevant, ranked=True)
    subject = "hybrid + learned ranker + spelling"
    section = Section(
        key="search-synth",
        title="Search on misspelled queries — generated shop",
        protocol=(
            f"{len(typos)} distinct misspelled shopper queries (one slip each, as the shop "
            "generator makes them) with their correctly spelled twins, read back from the "
            "search events (a search names the product listed first; the twin is the clean "
            "query of the same product at edit distance 1). Relevant: every product whose name "
            "contains the clean query as a phrase. The learned ranker is trained on the "
            f"clicks of the searches before the last {14} days (validation: the last 20% of "
            "them) and reads `search_rank_v1` as of each search. Metrics @10."
        ),
        metrics=[*METRICS, "ms_per_query"],
        primary="mrr_at_10",
        higher_is_better=True,
        rows=rows,
        subject=subject,
        goal=GOAL,
        data=(
            f"Generated shop (`SynthConfig()` defaults: {predictor.n_products} products, "
            f"{prepared.sessions} searches in the training window {prepared.window})."
        ),
        model_name="search",
    )
    met, notes = _goal(section, subject, "full stack, spelled right")
    section.goal_met = met
    section.notes += notes
    say("scoring the holdout clicks", 6, 6)
    held = _holdout_table(source, predictor)
    section.extra_tables["Holdout: MRR@10 on the last 14 days of search clicks"] = held
    section.notes.append(
        f"Gate holdout ({held[0]['searches']} searches with clicks in the last 14 days, "
        "clicked = relevant), MRR@10: "
        + ", ".join(f"{r['model']} {r['mrr_at_10']:.4f}" for r in held)
        + "."
    )
    bm25 = section.row("BM25 (as typed)").metrics["mrr_at_10"]
    section.notes += [
        f"BM25 as typed already scores {bm25:.3f} here (the generator's queries have two or "
        "three words and one slip, so the other words still match, and every product whose "
        f"name holds the clean phrase counts): no ranking can exceed {1 / max(bm25, 1e-9):.2f} x "
        "BM25, so the 1.4 x goal cannot be met on this data by construction.",
        f"Spelling corrector restores {_speller_accuracy(predictor, typos, clean):.1%} of the "
        "misspelled queries exactly.",
        f"Learned ranker: validation MRR@10 on held-out clicks {history['best']['mrr_at_10']:.4f} "
        f"vs {history['base']['mrr_at_10']:.4f} for the unranked hybrid (RRF order); loss "
        f"{history['loss'][0]:.3f} → {history['loss'][-1]:.3f}.",
        _exact_vs_ann(predictor.vectors, seed),
        f"Ran in {time.perf_counter() - started:.0f} s.",
    ]
    section.limits += [
        "The queries come from the generator's vocabulary (noun, material + noun, collection + "
        "noun); real shoppers type more freely.",
        "The ranker was trained on clicks of the same shop, including earlier searches with "
        "these query strings (the query-click memory is keyed on the corrected query).",
        "The ranker optimises clicks, and the generated shoppers click products they came for "
        "(often not the one their query names): it trades a little of the text relevance "
        "measured here for the click-through the holdout measures.",
    ]
    return section


def _holdout_table(source: Source, predictor: SearchPredictor) -> list[dict[str, Any]]:
    """Every stack on the gate's holdout: searches of the last 14 days, clicked = relevant."""
    start, end = holdout_window(source)
    sessions = search_sessions(source, start=start, end=end)
    sessions = sessions[sessions["clicked"].str.len() > 0]
    queries = [str(q) for q in sessions["query"]]
    relevant = [set(int(p) for p in c) for c in sessions["clicked"]]
    table = []
    for name, mode, spell in (
        ("BM25 (as typed)", "bm25", False),
        ("BM25 + spelling", "bm25", True),
        ("hybrid + spelling", "hybrid", True),
        ("hybrid + learned ranker + spelling", "ranked", True),
    ):
        results = predictor.search_batch(queries, K, mode=mode, spell=spell)
        metrics = ranking_metrics([r.items for r in results], relevant)
        table.append({"model": name, "searches": len(queries), **metrics})
    return table


def _catalog(predictor: SearchPredictor) -> Catalog:
    n = predictor.n_products
    return Catalog(predictor.product_ids, predictor.names, [""] * n, list(predictor.categories))


def online_retail_section(
    data: Any, *, quick: bool, seed: int, progress: Progress | None = None
) -> Section:
    """(b) Online Retail: 1-3 name words with one typo against the product(s) of that name."""

    def say(stage: str, done: int, total: int = 6) -> None:
        if progress:
            progress(f"Online Retail: {stage}", done, total)

    started = time.perf_counter()
    say("loading the catalog", 0)
    source: Source = data.online_retail_source()
    catalog = catalog_from_source(source)
    lines = source.facts("order_lines", columns=["created_at"])
    at = pd.to_datetime(lines["created_at"], utc=True).max().floor("D") + pd.Timedelta(days=1)
    say("search_rank_v1 stats", 1)
    stats = stats_matrix(product_stats(source, catalog.product_ids, [at]), catalog.product_ids)
    say(f"encoding {len(catalog)} products with MiniLM", 2)
    vectors = _vectors(catalog, getattr(data, "cache", None))
    predictor = SearchPredictor.build(catalog, vectors, stats)

    # Products split in two: ranker-training queries from one half, evaluation from the other.
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(catalog))
    half = len(order) // 2
    n_eval = 300 if quick else 1500
    n_train = 600 if quick else 2000
    clean, typos, relevant = name_queries(catalog, order[:half][:n_eval], seed)
    t_clean, t_typos, t_relevant = name_queries(catalog, order[half:][:n_train], seed + 1)
    say("training the ranker on generated queries", 3)
    frame = pd.DataFrame(
        {
            "query": t_clean + t_typos,
            "ts": pd.Timestamp("2011-12-01", tz="UTC"),
            "clicked": [sorted(r) for r in t_relevant + t_relevant],
        }
    )
    lists = build_lists(predictor, frame, relevant=list(frame["clicked"]))
    perm = np.random.default_rng(seed).permutation(len(lists))
    cut = int(len(perm) * 0.8)
    train_lists: RankLists = lists.take(perm[:cut])
    valid_lists: RankLists = lists.take(perm[cut:])
    weights, history = train({**RANKER_CONFIG, "seed": seed}, train_lists, valid_lists)
    attach(predictor, weights)
    say("scoring queries", 4)
    rows = _rows(predictor, typos, clean, relevant, ranked=True)
    subject = "hybrid + learned ranker + spelling"
    section = Section(
        key="search-online-retail",
        title="Search on misspelled queries — Online Retail catalog",
        protocol=(
            f"{len(typos)} queries of 1-3 consecutive words of a product's name (words of ≥ 3 "
            "letters), each with one typo in a word of ≥ 4 letters (deletion, transposition, "
            "keyboard-neighbour substitution or insertion; never the first letter), "
            f"deterministic for seed {seed}. Relevant: every product with the identical name "
            "(the catalog has many near-duplicates). Products are split in two halves: "
            "evaluation queries come from one, the ranker's training queries from the other."
        ),
        metrics=[*METRICS, "ms_per_query"],
        primary="mrr_at_10",
        higher_is_better=True,
        rows=rows,
        subject=subject,
        goal=GOAL,
        data=(
            f"UCI Online Retail (CC BY 4.0) imported as a catalog of {len(catalog)} products "
            "(name, the importer's description, category); popularity and price from "
            f"`search_rank_v1` as of {at.date()}."
        ),
        model_name="search",
    )
    met, notes = _goal(section, subject, "full stack, spelled right")
    section.goal_met = met
    section.notes += notes
    section.notes += [
        f"Spelling corrector restores {_speller_accuracy(predictor, typos, clean):.1%} of the "
        "misspelled queries exactly.",
        "Online Retail has no search or click events, so the ranker here is trained on "
        f"{len(train_lists)} generated name queries (clean and misspelled) from the other half "
        "of the products, labelled with their identically named products; its query-click and "
        "search-CTR features are zero. Ranker validation MRR@10 "
        f"{history['best']['mrr_at_10']:.4f} vs {history['base']['mrr_at_10']:.4f} unranked.",
        _exact_vs_ann(vectors, seed),
        _suggest_note(predictor, seed),
        f"Ran in {time.perf_counter() - started:.0f} s.",
    ]
    section.limits += [
        "Queries are made from product names, so BM25 on correctly spelled queries is strong by "
        "construction; shoppers' own words (synonyms, descriptions) are not tested here.",
        "Many short queries (one word such as 'heart') match hundreds of products while only "
        "identically named ones count as relevant, which caps every row's MRR.",
    ]
    return section


def benchmark(
    data: Any, *, quick: bool = False, seed: int = 0, progress: Progress | None = None
) -> list[Section]:
    """The quality sections: misspelled queries on a generated shop and on Online Retail."""
    return [
        synth_section(data, quick=quick, seed=seed, progress=progress),
        online_retail_section(data, quick=quick, seed=seed, progress=progress),
    ]


__all__ = [
    "benchmark",
    "holdout",
    "name_queries",
    "online_retail_section",
    "ranking_metrics",
    "synth_queries",
    "synth_section",
    "typo",
]
