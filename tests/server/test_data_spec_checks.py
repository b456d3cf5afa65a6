"""Data choices that every trial would fail on, or that change nothing, are refused at launch
with the field and the fix: a DSIR setting out of range (in ``data`` or in ``data_space``), a
custom task the task list leaves out, a pre-training selection where nothing is pre-trained, a
data field the trainer does not read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _procs import TABLE

from archsearch.server._spec import SearchSpec
from archsearch.server._trainers import trainer_info_from_pb
from archsearch.server.client import trainer_info_to_pb
from archsearch.spaces import DATA_FIELDS, DISTILL_DATA_FIELDS, SpecError, TrainerInfo
from archsearch.worker._bert_info import BERT_TRAINER_INFO
from archsearch.worker._table_trainer import TableTrainer

BERT: dict[str, Any] = {"name": "d", "space": "bert", "n_trials": 2}
SHARED_GLUE = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "glue").resolve()
FLEXIBERT: dict[str, Any] = {
    "name": "f",
    "space": "flexibert-small",
    "n_trials": 2,
    "recipe": {"pretrain_steps": 20},
}
CUSTOM = {
    "name": "reviews",
    "train": "/data/train.csv",
    "dev": "/data/dev.csv",
    "text_fields": ["review"],
    "label_field": "stars",
    "labels": ["neg", "pos"],
}


def refused(spec: dict[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as info:
        SearchSpec.from_dict(spec)
    return info.value


@pytest.mark.parametrize(
    ("selection", "field", "words"),
    [
        ({"method": "dsir", "k": -5}, "data.selection.k", "must be an int >= 1, got -5"),
        ({"method": "dsir", "k": 3, "fraction": 0.5}, "data.selection", "exactly one of k"),
        ({"method": "dsir"}, "data.selection", "exactly one of k and fraction"),
        ({"method": "dsir", "fraction": 1.5}, "data.selection.fraction", "in (0, 1]"),
        # the whole split (random's size of a whole split was refused, DSIR's fraction 1 not)
        ({"method": "dsir", "fraction": 1}, "data.selection.fraction", "keeps every training"),
        ({"method": "dsir", "k": 3, "ngrams": 9}, "data.selection.ngrams", "[1, 5]"),
        ({"method": "dsir", "k": 3, "laplace": -1}, "data.selection.laplace", ">= 0"),
        ({"method": "dsir", "k": 3, "target": "nonsense"}, "data.selection.target", "file:PATH"),
        ({"method": "dsir", "k": 3, "target": "glue:sst3"}, "data.selection.target", "'sst3'"),
        ({"method": "dsir", "k": 3, "pool": "glue:cola"}, "data.selection.pool", "own training"),
        ({"method": "dsir", "k": 3, "pool": "dev"}, "data.selection.pool", "own training"),
    ],
)
def test_a_dsir_value_every_trial_would_fail_on_is_refused_at_launch(
    selection: dict[str, Any], field: str, words: str
) -> None:
    e = refused({**BERT, "data": {"selection": selection}})
    assert e.field == field and words in str(e), str(e)
    # the same value among the values data_space searches, named by its place
    searched = {"selection": [{"method": "none"}, selection]}
    e = refused({**BERT, "data_space": searched})
    assert e.field == field.replace("data.selection", "data_space.selection[1]"), str(e)
    assert words in str(e)


def test_good_dsir_values_pass_and_keep_what_the_user_wrote() -> None:
    selection = {"method": "dsir", "k": 300, "target": ["test", "glue:rte/dev"], "laplace": 1}
    spec = SearchSpec.from_dict({**BERT, "data": {"selection": selection}})
    assert spec.data["selection"] == selection  # checked, not filled in: the same fingerprint


def test_a_pretrain_selection_needs_a_candidate_that_is_pre_trained() -> None:
    selection = {"method": "dsir", "pool": ["glue:sst2", "glue:qnli/test"], "k": 500}
    ok = SearchSpec.from_dict({**FLEXIBERT, "data": {"pretrain_selection": selection}})
    assert ok.data["pretrain_selection"] == selection
    e = refused({**BERT, "data": {"pretrain_selection": selection}})
    assert e.field == "data.pretrain_selection" and "bert candidates are not pre-trained" in str(e)
    e = refused({**FLEXIBERT, "recipe": {}, "data": {"pretrain_selection": selection}})
    assert "recipe.pretrain_steps > 0" in str(e)
    with_text = {**FLEXIBERT, "recipe": {"pretrain_steps": 20, "pretrain_text": "/t.txt"}}
    e = refused({**with_text, "data": {"pretrain_selection": selection}})
    assert "contradicts recipe.pretrain_text" in str(e)
    e = refused({**BERT, "data_space": {"pretrain_selection": [selection]}})
    assert e.field == "data_space.pretrain_selection"
    e = refused({**FLEXIBERT, "data": {"pretrain_selection": {**selection, "k": 0}}})
    assert e.field == "data.pretrain_selection.k"
    e = refused({**FLEXIBERT, "data": {"pretrain_selection": {"method": "dsir", "k": 5}}})
    assert e.field == "data.pretrain_selection.pool"


def test_a_custom_task_the_task_list_leaves_out_is_refused() -> None:
    """``--task cola`` with a declared custom task would train on CoLA and never read the
    user's files: refused. Naming it (alone or with GLUE tasks) is fine."""
    e = refused({**BERT, "task": "cola", "data": {"custom_task": CUSTOM}})
    assert e.field == "task" and "leaves out data.custom_task 'reviews'" in str(e)
    assert "name 'reviews' among the tasks" in str(e)
    e = refused({**BERT, "tasks": ["sst2", "rte"], "data": {"custom_task": CUSTOM}})
    assert e.field == "tasks"
    alone = SearchSpec.from_dict({**BERT, "data": {"custom_task": CUSTOM}})
    assert alone.data["task"] == "reviews"
    named = SearchSpec.from_dict({**BERT, "task": "reviews", "data": {"custom_task": CUSTOM}})
    assert named.data["task"] == "reviews"


