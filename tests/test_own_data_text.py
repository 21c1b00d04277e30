"""A user's own texts (`task.source=file:PATH`): labelled texts for sentiment (text
classification of any classes) and sentence pairs for translation, read, split, checked
on the way in, trained, evaluated and predicted from the store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from command_checks import rnnlab_command, running_runs
from mlflow import MlflowClient

from rnnlab.tasks import get_task, load_task
from rnnlab.tasks.base import majority_class_baseline, split_labels
from rnnlab.tasks.data_files import DataFile, DataFileError
from rnnlab.training.evaluate import RunDataChangedError, evaluate, predict
from rnnlab.training.run import run

# The gradient probe is tested elsewhere: here it would only trace its graphs.
TINY_MODEL = ["cell.units=8", "trainer.epochs=1", "trainer.batch_size=16", "probe.enabled=false"]
WORDS = {  # each class's words, so a text's class is in its words
    "bad": ["awful", "dull", "poor", "boring"],
    "good": ["great", "lovely", "superb", "moving"],
    "meh": ["average", "okay", "plain", "middling"],
}


def reviews(count: int, seed: int = 0) -> pd.DataFrame:
    """`count` short reviews, a third of each class, in a shuffled order."""
    rng = np.random.default_rng(seed)
    labels = [list(WORDS)[i % 3] for i in range(count)]
    rng.shuffle(labels)
    texts = [" ".join(rng.choice(WORDS[label], 3)) + " film" for label in labels]
    return pd.DataFrame({"text": texts, "label": labels})


def write(table: pd.DataFrame, path: Path) -> Path:
    """The table as the file its name's ending says."""
    if path.suffix == ".csv":
        table.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        table.to_json(path, orient="records", lines=True)
    elif path.suffix == ".parquet":
        table.to_parquet(path)
    else:
        raise ValueError(path)
    return path


def loaded(compose, *overrides: str):
    """The task and its data, loaded from the config as a run loads them."""
    cfg = compose(*overrides)
    task = get_task(cfg.task, cfg.data_dir)
    return task, task.load(batch_size=16, seed=0)


# Text classification.


def test_a_three_class_csv_is_split_by_seed_with_classes_from_the_training_split(compose, tmp_path):
    table = reviews(60)
    csv = write(table, tmp_path / "reviews.csv")
    task, data = loaded(compose, f"task.source=file:{csv}")

    assert task.classes == ["bad", "good", "meh"]
    assert task.loss == "sparse_categorical_crossentropy"
    # 80/10/10 by default: 6 rows each held out, the rest trained on.
    counts = {name: len(split_labels(getattr(data, name))) for name in ("validation", "test")}
    assert counts == {"validation": 6, "test": 6} and data.train_size == 48
    # The labels are the rows' classes, by their names' order: 20 of each in all.
    train_labels = split_labels(data.train_examples)
    every_label = np.concatenate(
        [train_labels, *(split_labels(data.validation), split_labels(data.test))]
    )
    assert np.bincount(every_label).tolist() == [20, 20, 20]
    expected = np.bincount(train_labels).argmax()
    test_labels = split_labels(data.test)
    assert majority_class_baseline(data) == {
        "baseline_accuracy": pytest.approx(np.mean(test_labels == expected))
    }
    # The data hash is the file's content and the settings that split it.
    settings = {
        "columns": ["text", "label"],
        "validation_fraction": 0.1,
        "test_fraction": 0.1,
        "split_seed": 0,
    }
    assert data.data_hash == DataFile.from_source(f"file:{csv}", ["csv"]).data_hash(settings)
    # Another seed deals other rows into the test split; the same seed, the same rows.
    _, again = loaded(compose, f"task.source=file:{csv}")
    _, other = loaded(compose, f"task.source=file:{csv}", "task.split_seed=7")
    assert again.data_hash == data.data_hash != other.data_hash
    assert list(split_labels(again.test)) == list(test_labels)


@pytest.mark.parametrize("ending", [".csv", ".jsonl", ".parquet"])
def test_a_files_own_split_column_and_column_names_are_used(compose, tmp_path, ending):
    table = reviews(30).rename(columns={"text": "review", "label": "stars"})
    table["stars"] = table["stars"].map({"bad": 1, "meh": 2, "good": 10})
    table["split"] = ["train"] * 20 + ["validation"] * 4 + ["test"] * 6
    path = write(table, tmp_path / f"reviews{ending}")
    task, data = loaded(
        compose,
        f"task.source=file:{path}",
        "task.text_column=review",
        "task.label_column=stars",
    )

    # Numbers sort as numbers: 2 before 10.
    assert task.classes == ["1", "2", "10"]
    index = {1: 0, 2: 1, 10: 2}
    assert list(split_labels(data.test)) == [index[s] for s in table["stars"][24:]]
    assert data.train_size == 20
    assert task.dataset_record().location == str(path)


