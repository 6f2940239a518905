"""The ablation report on a hand-written sweep folder (results.json files as the run writes them)."""

from __future__ import annotations

import csv
import json

import matplotlib.image as mpimg
import pytest

from unlearning.report import main, pareto, report, swept_params

# job -> (method, lr, forget_quality, model_utility); job 3 fails, job 4 never wrote results.
JOBS = {
    "0": ("ga", "1e-05", 0.10, 0.60),
    "1": ("ga", "0.001", 0.40, 0.30),
    "2": ("npo", "1e-05", 0.30, 0.55),
    "5": ("npo", "0.001", 0.20, 0.20),   # dominated by job 2
}


def make_job(sweep, job, overrides, results=None):
    d = sweep / job
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if results is not None:
        (d / "results.json").write_text(json.dumps(results))
    return d


@pytest.fixture
def sweep(tmp_path):
    s = tmp_path / "sweep"
    for job, (method, lr, fq, mu) in JOBS.items():
        ov = [f"method={method}", f"trainer.lr={lr}", "model=tiny"]
        make_job(s, job, ov, {
            "status": "ok", "overrides": ov, "method": method, "dataset": "tofu", "model": "tiny",
            "metrics": {"forget_quality": fq, "model_utility": mu, "forget_Q_A_Prob": 1 - fq},
            "baselines": {"target": {"forget_quality": 0.01, "model_utility": 0.62},
                          "reference": {"model_utility": 0.6}},
            "objective": fq, "timings": {"total_s": 1.5},
        })
    ov = ["method=npo", "trainer.lr=-1", "model=tiny"]
    make_job(s, "3", ov, {"status": "failed", "error": "UserError: trainer.lr=-1 must be > 0", "overrides": ov,
                          "metrics": {}, "method": "npo"})
    make_job(s, "4", ["method=ga", "trainer.lr=0.01", "model=tiny"])  # crashed: no results.json
    return s


def test_pareto_front():
    pts = [(0.1, 0.6), (0.4, 0.3), (0.3, 0.55), (0.2, 0.2), (0.3, 0.5)]
    assert pareto(pts) == [0, 2, 1]  # sorted by x
    assert pareto([(1.0, 1.0), (1.0, 1.0)]) == [0, 1]  # equal points do not dominate each other