def test_a_custom_task_beside_glue_tasks_needs_an_objective_named() -> None:
    """The GLUE average leaves a custom task out, so such a study has no default objective:
    it was refused naming 'accuracy', an objective the user never wrote."""
    mixed = {**BERT, "tasks": ["reviews", "wnli"], "data": {"custom_task": CUSTOM}}
    e = refused(mixed)
    assert e.field == "objectives" and "has no default objective" in str(e)
    assert "--objective reviews.<metric>:max or --objective wnli.<metric>:max" in str(e)
    named = SearchSpec.from_dict({**mixed, "objectives": ["reviews.accuracy:max"]})
    assert [o.metric for o in named.objectives] == ["reviews.accuracy"]


TABLE_SPEC: dict[str, Any] = {
    "name": "t",
    "space": "flexibert-small",
    "trainer": "table",
    "n_trials": 3,
    "objectives": ["score:max"],
    "space_options": {"table": TABLE},
}


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        (
            {"data_space": {"selection": [{"method": "none"}, {"method": "random", "size": 9}]}},
            "data_space.selection",
        ),
        (
            {"data_space": {"curriculum": [{"method": "none"}, {"method": "pudf"}]}},
            "data_space.curriculum",
        ),
        ({"data": {"train_subset": 1000}}, "data.train_subset"),
        ({"data": {"selection": {"method": "dsir", "k": 30}}}, "data.selection"),
    ],
)
def test_a_data_choice_the_table_trainer_ignores_is_refused(
    patch: dict[str, Any], field: str
) -> None:
    e = refused({**TABLE_SPEC, **patch})
    assert e.field == field
    assert "the table trainer does not read it" in str(e) and "reads data task" in str(e)
    SearchSpec.from_dict({**TABLE_SPEC, "data": {"task": "sst2", "train_subset": 0}})


def test_supernet_text_on_a_bert_study_is_refused() -> None:
    e = refused({**BERT, "data": {"distill_text": "/data/wiki.txt"}})
    assert e.field == "data.distill_text" and "the bert trainer does not read it" in str(e)


def test_data_fields_are_declared_and_travel_with_the_trainer() -> None:
    assert TableTrainer.info.data_fields == ("task",)
    assert set(BERT_TRAINER_INFO.data_fields) == set(DATA_FIELDS) - set(DISTILL_DATA_FIELDS)
    back = trainer_info_from_pb(trainer_info_to_pb(BERT_TRAINER_INFO))
    assert back == BERT_TRAINER_INFO
    with pytest.raises(SpecError, match="data_fields"):
        TrainerInfo(name="x", metrics=("score",), data_fields=("no spaces",))


