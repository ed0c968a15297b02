"""The table's statistics: known inputs give known intervals, p-values, Holm adjustments and ranks, and the
table shows them (interval in every cell of 2+ seeds, marks after Holm's correction, mean-rank rows, the CSV's
test columns, the plot's error bars)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats

from dabs_rq.io import write_json_atomic
from dabs_rq.results.frame import cell
from dabs_rq.results.records import record_path
from dabs_rq.results.statistics import descending_ranks, direction, holm, t_half_width, t_interval, welch
from dabs_rq.results.table import CSV_COLUMNS, build_table
from tests.markdown_helpers import unpadded

# ------------------------------------------------------------------------------------------ pure functions


def test_t_interval_of_one_two_three():
    """[1, 2, 3]: mean 2, s = 1, t_{0.975, 2} = 4.302652729..., half-width 4.3027 / √3 = 2.4841."""
    t = 4.302652729911275
    low, high = t_interval([1.0, 2.0, 3.0])
    assert low == pytest.approx(2 - t / math.sqrt(3), abs=1e-9) and high == pytest.approx(
        2 + t / math.sqrt(3), abs=1e-9
    )
    assert high - 2 == pytest.approx(2.4841, abs=1e-4)
    assert t_half_width(1.0, 3) == pytest.approx(2.4841377, abs=1e-6)
    # two seeds: t_{0.975, 1} = 12.706, so the interval is ±12.706·s/√2 (wide: 2 seeds say little)
    assert t_half_width(1.0, 2) == pytest.approx(12.706204736 / math.sqrt(2), abs=1e-6)


def test_one_seed_has_no_interval():
    assert all(math.isnan(x) for x in t_interval([5.0]))
    assert math.isnan(t_half_width(float("nan"), 1)) and math.isnan(t_half_width(0.0, 1))


def test_cell_shows_mean_std_interval_and_seeds():
    assert cell(2.0, 1.0, 3) == "2.00 ± 1.00 [-0.48, 4.48] (3)"
    assert cell(10.0, float("nan"), 1) == "10.00 (1)"  # one seed: no spread, no interval
    assert cell(float("nan"), float("nan"), 0) == ""


def test_welch_matches_the_formula_and_scipy():
    a, b = [1.0, 2.0, 3.0, 4.0], [3.0, 5.0, 7.0]
    # by hand: s_a² = 5/3, s_b² = 4, so s_a²/n_a = 5/12, s_b²/n_b = 4/3
    va, vb = 5 / 12, 4 / 3
    t = (2.5 - 5.0) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 2)  # Welch–Satterthwaite
    assert t == pytest.approx(-1.889822365, abs=1e-9) and df == pytest.approx(3.234718826, abs=1e-9)
    result = welch(a, b)
    assert result.t == pytest.approx(t) and result.df == pytest.approx(df)
    assert result.p == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-12)
    reference = stats.ttest_ind(a, b, equal_var=False)
    assert result.p == pytest.approx(reference.pvalue, rel=1e-12) and result.p == pytest.approx(0.148471347, abs=1e-9)
    assert welch(b, a).p == pytest.approx(result.p) and welch(b, a).t == pytest.approx(-t)


def test_welch_is_undefined_for_one_seed_or_no_spread():
    assert math.isnan(welch([1.0], [2.0, 3.0]).p) and math.isnan(welch([1.0, 2.0], [3.0]).p)
    assert math.isnan(welch([1.0, 1.0], [2.0, 2.0]).p)  # identical seeds on both sides: no noise estimate
    # one side without spread is fine: t = (1 - 3) / √(0 + 2/2) = -2, df = 1² / (0 + 1²/1) = 1
    assert welch([1.0, 1.0], [2.0, 4.0]) == pytest.approx((-2.0, 1.0, 2 * stats.t.sf(2.0, 1)))


def test_holm_on_a_known_vector():
    """Sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> max(0.06, 0.04) = 0.06."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1, and monotone
    adjusted = holm([0.01, float("nan"), 0.02])  # NaN: not tested, not counted (m = 2)
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)
    assert holm([]) == []


