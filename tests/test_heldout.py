"""From a study to an unbiased score, through the real CLI: the data record, a held-out test split
(``dataset.test_fraction`` / ``test_dir``), ``hpo evaluate``, and the test in report, compare and
the dashboard note."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from PIL import Image

from hpo.optuna_private import study_system_attrs
from hpo.record import TEST_NOTE_HEADING, read_data_facts, read_test_results

SPACE = {"params": {"lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True}}}


def write_study(root: Path, name: str, dataset: dict, **extra) -> Path:
    (root / "search_spaces").mkdir(parents=True, exist_ok=True)
    (root / "studies").mkdir(exist_ok=True)
    (root / "search_spaces" / "tiny.yaml").write_text(yaml.safe_dump(SPACE))
    study = {"dataset": dataset, "model": {"name": "mobilenetv3_small_050", "image_size": 16},
             "search_space": "tiny", "train": {"batch_size": 64},
             "budget": {"n_trials": 2, "max_epochs": 1},
             "sampler": {"type": "random"}, "pruner": {"type": "none"}, **extra}
    path = root / "studies" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study, allow_unicode=True))
    return path


def test_a_study_with_a_test_split_is_scored_on_it_and_shows_it(tmp_path, hpo_cli) -> None:
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    env = {"HPO_CACHE_DIR": str(tmp_path / "cache")}
    study_file = write_study(tmp_path, "graded", {
        "name": "defects", "n_per_class": 12, "multitask": True, "test_fraction": 0.25})
    run = hpo_cli("study", str(study_file), "--storage", url, "--no-progress", env=env)
    assert run.returncode == 0, run.stderr
    study = optuna.load_study(study_name="graded", storage=url)
    best = study.best_trial.number
    assert f"trial {best} (rank 1, validation" in run.stdout and "test accuracy" in run.stdout

    facts = read_data_facts(study)  # the data record: classes, preprocessing, counts
    assert facts.classes[0] == "scratch" and facts.image_size == 16 and facts.channels == 3
    assert len(facts.mean) == 3 and facts.value_std > 0 and facts.fingerprint
    assert {s: sum(c.values()) for s, c in facts.counts.items()} == {
        "train": 36, "val": 9, "test": 15}  # test carved first: 3 of each class's 12
    assert set(facts.counts["test"].values()) == {3}
    (result,) = read_test_results(study_system_attrs(study)).values()
    assert result.trial == best and result.sizes == {"train": 36, "val": 9, "test": 15}
    assert result.accuracy_ci[0] <= result.accuracy <= result.accuracy_ci[1]
    assert sum(map(sum, result.confusion)) == 15 and result.classes == facts.classes
    assert result.mae is not None and result.mae_ci[0] <= result.mae <= result.mae_ci[1]
    assert result.within_k is not None and result.checkpoint_epoch == 1
    assert [c.support for c in result.per_class] == [3] * 5

    top = hpo_cli("evaluate", "graded", "--top", "2", "--storage", url, env=env)
    assert top.returncode == 0, top.stderr
    assert top.stdout.count("test accuracy") == 2 and "(rank 2, validation" in top.stdout
    again = read_test_results(study_system_attrs(study))
    assert len(again) == 2 and again[best].accuracy == result.accuracy  # the same checkpoint

    report = hpo_cli("report", "graded", "--storage", url, "--out", str(tmp_path / "rep"))
    assert report.returncode == 0, report.stderr
    md = (tmp_path / "rep" / "graded.md").read_text()
    assert "## Data" in md and "| scratch | 7 | 2 | 3 |" in md  # train, val, test per class
    assert "## Held-out test" in md and f"{result.accuracy:.3f} \\[" in md
    html = (tmp_path / "rep" / "graded.html").read_text()
    assert '"type":"heatmap"' in html and "foreign_object" in html

    # a study without a test split: evaluate says so in one line and exits 2; compare shows both
    plain = write_study(tmp_path, "plain", {"name": "defects", "n_per_class": 12,
                                            "multitask": True}, budget={"n_trials": 1,
                                                                        "max_epochs": 1})
    assert hpo_cli("study", str(plain), "--storage", url, "--no-progress",
                   env=env).returncode == 0
    refused = hpo_cli("evaluate", "plain", "--storage", url, env=env)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "has no held-out test split" in refused.stderr and not refused.stdout
    compare = hpo_cli("compare", "graded", "plain", "--storage", url, "--out",
                      str(tmp_path / "rep"), "--name", "both")
    assert compare.returncode == 0, compare.stderr
    both = (tmp_path / "rep" / "both.md").read_text()
    assert f"**graded**: trial {best}: test accuracy {result.accuracy:.3f} [" .replace(
        "[", "\\[") in both and "**plain**: not evaluated" in both

    from hpo.dashboard import publish_notes  # the dashboard's note gets a short section
    from hpo.optuna_private import dashboard_notes

    publish_notes(study)
    note = dashboard_notes(study_system_attrs(study))[None]
    assert note.startswith(TEST_NOTE_HEADING) and f"- trial {best}: test accuracy" in note


def save_image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(path)


def test_a_folder_with_a_test_dir_says_each_skipped_file_in_one_line(tmp_path, hpo_cli) -> None:
    for split, n in (("train", 4), ("test", 2)):
        for c, name in enumerate(("划痕", "ok")):
            for i in range(n):
                save_image(tmp_path / split / name / f"{i}.png", seed=100 * c + 10 * i + n)
    (tmp_path / "train" / "ok" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    (tmp_path / "train" / "划痕" / "notes.txt").write_text("taken on line 3")
    study_file = write_study(tmp_path, "parts", {"name": "folder", "root": str(tmp_path / "train"),
                                                 "test_dir": "../test", "val_fraction": 0.25},
                             budget={"n_trials": 1, "max_epochs": 1})
    url = f"sqlite:///{tmp_path / 'parts.db'}"
    run = hpo_cli("study", str(study_file), "--storage", url, "--no-progress",
                  env={"HPO_CACHE_DIR": str(tmp_path / "cache")})
    assert run.returncode == 0, run.stderr
    said = [line for line in run.stderr.splitlines() if "skipped" in line]
    assert said == [
        (f"hpo: skipped {tmp_path / 'train' / '划痕' / 'notes.txt'}: not an image file (.txt; "
         "images are .bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp)"),
        (f"hpo: skipped {tmp_path / 'train' / 'ok' / 'broken.png'}: unreadable image "
         "(UnidentifiedImageError: cannot identify image file)")]
    assert "Warning" not in run.stderr and "warn(" not in run.stderr  # no source line
    study = optuna.load_study(study_name="parts", storage=url)
    facts = read_data_facts(study)
    assert [Path(f.path).name for f in facts.skipped] == ["notes.txt", "broken.png"]
    assert facts.classes == ["ok", "划痕"] and facts.counts["test"] == {"ok": 2, "划痕": 2}
    (result,) = read_test_results(study_system_attrs(study)).values()
    assert result.sizes == {"train": 6, "val": 2, "test": 4} and result.classes == facts.classes


@pytest.mark.parametrize("dataset, extra, says", [
    ({"name": "digits", "test_fraction": 0.9}, {},
     "dataset.test_fraction = 0.9 is invalid; allowed: a number > 0 and <= 0.5"),
    ({"name": "digits", "test_fraction": 0.2}, {"checkpoint": {"keep_best_k": 0}},
     "checkpoint.keep_best_k = 0 is invalid; allowed: an integer >= 1 with a held-out test"),
    ({"name": "folder", "root": "x", "test_dir": "y", "test_fraction": 0.2}, {},
     "give either test_fraction or test_dir, not both"),
])
def test_bad_test_split_settings_are_config_errors(tmp_path, capsys, dataset, extra,
                                                   says) -> None:
    from hpo.cli import main

    study_file = write_study(tmp_path, "bad", dataset, **extra)
    assert main(["study", str(study_file), "--storage", f"sqlite:///{tmp_path / 'x.db'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hpo: error: {study_file}: ") and says in err
    assert err.count("\n") == 1 and not (tmp_path / "x.db").exists()
