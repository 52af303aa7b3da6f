"""`fedrun report` on synthetic rounds.jsonl files: plots, summary numbers, runs still being written."""

import dataclasses
import json
import logging
import struct
from pathlib import Path

import numpy as np
import pytest

from fedrun.cli import main
from fedrun.errors import FedrunError
from fedrun.loop.records import RoundRecord, ShardRecord
from fedrun.loop.run_dir import RoundsFile
from fedrun.observe.summary import running_time
from fedrun.observe.tensorboard import round_scalars
from fedrun.report.figures import worker_timeline
from fedrun.report.writer import write_report

PLOTS = ["accuracy.png", "loss.png", "latency.png", "latency_cdf.png"]


def synthetic_round(number: int) -> RoundRecord:
    """Round n: latency 1 + (n % 7) / 10 s (round 1: 5 s, tracing), 4 shards on 2 workers, eval
    every 2nd round."""
    latency = 5.0 if number == 1 else 1 + (number % 7) / 10
    start = 10.0 * number
    shards = [
        ShardRecord(0, "w0", ["a", "b"], 200, start + 0.01, start + 0.4),
        ShardRecord(1, "w1", ["c"], 100, start + 0.01, start + 0.3),
        ShardRecord(2, "w1", ["d", "e"], 200, start + 0.35, start + 0.7),
        ShardRecord(3, "w0", ["f"], 100, start + 0.4, start + 0.6),
    ]
    evaluation = {
        "round_clients": {"loss": 2 - number / 20, "accuracy": 0.1 + number / 50},
        "heldout": {"loss": 2.1 - number / 25, "accuracy": 0.05 + (number % 5) / 10},
    }
    return RoundRecord(
        round=number,
        latency_s=latency,
        start=start,
        clients=6,
        examples=600,
        examples_trained=1200 + number,
        clients_per_s=6 / latency,
        examples_per_s=(1200 + number) / latency,
        shards=shards,
        bytes_to_workers=10_000 + number,
        bytes_from_workers=2_000,
        workers=2,
        failures=[{"worker": "w1", "shard": 2, "error": "exited", "replaced": True}] if number == 3 else [],
        train={"loss": 2.2 - number / 30, "accuracy": 0.1 + number / 60, "num_examples": 1200 + number},
        eval=evaluation if number % 2 == 0 else {},
        eval_latency_s=0.25 if number % 2 == 0 else 0.0,
    )


def write_run(directory: Path, rounds: int, planned: int | None = None) -> list[RoundRecord]:
    directory.mkdir(parents=True, exist_ok=True)
    records = [synthetic_round(n) for n in range(1, rounds + 1)]
    (directory / "rounds.jsonl").write_text(
        "".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in records)
    )
    if planned:
        (directory / "config.toml").write_text(f"rounds = {planned}\nworkers = 2\nclients_per_round = 6\n")
    return records


def summary_table(summary: Path) -> dict[str, str]:
    rows = [line.split(" | ") for line in summary.read_text().splitlines() if line.startswith("| ")]
    return {cells[0].removeprefix("| "): cells[1].removesuffix(" |") for cells in rows if len(cells) == 2}


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_writes_every_plot_and_a_summary_that_links_them(tmp_path):
    write_run(tmp_path, rounds=20)
    summary = write_report(tmp_path)
    assert summary == tmp_path / "report" / "summary.md"
    names = [*PLOTS, "shards_round_20.png"]
    for name in names:
        width, height = png_size(summary.parent / name)
        assert width >= 1000 and height >= 400
        assert (summary.parent / name).stat().st_size > 20_000  # drawn, not an empty canvas
        assert f"]({name})" in summary.read_text()


def test_summary_numbers_are_the_data(tmp_path):
    records = write_run(tmp_path, rounds=20, planned=30)
    table = summary_table(write_report(tmp_path))
    latencies = [r.latency_s for r in records]
    assert table["rounds in rounds.jsonl"] == "20 of 30 planned"
    assert (
        table["round latency p50 / p95 / p99"]
        == " / ".join(f"{np.percentile(latencies, q):.3f}" for q in (50, 95, 99)) + " s"
    )
    assert table["round latency min / max"] == "1.000 / 5.000 s"
    assert table["first round latency (includes tracing)"] == "5.000 s"
    assert table["examples trained (all epochs)"] == str(sum(1200 + n for n in range(1, 21)))
    assert table["bytes to / from workers, all rounds"] == f"{sum(10_000 + n for n in range(1, 21))} / 40000"
    assert table["running time to the end of the last round"] == f"{200 + latencies[-1] + 0.25:.1f} s"
    assert table["worker failures (their shards ran again)"] == "1"
    assert table["train loss / accuracy (round 20)"] == f"{2.2 - 20 / 30:.4f} / {0.1 + 20 / 60:.4f}"
    assert table["eval heldout loss / accuracy (round 20)"] == f"{2.1 - 20 / 25:.4f} / {0.05:.4f}"
    assert table["best eval heldout accuracy"] == f"{0.45:.4f} (round 4)"
    assert table["best eval round_clients accuracy"] == f"{0.5:.4f} (round 20)"
    assert table["config workers"] == "2"