def test_two_classes_keep_the_sigmoid_and_predict_names_the_likelier_class(compose, tmp_path):
    table = reviews(30)
    table["label"] = table["label"].map({"bad": "spam", "good": "ham", "meh": "ham"})
    csv = write(table, tmp_path / "mail.csv")
    task, _ = loaded(compose, f"task.source=file:{csv}")

    assert task.classes == ["ham", "spam"] and task.loss == "binary_crossentropy"
    # The sigmoid's one probability is the second class's.
    assert task.prediction_lines(["a", "b"], [0.2, 0.9]) == ["0.800 ham  a", "0.900 spam  b"]


def test_a_three_class_file_trains_evaluates_and_predicts_from_the_store(
    compose, tracking_uri, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # file:reviews.csv is relative to where rnnlab runs
    write(reviews(60), tmp_path / "reviews.csv")
    overrides = ["task.source=file:reviews.csv", *TINY_MODEL, "tracking.log_model=true"]
    run_id = run(compose(*overrides)).run_id

    for name, logged, recomputed in evaluate(run_id, tracking_uri):
        assert recomputed == pytest.approx(logged, rel=1e-5, abs=1e-6), name
    recorded = MlflowClient(tracking_uri).get_run(run_id)
    sources = {json.loads(i.dataset.source)["uri"] for i in recorded.inputs.dataset_inputs}
    assert sources == {str(tmp_path / "reviews.csv")}

    # Predict reads the class names from the store alone: the file may be gone.
    texts = ["great lovely superb film", "dull boring poor film"]
    task, _ = loaded(compose, *overrides)  # the run's vocabulary, loaded independently
    (tmp_path / "reviews.csv").unlink()
    lines = predict(run_id, tracking_uri, texts)
    from rnnlab.records.stored_model import load_stored_model

    model = load_stored_model(MlflowClient(tracking_uri), run_id).keras_model
    probabilities = model.predict(task.vectorizer(texts), verbose=0)
    assert lines == [
        f"{row.max():.3f} {['bad', 'good', 'meh'][row.argmax()]}  {text}"
        for row, text in zip(probabilities, texts, strict=True)
    ]

    # Evaluate checks the file's content: a changed file is not the run's data.
    write(reviews(60, seed=1), tmp_path / "reviews.csv")
    with pytest.raises(RunDataChangedError, match="hash"):
        evaluate(run_id, tracking_uri)


# Translation.


@pytest.mark.slow
def test_tab_separated_pairs_train_without_the_dictionary_and_predict_from_the_store(
    compose, tracking_uri, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    german = ["eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht"]
    english = ["one", "two", "three", "four", "five", "six", "seven", "eight"]
    # 40 different pairs; Tatoeba's downloads carry a third column (attribution): ignored.
    lines = [
        f"{german[i % 5]} und {german[i // 5]}.\t{english[i % 5]} and {english[i // 5]}.\t#{i}"
        for i in range(40)
    ]
    (tmp_path / "pairs.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = compose(
        "task=translation",
        "task.source=file:pairs.tsv",
        "task.embedding_dim=8",
        "task.attention_units=8",
        "task.samples=2",
        *TINY_MODEL,
        "tracking.log_model=true",
    )
    run_id = run(cfg).run_id
    task, data = load_task(cfg.task, cfg.data_dir, cfg.trainer.batch_size, cfg.seed)

    # 32/4/4, and every pair is a line of the file, in one split only.
    assert data.train_size == 32
    test_lines = {f"{german}\t{english}" for german, english in task.test_pairs}
    assert len(test_lines) == 4
    assert test_lines <= {line.rsplit("\t", 1)[0] for line in lines}
    train = set(task.train_pairs.as_numpy_iterator())
    assert not {(g.encode(), e.encode()) for g, e in task.test_pairs} & train
    # Ding translates German only: on a user's file its options are off.
    assert task.option("translate_unknown") is False
    assert task.option("dictionary_phrases") == 0
    assert task.option("lexicon_sources") == ["training"]

    recorded = MlflowClient(tracking_uri).get_run(run_id)
    assert 0 <= recorded.data.metrics["test_bleu"] <= 100
    [line] = predict(run_id, tracking_uri, ["eins und zwei."])
    assert line.startswith("eins und zwei.  ->  ")


def test_a_pairs_table_names_its_columns_and_keeps_its_own_split(compose, tmp_path):
    table = pd.DataFrame(
        {
            "en": [f"sentence {i}." for i in range(12)],
            "fr": [f"phrase {i}." for i in range(12)],
            "split": ["train"] * 8 + ["validation", "test"] * 2,
        }
    )
    parquet = write(table, tmp_path / "pairs.parquet")
    task, data = loaded(
        compose,
        "task=translation",
        f"task.source=file:{parquet}",
        "task.source_column=en",
        "task.target_column=fr",
    )
    assert data.train_size == 8
    assert task.test_pairs == [("sentence 9.", "phrase 9."), ("sentence 11.", "phrase 11.")]
    assert task.dataset_record().location == str(parquet)


# Bad files: one line naming the file and the row, line or column, before training.

BAD_TEXT_FILES = {
    # name: (file name, its content, the task's overrides, what the line says)
    "misnamed column": (
        "reviews.csv",
        "review,label\ngood film,good\n",
        [],
        r"no column 'text' \(its columns: review, label\); name it with task.text_column",
    ),
    "misnamed label column": (
        "reviews.csv",
        "text,stars\ngood film,good\n",
        [],
        r"no column 'label' .*task.label_column",
    ),
    "no rows in a split": (
        "reviews.csv",
        "text,label,split\na,x,train\nb,y,train\nc,x,validation\n",
        [],
        r"no rows in the test split \(column 'split'\)",
    ),
    "too few rows to deal": (
        "reviews.csv",
        "text,label\na,x\nb,y\nc,x\n",
        [],
        "the validation split is empty: 3 examples are too few to split",
    ),
    "an unknown split": (
        "reviews.csv",
        "text,label,split\na,x,train\nb,y,dev\n",
        [],
        r"row 2: split 'dev' in column 'split' is none of train, validation, test",
    ),
    "empty text": (
        "reviews.jsonl",
        '{"text": "fine", "label": "x"}\n{"text": "  ", "label": "y"}\n',
        [],
        r"line 2: empty text in column 'text'",
    ),
    "no label": (
        "reviews.csv",
        "text,label\na,1\nb,\nc,2\n",
        [],
        r"row 2: no label in column 'label'",
    ),
    "unseen test label": (
        "reviews.csv",
        "text,label,split\na,x,train\nb,y,train\nc,x,validation\nd,z,test\n",
        [],
        r"row 4: test label 'z' \(column 'label'\) is never in the training split",
    ),
    "one class": (
        "reviews.csv",
        "text,label,split\na,x,train\nb,x,validation\nc,x,test\n",
        [],
        r"the training split has one class \('x'",
    ),
    "not utf-8": (
        "reviews.csv",
        b"text,label\nfine,x\n\xff\xfe bad bytes,y\n",
        [],
        "row 2: column 'text' is not UTF-8 text",
    ),
    "unreadable csv": (
        "reviews.csv",
        'text,label\n"an unclosed quote,x\n',
        [],
        "unreadable as csv",
    ),
    "truncated json lines": (
        "reviews.jsonl",
        '{"text": "fine", "label": "x"}\n{"text": "cut of',
        [],
        "unreadable as jsonl",
    ),
    "a tsv line without a tab": (
        "pairs.tsv",
        "Hallo.\tHello.\n\nDanke.\tThanks.\nTschüss.\nJa.\tYes.\n",
        ["task=translation"],
        "line 4 has no tab: expected source<TAB>target",
    ),
    "an empty target": (
        "pairs.tsv",
        "Hallo.\tHello.\nDanke.\t \n",
        ["task=translation"],
        "line 2: empty target text",
    ),
    "no tab at all": (
        "pairs.txt",
        "Hallo.\nDanke.\n",
        ["task=translation"],
        "line 1 has no tab",
    ),
    "misnamed pair column": (
        "pairs.csv",
        "de,en\nHallo.,Hello.\n",
        ["task=translation"],
        r"no column 'source' .*task.source_column",
    ),
    "an unknown format": ("reviews.xlsx", "x", [], "unknown format '.xlsx'; this task reads"),
}


@pytest.mark.parametrize("case", sorted(BAD_TEXT_FILES))
def test_a_bad_file_is_one_line_naming_the_file_and_where(compose, tmp_path, case):
    name, content, overrides, message = BAD_TEXT_FILES[case]
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFileError, match=message) as raised:
        loaded(compose, *overrides, f"task.source=file:{path}")
    assert str(raised.value).startswith(f"{path}: ")
    assert "\n" not in str(raised.value)


def test_a_truncated_parquet_file_and_a_missing_path_are_one_line(compose, tmp_path):
    parquet = write(reviews(30), tmp_path / "reviews.parquet")
    parquet.write_bytes(parquet.read_bytes()[:-200])
    with pytest.raises(DataFileError, match=f"{parquet}: unreadable as parquet"):
        loaded(compose, f"task.source=file:{parquet}")
    missing = tmp_path / "nowhere.csv"
    with pytest.raises(DataFileError, match=f"{missing}: does not exist"):
        loaded(compose, "task=translation", f"task.source=file:{missing}")


def test_rnnlab_train_on_a_bad_file_fails_in_one_line_and_leaves_no_run(tmp_path):
    (tmp_path / "reviews.csv").write_text("review,label\ngood film,good\n", encoding="utf-8")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = rnnlab_command(
        "train",
        "task.source=file:reviews.csv",
        "trainer.epochs=1",
        f"tracking.uri={uri}",
        cwd=tmp_path,
    )
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line == (
        f"rnnlab: {tmp_path / 'reviews.csv'}: no column 'text' (its columns: review, label); "
        "name it with task.text_column"
    )
    assert not running_runs(uri)
