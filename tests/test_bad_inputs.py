"""Bad input is refused where it enters, before any work: each case names the parameter
and the value, raises ParameterError (a ValueError), and writes nothing."""

from __future__ import annotations

import math
import os

import pytest
import torch

from selfish_lib.engine.losses import hns_cross_entropy, nucleus_margin
from selfish_lib.engine.model import ModelConfig
from selfish_lib.engine.objectives import HardNegatives, make_objective
from selfish_lib.engine.profiles import get_profile
from selfish_lib.engine.runs import get_or_train, get_or_train_grid, verify_store
from selfish_lib.engine.training import TrainConfig, resolve_device
from selfish_lib.engine.validation import ParameterError
from selfish_lib.report.cli import main as cli

LOGITS = torch.zeros(2, 3, 5)
TARGETS = torch.zeros(2, 3, dtype=torch.long)


def flat(**fields):
    return lambda: TrainConfig.flat(**fields)


# (case id, call, parameter named, value shown)
API_CASES = [
    ("batch_size 0", flat(batch_size=0), "batch_size", "0"),
    ("max_steps 0", flat(max_steps=0), "max_steps", "0"),
    ("max_steps float", flat(max_steps=1.5), "max_steps", "1.5"),
    ("max_steps bool", flat(max_steps=True), "max_steps", "True"),
    ("learning_rate 0", flat(learning_rate=0.0), "learning_rate", "0.0"),
    ("learning_rate negative", flat(learning_rate=-1e-3), "learning_rate", "-0.001"),
    ("learning_rate text", flat(learning_rate="fast"), "learning_rate", "'fast'"),
    ("min_lr above lr", flat(min_lr=1.0), "min_lr", "1.0"),
    ("warmup negative", flat(warmup_steps=-1), "warmup_steps", "-1"),
    ("beta1 one", flat(beta1=1.0), "beta1", "1.0"),
    ("beta2 one", flat(beta2=1.0), "beta2", "1.0"),
    ("beta1 negative", flat(beta1=-0.1), "beta1", "-0.1"),
    ("weight_decay negative", flat(weight_decay=-0.1), "weight_decay", "-0.1"),
    ("grad_clip zero", flat(grad_clip=0.0), "grad_clip", "0.0"),
    ("grad_clip nan", flat(grad_clip=math.nan), "grad_clip", "nan"),
    ("seed negative", flat(seed=-1), "seed", "-1"),
    ("seed float", flat(seed=0.5), "seed", "0.5"),
    ("eval_interval 0", flat(eval_interval=0), "eval_interval", "0"),
    ("log_interval 0", flat(log_interval=0), "log_interval", "0"),
    ("checkpoint_interval 0", flat(checkpoint_interval=0), "checkpoint_interval", "0"),
    ("scenario_interval negative", flat(scenario_interval=-2), "scenario_interval", "-2"),
    ("p_low above 1", flat(bilingual=True, p_low=1.5), "p_low", "1.5"),
    ("p_low without bilingual", flat(p_low=0.02), "p_low", "0.02"),
    ("bilingual text", flat(bilingual="yes"), "bilingual", "'yes'"),
    ("dropout one", flat(dropout=1.0), "dropout", "1.0"),
    ("dropout negative", flat(dropout=-0.1), "dropout", "-0.1"),
    ("bias 2", flat(bias=2), "bias", "2"),
    ("n_layer 0", flat(n_layer=0), "n_layer", "0"),
    ("n_head 0", flat(n_head=0), "n_head", "0"),
    ("n_embd not a multiple", flat(n_embd=30, n_head=4), "n_embd", "30"),
    ("block_size 0", flat(block_size=0), "block_size", "0"),
    ("data_sha256 short", flat(data_sha256="abc"), "data_sha256", "'abc'"),
    ("tokenizer unknown", flat(tokenizer="bytes"), "tokenizer", "'bytes'"),
    ("tokenizer size 1", flat(tokenizer="bpe-1"), "tokenizer", "'bpe-1'"),
    ("tokenizer size huge", flat(tokenizer="bpe-100000"), "tokenizer", "'bpe-100000'"),
    ("unknown field", flat(colour="red"), "TrainConfig field", "'colour'"),
    ("model not a ModelConfig", flat(model={"n_layer": 2}), "model", "{'n_layer': 2}"),
    ("layout negative", flat(layout=-1.0), "layout", "-1.0"),
    ("layout minus inf", flat(layout=-math.inf), "layout", "-inf"),
    ("layout nan", flat(layout=math.nan), "layout", "nan"),
    ("layout text", flat(layout="abc"), "layout", "'abc'"),
    ("schedule unknown", flat(layout=2.0, layout_schedule="step"), "layout_schedule", "'step'"),
    ("schedule without layouts", flat(layout_schedule="linear"), "layout", "inf"),
    ("end without schedule", flat(layout=2.0, layout_end=1.0), "layout_end", "1.0"),
    ("HNS infinite layout", lambda: HardNegatives(math.inf), "layout", "inf"),
    ("objective unknown", lambda: make_objective("magic"), "objective", "'magic'"),
    ("objective a string", lambda: TrainConfig(objective="HNS"), "objective", "'HNS'"),
    ("ModelConfig bias", lambda: ModelConfig(bias="no"), "bias", "'no'"),
    ("profile unknown", lambda: get_profile("huge"), "profile", "'huge'"),
    ("seeds repeated", lambda: get_profile("smoke", [1, 1]), "seeds", "[1, 1]"),
    ("seeds empty", lambda: get_profile("smoke", []), "seeds", "[]"),
    ("seeds negative", lambda: get_profile("smoke", [-1]), "seeds", "[-1]"),
    ("seeds a string", lambda: get_profile("smoke", "12"), "seeds", "'12'"),
    ("setting unknown", lambda: get_profile("smoke").config("trilingual"), "setting", "'tri"),
    ("device cpu:1", lambda: resolve_device("cpu:1"), "device", "'cpu:1'"),
    ("device cpu:abc", lambda: resolve_device("cpu:abc"), "device", "'cpu:abc'"),
    ("device tpu", lambda: resolve_device("tpu"), "device", "'tpu'"),
    ("device number", lambda: resolve_device(3), "device", "3"),
    ("device empty", lambda: resolve_device(""), "device", "''"),
    (
        "loss shapes differ",
        lambda: hns_cross_entropy(LOGITS, torch.zeros(2, 4, dtype=torch.long)),
        "targets",
        "(2, 4)",
    ),
    (
        "loss id >= V",
        lambda: hns_cross_entropy(LOGITS, torch.full((2, 3), 5, dtype=torch.long)),
        "targets",
        "5",
    ),
    (
        "loss negative id",
        lambda: hns_cross_entropy(LOGITS, torch.full((2, 3), -3, dtype=torch.long)),
        "targets",
        "-3",
    ),
    ("loss float targets", lambda: hns_cross_entropy(LOGITS, TARGETS.float()), "targets", "float"),
    ("loss integer logits", lambda: hns_cross_entropy(TARGETS, TARGETS), "logits", "Tensor"),
    (
        "loss reduction",
        lambda: hns_cross_entropy(LOGITS, TARGETS, reduction="avg"),
        "reduction",
        "'avg'",
    ),  # fmt: skip
    ("loss layout -inf", lambda: hns_cross_entropy(LOGITS, TARGETS, -math.inf), "layout", "-inf"),
    ("nucleus top_p 1", lambda: nucleus_margin(65, 1.0), "top_p", "1.0"),
    ("nucleus vocab 1", lambda: nucleus_margin(1, 0.9), "vocab_size", "1"),
    # integers no run can hold: refused by name, never an OverflowError, shown shortened
    ("seed past 2**63", flat(seed=2**63), "seed", "9223372036854775808"),
    ("seeds past 2**63", lambda: get_profile("smoke", [0, 10**20]), "seeds", "10000000000"),
    ("max_steps huge", flat(max_steps=10**400), "max_steps", "<an integer of 401 digits>"),
    ("learning_rate huge int", flat(learning_rate=10**400), "learning_rate", "401 digits"),
    ("grad_clip huge int", flat(grad_clip=-(10**400)), "grad_clip", "a negative integer"),
    ("layout huge int", flat(layout=10**400), "layout", "401 digits"),
    ("loss layout huge int", lambda: hns_cross_entropy(LOGITS, TARGETS, 10**400), "layout",
     "401 digits"),
    ("nucleus top_p huge int", lambda: nucleus_margin(65, 10**400), "top_p", "401 digits"),
    ("nucleus vocab huge", lambda: nucleus_margin(10**30, 0.9), "vocab_size", "10000000000"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "name", "shown"), [c[1:] for c in API_CASES],
                         ids=[c[0] for c in API_CASES])  # fmt: skip