def test_chosen_round_gets_its_gantt_chart(tmp_path):
    write_run(tmp_path, rounds=5)
    summary = write_report(tmp_path, round_num=3, out=tmp_path / "elsewhere")
    assert summary.parent == tmp_path / "elsewhere"
    assert png_size(summary.parent / "shards_round_3.png")[0] >= 1000
    assert not (summary.parent / "shards_round_5.png").exists()
    with pytest.raises(FedrunError, match="choose --round between 1 and 5"):
        write_report(tmp_path, round_num=9)


def test_worker_timeline_is_relative_to_the_round_and_keeps_idle_gaps():
    timeline = worker_timeline(synthetic_round(4))
    as_numbers = {
        w: [(round(s, 6), round(d, 6), shard.shard) for s, d, shard in bars] for w, bars in timeline.items()
    }
    assert as_numbers == {"w0": [(0.01, 0.39, 0), (0.4, 0.2, 3)], "w1": [(0.01, 0.29, 1), (0.35, 0.35, 2)]}


def test_running_time_continues_across_a_resume():
    first = [synthetic_round(n) for n in (1, 2)]  # ends at 20 + 1.2 + 0.25 s
    resumed = [dataclasses.replace(synthetic_round(n), start=synthetic_round(n).start - 25) for n in (3, 4)]
    assert running_time(first + resumed) == pytest.approx(
        [15.0, 21.45, 21.45 + 5 + 1.3, 21.45 + 15 + 1.4 + 0.25]
    )


def test_a_run_still_being_written_skips_its_torn_last_line(tmp_path, caplog):
    write_run(tmp_path, rounds=6, planned=10)
    complete = (tmp_path / "rounds.jsonl").read_text()
    torn = json.dumps(dataclasses.asdict(synthetic_round(7)))[:150]
    (tmp_path / "rounds.jsonl").write_text(complete + torn)
    with caplog.at_level(logging.WARNING, logger="fedrun.report"):
        table = summary_table(write_report(tmp_path))
    assert table["rounds in rounds.jsonl"] == "6 of 10 planned"
    assert any("incomplete last line" in r.getMessage() for r in caplog.records)

    (tmp_path / "rounds.jsonl").write_text(
        complete + json.dumps(dataclasses.asdict(synthetic_round(7))) + "\n"
    )
    assert summary_table(write_report(tmp_path))["rounds in rounds.jsonl"] == "7 of 10 planned"


def test_a_damaged_line_before_the_last_is_an_error(tmp_path):
    write_run(tmp_path, rounds=3)
    lines = (tmp_path / "rounds.jsonl").read_text().splitlines()
    (tmp_path / "rounds.jsonl").write_text("\n".join([lines[0], lines[1][:40], lines[2]]) + "\n")
    with pytest.raises(FedrunError, match="line 2 is not a round record"):
        RoundsFile(tmp_path / "rounds.jsonl").read()


def test_nothing_to_report_is_a_clear_error(tmp_path):
    with pytest.raises(FedrunError, match="give the --out directory of a fedrun run"):
        write_report(tmp_path / "missing")
    (tmp_path / "rounds.jsonl").write_text("")
    with pytest.raises(FedrunError, match="no round has finished yet"):
        write_report(tmp_path)