def test_report_files(sweep):
    out = report(sweep)
    assert out["params"] == ["method", "trainer.lr"]  # model=tiny is the same everywhere
    assert out["axes"] == (("forget_quality", True), ("model_utility", True))
    assert out["pareto"] == ["0", "2", "1"]

    with open(sweep / "report.csv", newline="") as f:
        rows = {r["job"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"0", "1", "2", "3", "4", "5"}
    assert rows["3"]["status"] == "failed" and "trainer.lr=-1" in rows["3"]["error"]
    assert rows["4"]["status"] == "missing" and rows["4"]["param:trainer.lr"] == "0.01"
    assert float(rows["1"]["forget_quality"]) == 0.4 and rows["1"]["pareto"] == "True"
    assert rows["5"]["pareto"] == "False"

    md = (sweep / "report.md").read_text()
    assert "6 jobs: 4 ok, 0 diverged, 1 failed, 1 missing" in md
    assert "| 3 | failed | `method=npo trainer.lr=-1 model=tiny` | UserError: trainer.lr=-1 must be > 0 |" in md
    assert "| 4 | missing |" in md
    assert "| target | 0.01 | 0.62 |" in md
    assert "![tradeoff](plots/tradeoff.png)" in md

    names = sorted(p.name for p in out["plots"])
    assert names == ["param_method.png", "param_trainer.lr.png", "tradeoff.png"]
    for p in out["plots"]:
        img = mpimg.imread(p)  # a real PNG that decodes
        assert img.shape[0] > 200 and img.shape[1] > 200


def test_min_direction_changes_front(sweep):
    out = report(sweep, forget="forget_Q_A_Prob:min", utility="model_utility")
    assert out["axes"] == (("forget_Q_A_Prob", False), ("model_utility", True))
    assert out["pareto"] == ["0", "2", "1"]  # job 5 (0.8, 0.2) is dominated by job 2 (0.7, 0.55)


def test_swept_params_counts_key_missing_in_some_jobs():
    rows = [{"overrides": ["a=1", "b=2"]}, {"overrides": ["a=1"]}]
    assert swept_params(rows) == ["b"]


def test_cli(sweep, tmp_path, capsys):
    assert main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "6 jobs (2 failed or missing)" in out and "job 4: missing" in out
    assert main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: sweep folder") and "does not exist" in err[0]
    assert main([str(sweep), "--forget", "forget_quality:up"]) == 2
    assert "must be max or min" in capsys.readouterr().err
    assert main([str(sweep), "--utility", "bleu"]) == 2
    assert "'bleu' is not a metric" in capsys.readouterr().err


def test_plot_ticks_stay_plain_numbers_when_jobs_barely_differ():
    """Two jobs 1e-7 apart: matplotlib's default would label the axis `1e-7+3.5697e-2`; the report's plots do not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from unlearning.report import plain_ticks

    def offset(fix: bool) -> str:
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0.0356970, 0.0356971])
        if fix:
            plain_ticks(ax)
        fig.canvas.draw()
        text = ax.yaxis.get_major_formatter().get_offset()
        plt.close(fig)
        return text

    assert offset(fix=False) != ""  # the default really does use an offset here
    assert offset(fix=True) == ""


def test_seeds_are_grouped_with_mean_and_t_interval(tmp_path):
    """ga at lr 1e-5 over seeds 0, 1, 2 (forget_quality 0.1, 0.2, 0.3), npo at lr 1e-5 over seeds 0, 1 (0.5, 0.7), and
    ga at lr 1e-4 on seed 0 alone (0.9): lr is another swept axis, so that job is a group of its own.
    ga: mean 0.2, s = 0.1, t_0.975 with 2 d.f. = 4.302653, half-width 4.302653 * 0.1 / sqrt(3) = 0.248414;
    npo: mean 0.6, s = 0.141421, t_0.975 with 1 d.f. = 12.706205, half-width 12.706205 * 0.141421 / sqrt(2) = 1.270620;
    one seed: no interval."""
    sweep = tmp_path / "sweep"
    values = [("ga", 0, 0.1, 0.5, "1e-5"), ("ga", 1, 0.2, 0.5, "1e-5"), ("ga", 2, 0.3, 0.5, "1e-5"),
              ("npo", 0, 0.5, 0.4, "1e-5"), ("npo", 1, 0.7, 0.6, "1e-5"), ("ga", 0, 0.9, 0.1, "1e-4")]
    for job, (method, seed, fq, mu, lr) in enumerate(values):
        ov = [f"method={method}", f"seed={seed}", f"trainer.lr={lr}"]
        make_job(sweep, str(job), ov, {"status": "ok", "overrides": ov, "method": method, "metrics":
                                       {"forget_quality": fq, "model_utility": mu}, "baselines": {}})
    out = report(sweep)
    groups = {g["group"]: g for g in out["groups"]}
    assert sorted(groups) == ["method=ga trainer.lr=1e-4", "method=ga trainer.lr=1e-5", "method=npo trainer.lr=1e-5"]
    ga = groups["method=ga trainer.lr=1e-5"]["metrics"]["forget_quality"]
    npo = groups["method=npo trainer.lr=1e-5"]["metrics"]["forget_quality"]
    alone = groups["method=ga trainer.lr=1e-4"]["metrics"]["forget_quality"]
    assert (ga["n"], npo["n"]) == (3, 2) and groups["method=ga trainer.lr=1e-5"]["seeds"] == ["0", "1", "2"]
    assert ga["mean"] == pytest.approx(0.2) and ga["ci95"] == pytest.approx(0.248414, abs=1e-6)
    assert npo["mean"] == pytest.approx(0.6) and npo["ci95"] == pytest.approx(1.270620, abs=1e-6)
    assert (alone["n"], alone["mean"], alone["ci95"]) == (1, 0.9, None)
    assert groups["method=ga trainer.lr=1e-5"]["metrics"]["model_utility"]["ci95"] == pytest.approx(0.0)
    # Pareto on the means: npo (0.6, 0.5) dominates ga at 1e-5 (0.2, 0.5); ga at 1e-4 (0.9, 0.1) is not dominated
    assert sorted(out["group_pareto"]) == ["method=ga trainer.lr=1e-4", "method=npo trainer.lr=1e-5"]
    md = out["md"].read_text()
    assert "## Grouped over seeds" in md and "| method=ga trainer.lr=1e-5 | 0, 1, 2 | 3 | 0.2 ± 0.25 |" in md
    assert (sweep / "plots" / "tradeoff_seeds.png").is_file() and (sweep / "report_seeds.csv").is_file()
    assert "forget_quality:ci95" in (sweep / "report_seeds.csv").read_text().splitlines()[0]


def test_plots_over_seeds_carry_the_t_interval_as_error_bars(tmp_path):
    """The same hand-computed groups as above, in every plot: ga's forget_quality over seeds 0, 1, 2 is 0.2 ± 0.248414
    at the method's point, its bar of forget_Q_A_Prob (the same values) and its curve at step 2; npo's two seeds
    (0.5, 0.7) give 0.6 ± 1.270620; equal values give a zero-width interval."""
    sweep = tmp_path / "sweep"
    values = [("ga", 0, 0.1, 0.5), ("ga", 1, 0.2, 0.5), ("ga", 2, 0.3, 0.5), ("npo", 0, 0.5, 0.4), ("npo", 1, 0.7, 0.6)]
    for job, (method, seed, fq, mu) in enumerate(values):
        ov = [f"method={method}", f"seed={seed}"]
        make_job(sweep, str(job), ov, {
            "status": "ok", "overrides": ov, "method": method, "baselines": {},
            "metrics": {"forget_quality": fq, "model_utility": mu, "forget_Q_A_Prob": fq,
                        "forget_Q_A_Prob@relearn": 0.5, "forget_Q_A_Prob@relearn_recovery": 0.1},
            "curve": [{"step": 2, "forget_quality": fq}, {"step": 4, "forget_quality": 0.4}]})
    out = report(sweep)
    by_method = out["param_plots"]["method"]["forget_quality"]
    assert by_method["ga"] == [("ga", pytest.approx(0.2), pytest.approx(0.248414, abs=1e-6))]
    assert by_method["npo"] == [("npo", pytest.approx(0.6), pytest.approx(1.270620, abs=1e-6))]
    assert len(out["param_plots"]["seed"]["forget_quality"]["ga"]) == 3  # against the seed itself: one point each
    bars = out["robustness"]["ga"]
    assert bars["forget_Q_A_Prob"] == (pytest.approx(0.2), pytest.approx(0.248414, abs=1e-6))
    assert bars["forget_Q_A_Prob@relearn"] == (pytest.approx(0.5), pytest.approx(0.0, abs=1e-12))
    ga_curve, npo_curve = out["curves"]["forget_quality"]["ga"], out["curves"]["forget_quality"]["npo"]
    assert [p[0] for p in ga_curve] == [2, 4]
    assert ga_curve[0][1:] == (pytest.approx(0.2), pytest.approx(0.248414, abs=1e-6))
    assert ga_curve[1][1:] == (pytest.approx(0.4), pytest.approx(0.0, abs=1e-12))
    assert npo_curve[0][1:] == (pytest.approx(0.6), pytest.approx(1.270620, abs=1e-6))
    # with lr swept as well, a method's jobs are not seeds of one setting: its bar is their mean, with no interval
    from unlearning.report import plot_robustness

    rows = [{"method": "ga", "overrides": ["method=ga", f"trainer.lr={lr}", "seed=0"], "status": "ok",
             "metrics": {"forget_Q_A_Prob": v, "forget_Q_A_Prob@relearn_recovery": 0.1}} for lr, v in (("1e-5", 0.2),
                                                                                                     ("1e-4", 0.4))]
    mixed = plot_robustness(rows, {}, tmp_path / "mixed.png", ["method", "trainer.lr", "seed"])
    assert mixed["ga"]["forget_Q_A_Prob"] == (pytest.approx(0.3), None)
    for name in ("param_method", "robustness", "curves"):
        assert mpimg.imread(sweep / "plots" / f"{name}.png").shape[0] > 100


def test_curves_are_drawn_against_the_step_one_line_per_job(sweep):
    """Jobs 0 and 2 evaluated during training (hand-made curves); the others did not and draw no line."""
    for job, curve in {"0": [{"step": 2, "forget_quality": 0.05, "forget_Q_A_Prob": 0.9},
                             {"step": 4, "forget_quality": 0.10, "forget_Q_A_Prob": 0.7}],
                       "2": [{"step": 2, "forget_quality": 0.20}, {"step": 4, "forget_quality": 0.30},
                             {"step": 6, "forget_quality": 0.25}]}.items():
        path = sweep / job / "results.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "curve": curve}))
    out = report(sweep)
    assert sweep / "plots" / "curves.png" in out["plots"]
    assert mpimg.imread(sweep / "plots" / "curves.png").shape[0] > 100
    assert out["curves"]["forget_quality"] == {"0": [(2, 0.05), (4, 0.10)], "2": [(2, 0.20), (4, 0.30), (6, 0.25)]}
    assert out["curves"]["forget_Q_A_Prob"] == {"0": [(2, 0.9), (4, 0.7)]}
    assert list(out["curves"])[0] == "forget_quality"  # the trade-off's forget axis leads


def test_the_sweep_summary_has_the_seed_groups_too(tmp_path):
    """The same hand-computed groups as above, in summary.json / summary_seeds.csv (what the sweep callback writes)."""
    from unlearning.sweep import collect, write_summary

    sweep = tmp_path / "sweep"
    values = [("ga", 0, 0.1), ("ga", 1, 0.2), ("ga", 2, 0.3), ("npo", 0, 0.5), ("npo", 1, 0.7)]
    for job, (method, seed, fq) in enumerate(values):
        ov = [f"method={method}", f"seed={seed}"]
        make_job(sweep, str(job), ov, {"status": "ok", "overrides": ov, "method": method,
                                       "metrics": {"forget_quality": fq}, "baselines": {}})
    write_summary(sweep, collect(sweep))
    groups = {g["group"]: g for g in json.loads((sweep / "summary.json").read_text())["seed_groups"]}
    assert groups["method=ga"]["metrics"]["forget_quality"]["ci95"] == pytest.approx(0.248414, abs=1e-6)
    assert groups["method=npo"]["metrics"]["forget_quality"]["mean"] == pytest.approx(0.6)
    rows = list(csv.DictReader((sweep / "summary_seeds.csv").read_text().splitlines()))
    assert [(r["group"], r["n"], r["seeds"]) for r in rows] == [("method=ga", "3", "0 1 2"), ("method=npo", "2", "0 1")]
    assert float(rows[1]["forget_quality:ci95"]) == pytest.approx(1.270620, abs=1e-6)