def test_api_refuses_bad_input_naming_parameter_and_value(call, name, shown):
    with pytest.raises(ParameterError) as err:
        call()
    message = str(err.value)
    assert err.value.name == name, message
    assert f"invalid {name}=" in message and shown in message, message


def store_cases(tmp_path, tiny_corpus):
    config = TrainConfig.flat(max_steps=2, n_layer=1, n_embd=8, n_head=1, block_size=8,
                              data_sha256=tiny_corpus.sha256)  # fmt: skip
    afile = tmp_path / "a_file"
    afile.write_text("not a folder")
    kw = dict(corpus=tiny_corpus, progress=False)
    return [
        ("results_dir empty", lambda: get_or_train(config, results_dir="", **kw), "results_dir"),
        (
            "results_dir a file",
            lambda: get_or_train(config, results_dir=afile, **kw),
            "results_dir",
        ),  # fmt: skip
        (
            "results_dir below a file",
            lambda: get_or_train(config, results_dir=afile / "x", **kw),
            "results_dir",
        ),  # fmt: skip
        (
            "device on the store",
            lambda: get_or_train(config, results_dir=tmp_path / "s", device="cpu:7", **kw),
            "device",
        ),  # fmt: skip
        (
            "grid device",
            lambda: get_or_train_grid(
                {"a": config}, results_dir=tmp_path / "s", device="gpu", **kw
            ),
            "device",
        ),  # fmt: skip
        ("verify a file", lambda: verify_store(afile), "results_dir"),
    ]