def test_a_stored_study_from_before_these_checks_is_still_served() -> None:
    """A restarted server reads its studies' specs with ``stored=True``: a study launched
    before a check existed keeps being served (its trials ran; only new launches are
    refused)."""
    for spec in (
        {**TABLE_SPEC, "data": {"train_subset": 1000}},
        {**BERT, "data": {"distill_text": "/data/wiki.txt"}},
        {**BERT, "task": "cola", "objectives": ["mcc:max"], "data": {"custom_task": CUSTOM}},
        {**BERT, "data": {"pretrain_selection": {"method": "dsir", "pool": "glue:rte", "k": 5}}},
    ):
        refused(spec)
        kept = SearchSpec.from_dict(spec, stored=True)
        assert SearchSpec.from_dict(kept.to_dict(), stored=True) == kept


def test_two_searched_values_that_mean_the_same_are_refused() -> None:
    """``ngrams`` 2 is DSIR's default: the two values would train on the same data, and the
    search would spend its budget telling apart two copies of one choice."""
    same = [{"method": "dsir", "k": 300}, {"method": "dsir", "k": 300, "ngrams": 2}]
    e = refused({**BERT, "data_space": {"selection": same}})
    assert e.field == "data_space.selection[1]" and "means the same as" in str(e)
    assert "data_space.selection[0]" in str(e)
    pools = {"method": "random", "pool": "glue:rte", "k": 5}
    e = refused(
        {**FLEXIBERT, "data_space": {"pretrain_selection": [pools, {**pools, "target": "train"}]}}
    )
    assert e.field == "data_space.pretrain_selection[1]"
    other = [{"method": "dsir", "k": 300}, {"method": "dsir", "k": 300, "ngrams": 1}]
    assert SearchSpec.from_dict({**BERT, "data_space": {"selection": other}}).data_space
    stored = SearchSpec.from_dict({**BERT, "data_space": {"selection": same}}, stored=True)
    assert stored.data_space == {"selection": same}  # a stored study is still served


@pytest.mark.parametrize(
    ("spec", "target"),
    [
        (BERT, "dev"),
        (BERT, ["train", "glue:sst2/dev"]),  # the task's own dev split by its GLUE name
        ({**BERT, "task": "mnli"}, "dev_mismatched"),
        ({**BERT, "tasks": ["sst2", "rte"]}, "glue:rte/dev"),  # any task the trials score
        (BERT, "file:/data/glue_data/SST-2/dev.tsv"),  # the dev file by its path
    ],
)
def test_a_dsir_target_that_reads_the_scoring_dev_split_is_refused(
    spec: dict[str, Any], target: Any
) -> None:
    selection = {"method": "dsir", "k": 100, "target": target}
    e = refused({**spec, "data": {"selection": selection}})
    assert e.field == "data.selection.target" and "leaks the evaluation set" in str(e)
    assert "leave target out for the task's unlabelled test text" in str(e)
    e = refused({**spec, "data_space": {"selection": [{"method": "none"}, selection]}})
    assert e.field == "data_space.selection[1].target"


def test_a_dsir_target_of_other_text_passes_and_a_stored_dev_target_is_still_served() -> None:
    for target in ("test", ["train", "glue:rte/dev"], "file:/t.txt", "wiki:gensim"):
        selection = {"method": "dsir", "k": 100, "target": target}
        SearchSpec.from_dict({**BERT, "data": {"selection": selection}})
    stored = {**BERT, "data": {"selection": {"method": "dsir", "k": 100, "target": "dev"}}}
    assert SearchSpec.from_dict(stored, stored=True).data["selection"]["target"] == "dev"


def test_a_custom_task_names_its_dsir_target() -> None:
    """Its default target, the test split, does not exist for a custom task."""
    selection: dict[str, Any] = {"method": "dsir", "k": 10}
    data = {"custom_task": CUSTOM, "selection": selection}
    e = refused({**BERT, "task": "reviews", "data": data})
    assert e.field == "data.selection.target"
    assert "custom task 'reviews' has no test split" in str(e)
    dev = {**selection, "target": "dev"}
    e = refused({**BERT, "task": "reviews", "data": {**data, "selection": dev}})
    assert "leaks the evaluation set" in str(e)
    assert "name other in-domain text (a custom task has no test text)" in str(e)
    ok = {**data, "selection": {"method": "dsir", "k": 10, "target": "file:/unlabelled.txt"}}
    SearchSpec.from_dict({**BERT, "task": "reviews", "data": ok})