def test_ranks_are_descending_with_average_ties_and_nan_left_out():
    ranks = descending_ranks([80.0, 90.0, 80.0, float("nan"), 70.0])
    assert ranks[:3] == [2.5, 1.0, 2.5] and math.isnan(ranks[3]) and ranks[4] == 4.0


def test_direction_needs_an_adjusted_p_below_alpha():
    assert direction(1.0, 0.01) == "better" and direction(-1.0, 0.01) == "worse"
    assert direction(1.0, 0.05) == "n.s." and direction(1.0, float("nan")) == ""


# ------------------------------------------------------------------------------------------ in the table

SEEDS = {  # Images / a: every column; Images / b: none with one seed; Text / c: one seed each
    ("Images", "a"): {
        "none": [10.0, 11.0, 12.0],
        "emix": [20.0, 21.0, 22.0],
        "rq": [30.0, 31.0, 33.0],
        "shed": [10.5, 11.5],
        "mae": [12.5, 13.5, 14.5],
    },
    ("Images", "b"): {"none": [50.0], "rq": [60.0, 61.0]},
    ("Text", "c"): {"none": [1.0], "rq": [2.0]},
}


@pytest.fixture
def table(tmp_path):
    results = tmp_path / "results"
    for (domain, dataset), columns in SEEDS.items():
        for algorithm, values in columns.items():
            for seed, value in enumerate(values):
                write_json_atomic(
                    record_path(results, "exp", dataset, algorithm, seed),
                    {
                        "dataset": dataset,
                        "domain": domain,
                        "algorithm": algorithm,
                        "seed": seed,
                        "metric": "accuracy",
                        "value": value,
                    },
                )
    return build_table([results])


def expected_tests() -> dict[tuple[str, str], tuple[float, float]]:
    """(column, baseline) -> (raw p, Holm p) for row a, from scipy's Welch test and Holm's rule applied by hand."""
    row = SEEDS[("Images", "a")]
    pairs = [("emix", "none"), *[(c, b) for b in ("none", "emix") for c in ("rq", "shed", "mae")]]
    raw = [stats.ttest_ind(row[c], row[b], equal_var=False).pvalue for c, b in pairs]
    order = sorted(range(len(raw)), key=lambda i: raw[i])
    adjusted, running = [0.0] * len(raw), 0.0
    for j, i in enumerate(order):  # m = 7 defined tests (row b has one seed of none, row c one seed each)
        running = max(running, min(1.0, (len(raw) - j) * raw[i]))
        adjusted[i] = running
    return {pair: (p, q) for pair, p, q in zip(pairs, raw, adjusted)}


def test_csv_keeps_the_test_raw_and_holm_p_values(table):
    tidy = pd.read_csv(table["csv"])
    assert list(tidy.columns) == CSV_COLUMNS
    assert CSV_COLUMNS[:20] == [
        "experiment",
        "protocol",
        "protocol_fingerprint",
        "domain",
        "dataset",
        "display_name",
        "row",
        "dataset_fingerprint",
        "metric",
        "algorithm",
        "column",
        "algorithm_fingerprint",
        "mean",
        "std",
        "n",
        "synthetic",
        "paper",
        "delta",
        "paper_note",
        "dabs2_readme",
    ]
    cells = tidy.set_index(["dataset", "column"])
    for (column, baseline), (p, q) in expected_tests().items():
        assert cells.loc[("a", column), f"p_vs_{baseline}"] == pytest.approx(p, rel=1e-5)
        assert cells.loc[("a", column), f"p_vs_{baseline}_holm"] == pytest.approx(q, rel=1e-5)
        assert cells.loc[("a", column), "test"] == "welch_t"
    # none against emix is one test, shown on both cells
    assert cells.loc[("a", "none"), "p_vs_emix"] == cells.loc[("a", "emix"), "p_vs_none"]
    assert cells.loc[("a", "none"), "sig_vs_emix"] == "worse" and cells.loc[("a", "emix"), "sig_vs_none"] == "better"
    # mae: raw p = 0.038 < 0.05, but not after Holm's correction over the section's 7 tests
    assert cells.loc[("a", "mae"), "p_vs_none"] < 0.05 < cells.loc[("a", "mae"), "p_vs_none_holm"]
    assert cells.loc[("a", "mae"), "sig_vs_none"] == "n.s." and cells.loc[("a", "mae"), "sig_vs_emix"] == "worse"
    # one seed of none on row b: no test
    assert all(pd.isna(cells.loc[("b", "rq"), c]) for c in ("p_vs_none", "p_vs_none_holm", "sig_vs_none", "test"))
    # the interval's bounds and the row rank (shed and none tie at 11.0: 4.5 each)
    half = 4.302652729911275 / math.sqrt(3)
    assert cells.loc[("a", "none"), "ci_low"] == pytest.approx(11 - half, abs=1e-4)
    assert cells.loc[("a", "none"), "ci_high"] == pytest.approx(11 + half, abs=1e-4)
    assert math.isnan(cells.loc[("b", "none"), "ci_low"])
    assert [cells.loc[("a", c), "rank"] for c in ("rq", "emix", "mae", "shed", "none")] == [1, 2, 3, 4.5, 4.5]