STORE_IDS = [
    "results_dir empty",
    "results_dir a file",
    "results_dir below a file",
    "device on the store",
    "grid device",
    "verify a file",
]


@pytest.mark.parametrize("case", STORE_IDS)
def test_store_refuses_bad_input_and_writes_nothing(case, tmp_path, tiny_corpus, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cases = {c[0]: c for c in store_cases(tmp_path, tiny_corpus)}
    _, call, name = cases[case]
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ParameterError) as err:
        call()
    assert err.value.name == name
    assert sorted(os.listdir(tmp_path)) == before  # no run folder, no store


# --- the command line: exit status 2, one line naming the parameter and the value ----

CLI_CASES = [
    ("reproduce profile", ["reproduce", "--profile", "huge"], "profile", "huge"),
    ("reproduce device cpu:1", ["reproduce", "--device", "cpu:1"], "device", "cpu:1"),
    ("reproduce device cpu:abc", ["reproduce", "--device", "cpu:abc"], "device", "cpu:abc"),
    ("reproduce device tpu", ["reproduce", "--device", "tpu"], "device", "tpu"),
    ("reproduce seeds negative", ["reproduce", "--seeds", "-1"], "seeds", "-1"),
    ("reproduce seeds repeated", ["reproduce", "--seeds", "1", "1"], "seeds", "[1, 1]"),
    ("reproduce seeds text", ["reproduce", "--seeds", "a"], "--seeds", "'a'"),
    ("reproduce only unknown", ["reproduce", "--only", "99"], "only", "99"),
    ("reproduce results empty", ["reproduce", "--results-dir", ""], "results_dir", "''"),
    ("reproduce results a file", ["reproduce", "--results-dir", "{file}"], "results_dir", "a_file"),
    ("reproduce reports a file", ["reproduce", "--reports-dir", "{file}"], "reports_dir", "a_file"),
    ("reproduce reports empty", ["reproduce", "--reports-dir", ""], "reports_dir", "''"),
    ("param bad value", ["reproduce", "--only", "01", "--param", "01_hypothesis:layout=abc"],
     "layout", "abc"),
    ("param negative layout", ["reproduce", "--only", "03", "--param", "03_hns_training:layout=-1"],
     "layout", "-1"),
    ("param smoothing", ["reproduce", "--only", "03", "--param", "03_hns_training:smoothing=0"],
     "smoothing", "0"),
    ("param owned profile", ["reproduce", "--only", "01", "--param", "01_hypothesis:profile=paper"],
     "extra_parameters", "profile"),
    ("param owned seeds", ["reproduce", "--only", "01", "--param", "01_hypothesis:seeds=[1]"],
     "extra_parameters", "seeds"),
    ("param owned results", ["reproduce", "--only", "01", "--param",
                             "01_hypothesis:results_dir=x"], "extra_parameters", "results_dir"),
    ("param unknown name", ["reproduce", "--only", "01", "--param", "01_hypothesis:nope=1"],
     "extra_parameters", "nope"),
    ("param unknown notebook", ["reproduce", "--only", "01", "--param", "99_x:layout=1"],
     "extra_parameters", "99_x"),
    ("param no colon", ["reproduce", "--param", "layout"], "--param", "layout"),
    ("param top_p", ["reproduce", "--only", "06", "--param", "06_layout_explorer:top_p=1.5"],
     "top_p", "1.5"),
    ("param layouts", ["reproduce", "--only", "06", "--param", "06_layout_explorer:layouts=[-1]"],
     "layouts", "-1"),
    ("train layout negative", ["train", "--layout", "-1"], "layout", "-1"),
    ("train layout -inf", ["train", "--layout=-inf"], "layout", "-inf"),
    ("train layout text", ["train", "--layout", "abc"], "layout", "abc"),
    ("train setting", ["train", "--setting", "tri"], "setting", "tri"),
    ("train seed negative", ["train", "--seed", "-1"], "seed", "-1"),
    ("train profile", ["train", "--profile", "huge"], "profile", "huge"),
    ("train tokenizer", ["train", "--tokenizer", "bpe-x"], "tokenizer", "bpe-x"),
    ("train tokenizer small", ["train", "--tokenizer", "bpe-50"], "tokenizer", "bpe-50"),
    ("train tokenizer large", ["train", "--tokenizer", "bpe-20000"], "tokenizer", "bpe-20000"),
    ("train tokenizer low_only", ["train", "--setting", "low_only", "--tokenizer", "bpe-256"],
     "setting", "low_only"),
    ("param sizes small", ["reproduce", "--only", "08", "--param", "08_subword_scale:sizes=[50]"],
     "sizes", "[50]"),
    ("param sizes repeated", ["reproduce", "--only", "08", "--param",
                              "08_subword_scale:sizes=[256, 256]"], "sizes", "[256, 256]"),
    ("train device", ["train", "--device", "cpu:abc"], "device", "cpu:abc"),
    ("train results a file", ["train", "--results-dir", "{file}"], "results_dir", "a_file"),
    ("train results empty", ["train", "--results-dir", ""], "results_dir", "''"),
    ("runs results a file", ["runs", "--results-dir", "{file}"], "results_dir", "a_file"),
    ("verify results a file", ["verify", "--results-dir", "{file}"], "results_dir", "a_file"),
    ("report profile", ["report", "--profile", "huge"], "profile", "huge"),
    ("train seed past 2**63", ["train", "--seed", "9" * 20], "seed", "9" * 20),
    ("reproduce seeds past 2**63", ["reproduce", "--seeds", "0", "9" * 20], "seeds", "9" * 20),
    ("reproduce jobs beyond the machine", ["reproduce", "--jobs", "100000"], "--jobs",
     "100000"),
    ("param huge int", ["reproduce", "--only", "01", "-p", "layout=" + "9" * 400], "layout",
     "<an integer of 400 digits>"),
    ("param nested too deep", ["reproduce", "--only", "01", "-p", "layout=" + "-" * 3000 + "1"],
     "layout=", "nested too deeply"),
    ("param repeated", ["reproduce", "--only", "03", "-p", "layout=2", "-p", "03:layout=3"],
     "03_hns_training:layout", "once"),
    ("param temperature huge", ["reproduce", "--only", "09", "-p", "temperature=" + "9" * 400],
     "temperature", "400 digits"),
    ("param bins huge", ["reproduce", "--only", "09", "-p", "bins=10**400"], "bins",
     "'10**400'"),
    ("param sample_length a billion", ["reproduce", "--only", "04", "-p",
                                       "sample_length=1000000000"], "sample_length", "100000"),
    ("param layouts leave out layout", ["reproduce", "--only", "06", "-p",
                                        "layouts=[1.0, inf]"], "layouts", "[1.0, inf]"),
    ("unknown command", ["serve"], "COMMAND", "serve"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "name", "shown"), [c[1:] for c in CLI_CASES],
                         ids=[c[0] for c in CLI_CASES])  # fmt: skip
def test_cli_refuses_bad_input_with_one_line_and_status_2(
    argv, name, shown, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    afile = tmp_path / "a_file"
    afile.write_text("not a folder")
    argv = [a.replace("{file}", str(afile)) for a in argv]
    defaults = []
    if argv[0] in ("reproduce", "train") and "--results-dir" not in argv:
        defaults += ["--results-dir", str(tmp_path / "results")]
    if argv[0] == "reproduce" and "--reports-dir" not in argv:
        defaults += ["--reports-dir", str(tmp_path / "reports")]
    before = sorted(os.listdir(tmp_path))
    status = cli([*argv, *defaults])
    err = capsys.readouterr().err
    assert status == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    last = lines[-1]
    assert name in last and shown in last, err
    assert sorted(os.listdir(tmp_path)) == before  # no run, no report, no folder