@pytest.mark.parametrize(
    ("selection", "words"),
    [
        ({"method": "dsir", "k": 100_000}, "100000 is more than the 67349 examples of sst2's"),
        ({"method": "random", "size": 67_349}, "67349 is all the 67349 examples of sst2's"),
    ],
)
def test_a_selection_past_a_glue_training_split_is_refused_at_launch(
    selection: dict[str, Any], words: str
) -> None:
    """DSIR's k past the split failed every trial on its worker; random's size past it kept
    the whole split (no selection) with a warning only."""
    e = refused({**BERT, "data": {"selection": selection}})
    assert words in str(e) and e.field.startswith("data.selection.")
    e = refused(
        {
            **BERT,
            "task": "rte",
            "data_space": {
                "selection": [
                    {"method": "random", "size": 2000},
                    {"method": "random", "size": 5000},
                ]
            },
        }
    )
    assert e.field == "data_space.selection[1].size" and "2490 examples of rte's" in str(e)
    SearchSpec.from_dict({**BERT, "data": {"selection": {"method": "dsir", "k": 67_348}}})
    e = refused({**BERT, "data": {"selection": {"method": "dsir", "k": 67_349}}})
    assert "is all the 67349 examples of sst2's training split: the whole split is kept" in str(e)
    # multi-task: each task's split is selected from on its own; a size past RTE's only is a
    # real choice for SST-2 (refused before), but a DSIR k past it fails RTE's trials
    SearchSpec.from_dict(
        {
            **BERT,
            "tasks": ["rte", "sst2"],
            "data": {"selection": {"method": "random", "size": 3000}},
        }
    )
    e = refused(
        {**BERT, "tasks": ["rte", "sst2"], "data": {"selection": {"method": "dsir", "k": 3000}}}
    )
    assert "3000 is more than the 2490 examples of rte's" in str(e)


def test_a_curriculum_that_covers_every_training_example_is_refused_at_launch() -> None:
    """min_examples (default 1000) at or past every example the data can hold: each epoch
    sees them all, which the worker said only after training."""
    for data, where in (
        ({"selection": {"method": "random", "size": 900}}, "810 items the curriculum orders"),
        ({"train_subset": 500}, "450 items the curriculum orders on sst2 (data.train_subset 500"),
        ({"task": "wnli"}, "571 items the curriculum orders on wnli (the training split, less"),
        ({"train_subset": 1050}, "945 items the curriculum orders on sst2 (data.train_subset 1050"),
        ({"selection": {"method": "dsir", "fraction": 0.01}}, "data.selection's 673, less"),
    ):
        e = refused({**BERT, "data": {**data, "curriculum": {"method": "pudf"}}})
        assert e.field == "data.curriculum.min_examples" and where in str(e), str(e)
        assert "changes nothing" in str(e) and "give min_examples below" in str(e)
    fine = {"train_subset": 500, "curriculum": {"method": "competency", "min_examples": 100}}
    SearchSpec.from_dict({**BERT, "data": fine})
    SearchSpec.from_dict({**BERT, "data": {"curriculum": {"method": "pudf"}}})  # sst2: 67k


def test_a_dsir_selection_without_a_target_is_given_the_one_it_means() -> None:
    """The default target changed (dev, which leaked, to test): a launched spec names it, so
    its candidates and their fingerprints say which; a study stored before keeps dev, as it
    trained (its data_space labels, Optuna's choices, stay as written)."""
    unnamed = {"method": "dsir", "k": 100}
    launched = SearchSpec.from_dict({**BERT, "data": {"selection": unnamed}})
    assert launched.data["selection"] == {**unnamed, "target": "test"}
    assert SearchSpec.from_json(launched.to_json()).data["selection"]["target"] == "test"
    stored = SearchSpec.from_dict({**BERT, "data": {"selection": unnamed}}, stored=True)
    assert stored.data["selection"] == {**unnamed, "target": "dev"}
    space = {"selection": [{"method": "none"}, unnamed]}
    searched = SearchSpec.from_dict({**BERT, "data_space": space})
    assert searched.data_choices is not None
    assert searched.data_choices.labels["selection"] == ["none", "dsir k=100 target=test"]
    old = SearchSpec.from_dict({**BERT, "data_space": space}, stored=True)
    assert old.data_choices is not None
    assert old.data_choices.labels["selection"] == ["none", "dsir k=100"]


def test_a_dsir_target_naming_the_custom_tasks_dev_file_is_refused() -> None:
    for target in ("file:/data/dev.csv", ["train", "file:/data/./dev.csv"]):
        selection = {"method": "dsir", "k": 10, "target": target}
        e = refused(
            {**BERT, "task": "reviews", "data": {"custom_task": CUSTOM, "selection": selection}}
        )
        assert e.field == "data.selection.target" and "the custom task's dev file" in str(e)