def test_cli_report_command(tmp_path, capsys):
    write_run(tmp_path, rounds=4)
    assert main(["report", str(tmp_path), "--round", "2", "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "shards_round_2.png").exists()
    assert str(tmp_path / "r" / "summary.md") in capsys.readouterr().out
    assert main(["report", str(tmp_path), "--round", "12"]) == 2
    assert "fedrun: error: round 12 is not in" in capsys.readouterr().err


def test_a_run_with_a_system_model_gets_its_simulated_figures_and_rows(tmp_path):
    records = write_run(tmp_path, rounds=6, planned=6)
    lines, clients = [], []
    clock = 0.0
    for record in records:
        clock += 10.0 * record.round
        abandoned = record.round == 3
        sim = {
            "round_s": 10.0 * record.round,
            "clock_s": clock,
            "selected": 4,
            "reported": 0 if abandoned else 3,
            "abandoned": abandoned,
            "dropped": {"deadline": 1, "over_selection": 0, "dropout": 0, "unavailable": 0},
            "client_s": {"p50": 4.0, "p95": 9.0, "p99": 9.9, "max": 10.0},
            "participation": {
                "population": 50,
                "clients_contributed": 3 * record.round,
                "never_fraction": 0.5,
                "fastest_quartile_share": 0.4,
                "slowest_quartile_share": 0.1,
            },
        }
        changed = dataclasses.replace(record, sim=sim, train={} if abandoned else record.train)
        lines.append(json.dumps(dataclasses.asdict(changed)) + "\n")
        clients += [
            json.dumps(
                {
                    "round": record.round,
                    "client": str(c),
                    "index": c,
                    "download_s": 0.1,
                    "compute_s": 3.0,
                    "upload_s": 0.1,
                    "total_s": 3.2,
                    "outcome": "counted" if c < 3 and not abandoned else "dropped",
                    "reason": None,
                }
            )
            + "\n"
            for c in range(4)
        ]
    (tmp_path / "rounds.jsonl").write_text("".join(lines))
    (tmp_path / "clients.jsonl").write_text("".join(clients))

    table = summary_table(write_report(tmp_path))

    for name in (
        "accuracy_simulated_time.png",
        "simulated_round_time.png",
        "dropped_clients.png",
        "participation.png",
    ):
        assert png_size(tmp_path / "report" / name)[0] > 500, name
    assert table["simulated time at the end of the last round"] == f"{clock:.1f} s"
    assert table["rounds abandoned"] == "1"
    assert table["clients reported / selected, all rounds"] == "15 / 24"
    assert table["train loss / accuracy (round 6)"].startswith(f"{2.2 - 6 / 30:.4f}")


def test_a_buffered_async_run_reports_versions_staleness_and_discards(tmp_path):
    records = write_run(tmp_path, rounds=3, planned=3)
    lines = []
    for record in records:
        counts = {"0": 2, str(record.round): 2}
        sim = {
            "round_s": 4.0,
            "clock_s": 4.0 * record.round,
            "selected": 4,
            "reported": 4,
            "abandoned": False,
            "dropped": {"deadline": 0, "over_selection": 0, "dropout": 1, "unavailable": 0, "stale": 2},
            "client_s": {"p50": 4.0, "p95": 9.0, "p99": 9.9, "max": 10.0},
            "participation": {},
        }
        staleness = {"p50": 0.5, "max": record.round, "mean": record.round / 2}
        update = {
            "version": record.round,
            "clock_s": 4.0 * record.round,
            "buffered": 4,
            "started": 4,
            "in_flight": 8,
            "staleness": staleness,
            "staleness_counts": counts,
            "discarded": {"stale": 2, "dropout": 1, "unavailable": 0},
            "versions_kept": 2,
        }
        changed = dataclasses.replace(record, sim=sim, buffered=update)
        lines.append(json.dumps(dataclasses.asdict(changed)) + "\n")
    (tmp_path / "rounds.jsonl").write_text("".join(lines))

    sync = tmp_path / "sync"
    write_run(sync, rounds=4)
    table = summary_table(write_report(tmp_path, compare=[sync]))

    for name in ("staleness.png", "accuracy_runs.png", "accuracy_simulated_time.png"):
        assert png_size(tmp_path / "report" / name)[0] > 500
    assert table["server version (buffered-async updates)"] == "3"
    # staleness of the 12 counted results: 0 x6, 1 x2, 2 x2, 3 x2
    assert table["staleness of counted results p50 / p95 / max"] == "0 / 3 / 3 versions"
    assert table["results discarded, by reason"] == "stale 6, dropout 3, unavailable 0"
    scalars = round_scalars(RoundRecord.from_json(json.loads(lines[-1])))["round"]
    assert scalars["buffered/version"] == 3 and scalars["buffered/staleness_max"] == 3
    assert scalars["buffered/discarded_stale"] == 2 and scalars["simulated/dropped_stale"] == 2


def test_compared_runs_must_share_an_evaluation_group(tmp_path):
    write_run(tmp_path / "a", rounds=2)
    (tmp_path / "b").mkdir()
    records = [dataclasses.replace(synthetic_round(n), eval={}) for n in (1, 2)]
    (tmp_path / "b" / "rounds.jsonl").write_text(
        "".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in records)
    )
    with pytest.raises(FedrunError, match="share no evaluation group"):
        write_report(tmp_path / "a", compare=[tmp_path / "b"])