def test_markdown_marks_significant_cells_after_holm(table):
    md = unpadded(table["md"])
    header = next(line for line in md.splitlines() if line.startswith("| Domain"))
    assert header == "| Domain | Dataset | Metric | none | emix | rq | shed | mae |"
    assert (
        "| Images | a | accuracy | 11.00 ± 1.00 [8.52, 13.48] (3) ▼e | 21.00 ± 1.00 [18.52, 23.48] (3) ▲n "
        "| 31.33 ± 1.53 [27.54, 35.13] (3) ▲n▲e | 11.00 ± 0.71 [4.65, 17.35] (2) ▼e "
        "| 13.50 ± 1.00 [11.02, 15.98] (3) ▼e |"
    ) in md
    assert "| Images | b | accuracy | 50.00 (1) |  | 60.50 ± 0.71 [54.15, 66.85] (2) |  |  |" in md  # n = 1: no test
    assert "5 of the 7 tests of this section are significant after Holm's adjustment." in md
    assert "Welch's t-test (`welch_t`" in md and "Holm" in md and "▲n / ▼n" in md


def test_mean_rank_rows_per_domain_and_overall(table):
    md = unpadded(table["md"])
    lines = md.splitlines()
    images = lines.index(
        "| **Images** | **domain mean** |  | **30.50** | **21.00** | **45.92** | **11.00** | **13.50** |"
    )
    assert lines[images + 1] == "| **Images** | **mean rank** |  | 3.25 | 2.00 | 1.00 | 4.50 | 3.00 |"
    assert "| **Text** | **mean rank** |  | 2.00 |  | 1.00 |  |  |" in lines
    # over all rows: none (4.5 + 2 + 2) / 3, rq (1 + 1 + 1) / 3
    assert "| **all domains** | **mean rank** |  | 2.83 | 2.00 | 1.00 | 4.50 | 3.00 |" in lines


def test_plot_error_bars_are_the_interval_half_widths(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    drawn = []
    original = Axes.errorbar
    monkeypatch.setattr(
        Axes,
        "errorbar",
        lambda self, x, y, yerr=None, **kw: (
            drawn.append((list(y), list(yerr))),
            original(self, x, y, yerr=yerr, **kw),
        )[1],
    )
    results = tmp_path / "results"
    for seed, value in enumerate([1.0, 2.0, 3.0]):
        write_json_atomic(
            record_path(results, "exp", "a", "rq", seed),
            {"dataset": "a", "domain": "D", "algorithm": "rq", "seed": seed, "metric": "accuracy", "value": value},
        )
    write_json_atomic(
        record_path(results, "exp", "a", "none", 0),
        {"dataset": "a", "domain": "D", "algorithm": "none", "seed": 0, "metric": "accuracy", "value": 1.0},
    )
    build_table([results])
    assert len(drawn) == 1  # none has one seed: no bar
    ((means, halves),) = drawn
    assert means == [2.0] and halves == [pytest.approx(2.4841377, abs=1e-6)]