def test_a_table_study_cannot_ask_for_more_candidates_than_rows() -> None:
    """500 trials on a 120-row table ran to 1,290 trials (1,173 repeats) before it was stopped."""
    table = {
        **BERT,
        "space": "flexibert-small",
        "trainer": "table",
        "space_options": {"table": TABLE},
    }
    e = refused({**table, "n_trials": 621})
    assert e.field == "n_trials" and "more than the 620 distinct candidates of the table" in str(e)
    assert "give n_trials <= 620" in str(e)
    SearchSpec.from_dict({**table, "n_trials": 620})
    stored = SearchSpec.from_dict({**table, "n_trials": 700}, stored=True)  # still served
    assert stored.n_trials == 700


def test_a_lora_launch_writes_the_training_defaults_into_the_study() -> None:
    """DyLoRA's `frozen` default changed once: a study launched before and resumed after
    trained its new trials the other way, its candidates reading the same. A launch now names
    them; a stored spec is read as it was written."""
    study = {"name": "l", "space": "lora", "trainer": "lora", "n_trials": 2}
    launched = SearchSpec.from_dict({**study, "recipe": {"lora": {"strict": True}}})
    assert launched.recipe["lora"] == {
        "frozen": False,
        "strict": True,
        "rank_dist": "uniform",
        "dropout": 0.0,
    }
    again = SearchSpec.from_dict(launched.to_dict(), stored=True)  # as the server reads it back
    assert again.recipe["lora"] == launched.recipe["lora"]
    stored = SearchSpec.from_dict({**study, "recipe": {"lora": {"strict": True}}}, stored=True)
    assert stored.recipe["lora"] == {"strict": True}
    from archsearch.spaces import make_space

    _, recipe = make_space("lora").candidate_parts(
        {"learning_rate": 1e-3, "alpha": 16, "targets": ["query"], "r_max": 4}, launched.recipe
    )
    assert recipe["lora"]["frozen"] is False and recipe["lora"]["mode"] == "dylora"


def test_an_average_that_reads_none_of_the_tasks_is_refused() -> None:
    """A custom task alone with glue_avg: every trial trained, then failed ("no task it
    averages is present")."""
    data = {"custom_task": CUSTOM}
    e = refused({**BERT, "task": "reviews", "data": data, "objectives": ["glue_avg:max"]})
    assert e.field == "objectives[0].metric"
    assert "are none of them (a custom task is not in any GLUE average)" in str(e)
    mixed = {**BERT, "tasks": ["rte", "reviews"], "data": data, "objectives": ["glue_avg:max"]}
    SearchSpec.from_dict(mixed)  # the GLUE tasks among them are averaged


@pytest.mark.parametrize("recipe", [{"init": "teacher"}, {"distill": {"mode": "logits"}}])
def test_a_teacher_on_a_custom_task_is_refused(recipe: dict[str, Any]) -> None:
    """Each trial failed three times (retried as a machine's failure) with "no standard
    teacher recipe for task 'reviews' ... (pass recipe= explicitly)", a Python-level fix."""
    fits = {"num_hidden_layers": [2], "hidden_size": [128], "num_attention_heads": [4]}
    spec = {**BERT, "task": "reviews", "data": {"custom_task": CUSTOM}, "space_options": fits}
    e = refused({**spec, "recipe": recipe})
    assert e.field == f"recipe.{next(iter(recipe))}"
    SearchSpec.from_dict({**spec, "recipe": {}})  # without a teacher it launches
    assert "custom task 'reviews' has no teacher recipe" in str(e)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"custom_task": {**CUSTOM, "train": "train.csv"}}, "data.custom_task.train"),
        (
            {"selection": {"method": "dsir", "k": 9, "target": "file:t.txt"}},
            "data.selection.target",
        ),
        (
            {"selection": {"method": "dsir", "k": 9, "target": ["test", "mine.jsonl"]}},
            "data.selection.target",
        ),
    ],
)
def test_a_relative_data_path_is_refused(data: dict[str, Any], field: str) -> None:
    """Each worker read it from its own working directory: a launch from the data's folder
    trained on another file of that name, or failed."""
    e = refused({**BERT, "data": data})
    assert e.field == field and "is a relative path" in str(e) and "give an absolute path" in str(e)


def test_a_stored_study_is_served_as_it_was_launched() -> None:
    """Checks added since a study was launched refused it on restart (glue_avg on a custom
    task: unservable, undeletable) or stopped it on resume (a loop's candidate re-checked
    with the spec's own data: a relative target, DSIR fraction 1)."""
    from archsearch.server._stored_defaults import candidate_data

    data = {"custom_task": CUSTOM}
    stored = {**BERT, "task": "reviews", "data": data, "objectives": ["glue_avg:max"]}
    SearchSpec.from_dict(stored, stored=True)
    old = {"task": "wnli", "selection": {"method": "dsir", "fraction": 1.0, "target": "f.txt"}}
    assert candidate_data(old, {}, "2026-12-07T12:00:00+00:00") == old
    loop = {"selection": {"method": "dsir", "k": 5, "target": "dev"}}  # the loop's own: checked
    with pytest.raises(SpecError, match=r"suggestion\.data\.selection\.target"):
        candidate_data(old, loop, "2026-12-07T12:00:00+00:00")


def test_distillation_mode_none_on_a_custom_task_uses_no_teacher() -> None:
    fits = {"num_hidden_layers": [2], "hidden_size": [128], "num_attention_heads": [4]}
    spec = {**BERT, "task": "reviews", "data": {"custom_task": CUSTOM}, "space_options": fits}
    SearchSpec.from_dict({**spec, "recipe": {"distill": {"mode": "none"}}})
    SearchSpec.from_dict({**spec, "recipe": {"distill": {}}})


def test_the_dev_file_by_a_bare_path_or_through_home_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = tmp_path / "devlink.txt"  # a bare path ending in .txt is a file source too
    link.symlink_to(SHARED_GLUE / "SST-2" / "dev.tsv")
    e = refused({**BERT, "data": {"selection": {"method": "dsir", "k": 9, "target": str(link)}}})
    assert "leaks the evaluation set" in str(e)
    monkeypatch.setenv("HOME", str(tmp_path))
    dev = tmp_path / "dev.csv"
    dev.write_text("review,stars\na,pos\n")
    custom = {**CUSTOM, "dev": "~/dev.csv"}
    target = {"method": "dsir", "k": 9, "target": f"file:{dev}"}
    e = refused({**BERT, "task": "reviews", "data": {"custom_task": custom, "selection": target}})
    assert "is the custom task's dev file" in str(e)


def test_relative_paths_of_every_data_file_are_refused_and_the_fix_fits_the_path() -> None:
    pool = {"method": "dsir", "pool": ["file:corpus.txt"], "k": 100}
    e = refused({**BERT, "data": {"distill_selection": pool}})
    assert e.field == "data.distill_selection.pool"
    e = refused({**FLEXIBERT, "recipe": {"pretrain_steps": 20, "pretrain_text": "c.txt"}})
    assert e.field == "recipe.pretrain_text"
    target = {"method": "dsir", "k": 9, "target": "file:$DATA/t.txt"}
    e = refused({**BERT, "data": {"selection": target}})
    assert "workers do not expand environment variables" in str(e)
    target = {"method": "dsir", "k": 9, "target": "file:C:/data/t.txt"}
    assert "POSIX" in str(refused({**BERT, "data": {"selection": target}}))
    for home in ("file:~/t.txt", "file:~bob/t.txt"):  # the worker's home, or bob's there
        SearchSpec.from_dict({**BERT, "data": {"selection": {**target, "target": home}}})


def test_a_stored_studys_searched_selection_is_not_checked_again() -> None:
    """A data_space value launched before the dev-file-by-path check stopped its study when
    the loop chose it."""
    from archsearch.server._stored_defaults import candidate_data

    value = {"method": "dsir", "k": 300, "target": "file:/glue/SST-2/dev.tsv"}
    chosen = {"selection": value}
    spec_data = {"task": "sst2"}
    when = "2026-12-07T12:00:00+00:00"
    assert candidate_data(spec_data, chosen, when, [value])["selection"] == value
    with pytest.raises(SpecError):  # a loop's own choice, outside the data space: checked
        candidate_data(spec_data, chosen, when)


def test_a_nul_byte_in_a_data_path_is_a_spec_error() -> None:
    """It raised ValueError ("embedded null byte") from the launch check: INTERNAL."""
    target = {"method": "dsir", "k": 9, "target": "file:/a\x00b/dev.tsv"}
    e = refused({**BERT, "data": {"selection": target}})
    assert e.field == "data.selection.target" and "NUL byte" in str(e)
