"""Reruns you can trust: a saved training state resumes only the run definition that wrote it (fingerprint),
a finished run retrains when forced, damaged state falls back to the previous save or a fresh start, and
SIGTERM / SIGUSR1 save at the next step boundary and exit non-zero, the retry resuming to the same model."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_pretrain import corpus, tiny_hparams  # noqa: F401 - corpus: the session fixture

from plus.data import convert as C
from plus.io import InputError, read_json
from plus.train.evaluate import evaluate
from plus.train.finetune import finetune
from plus.train.pretrain import pretrain
from plus.train.state import StateFile, definition_changes, fingerprint, run_definition

ROOT = Path(__file__).parents[1]
SAVED = re.compile(r"(SIG\w+) arrived after step (\d+): saved at step (\d+) to (\S+); exiting with status (\d+)")


def with_saves(hp: dict, every_steps) -> dict:
    return {**hp, "save_every_steps": every_steps} if every_steps else hp


def short_hparams(save_every_steps=None, **train):
    """20 steps of a tiny PLUS-RNN, evaluated at 10 and 20."""
    return with_saves(tiny_hparams(max_steps=20, eval_every=10, **train), save_every_steps)


def run(corpus_dir, out: Path, hp, seed=3):
    return pretrain(corpus_dir, seed, hp, out / "state", out / "model.pt", out / "metrics.json", out / "curve.csv",
                    progress=False)


def same_model(a: Path, b: Path) -> bool:
    x, y = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def curve(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).drop(columns="elapsed_s")


def resumed_at(err: str) -> list[tuple[str, int]]:
    return [(Path(p).name, int(s)) for p, s in re.findall(r"resumed from (\S+) at step (\d+)", err)]


@pytest.fixture(scope="module")
def straight(corpus, tmp_path_factory):  # noqa: F811
    """An uninterrupted run of `short_hparams()` in a fresh directory."""
    out = tmp_path_factory.mktemp("straight")
    run(corpus, out, short_hparams())
    return out


# ------------------------------------------------------------------ run definition
def test_fingerprint_ignores_only_settings_that_cannot_change_the_result():
    hp = short_hparams()
    base = run_definition("pretrain", 3, hp, {"corpus": "a"})
    for change in ({"save_every_minutes": 1}, {"save_every_steps": 7}, {"threads": 2}, {"allow_cpu": False},
                   {"train": {**hp["train"], "num_workers": 2}}, {"model": {**hp["model"], "gpus": 1}}):
        assert fingerprint(run_definition("pretrain", 3, {**hp, **change}, {"corpus": "a"})) == fingerprint(base)
    for change in ({"train": {**hp["train"], "lr": 1e-4}}, {"train": {**hp["train"], "max_steps": 21}},
                   {"train": {**hp["train"], "eval_batch_size": 32}}, {"model": {**hp["model"], "hidden_dim": 17}},
                   {"fidelity": {"b1_drop_second_mlm_loss": False}}):
        assert fingerprint(run_definition("pretrain", 3, {**hp, **change}, {"corpus": "a"})) != fingerprint(base)
    assert fingerprint(run_definition("pretrain", 4, hp, {"corpus": "a"})) != fingerprint(base)
    assert fingerprint(run_definition("pretrain", 3, hp, {"corpus": "b"})) != fingerprint(base)
    assert fingerprint(run_definition("pretrain", 3, hp, {"corpus": "a"}, world_size=2)) != fingerprint(base)
    changed = run_definition("pretrain", 3, {**hp, "train": {**hp["train"], "lr": 1e-4}}, {"corpus": "b"})
    assert definition_changes(base, changed) == 'hparams.train.lr 0.003 -> 0.0001, inputs.corpus "a" -> "b"'


# ------------------------------------------------------------------ changed setting, forced rerun
@pytest.mark.parametrize("first", ["finished", "interrupted"])
def test_changed_setting_discards_the_state_and_trains_from_scratch(corpus, tmp_path, capsys, first,  # noqa: F811
                                                                    signal_after_save):
    hp, new = short_hparams(save_every_steps=4), short_hparams(save_every_steps=4, lr=2e-3)
    if first == "interrupted":
        signal_after_save(1)
        with pytest.raises(SystemExit):
            run(corpus, tmp_path / "run", hp)
        signal_after_save(0)
    else:
        run(corpus, tmp_path / "run", hp)
    capsys.readouterr()
    run(corpus, tmp_path / "run", new)
    err = capsys.readouterr().err
    state = tmp_path / "run/state/last.pt"
    lines = [ln for ln in err.splitlines() if "another run definition" in ln]
    assert lines == [f"{state}: saved by another run definition (changed: hparams.train.lr 0.003 -> 0.002); "
                     "moved aside to *.discarded, starting fresh"]
    assert "resumed" not in err and (tmp_path / "run/state/last.pt.discarded").exists()
    run(corpus, tmp_path / "clean", new)
    assert same_model(tmp_path / "run/model.pt", tmp_path / "clean/model.pt")
    m, clean = read_json(tmp_path / "run/metrics.json"), read_json(tmp_path / "clean/metrics.json")
    assert m["run_fingerprint"] == clean["run_fingerprint"] == fingerprint(m["run_definition"])
    assert m["run_definition"]["hparams"]["train"]["lr"] == 2e-3


def test_rerun_of_a_finished_run_retrains_from_step_0_to_the_same_model(corpus, straight, tmp_path, capsys):  # noqa: F811
    run(corpus, tmp_path, short_hparams())
    first = (tmp_path / "model.pt").read_bytes()
    record = tmp_path / "state/last.pt"
    assert record.stat().st_size < 20_000 and not (tmp_path / "state/previous.pt").exists()  # no tensors kept
    capsys.readouterr()
    run(corpus, tmp_path, short_hparams())
    err = capsys.readouterr().err
    assert f"{record}: its run finished at step 20: starting fresh" in err and "resumed" not in err
    assert "step 10: val loss" in err  # trained again from step 0
    assert (tmp_path / "model.pt").read_bytes() == first and same_model(tmp_path / "model.pt", straight / "model.pt")


def test_changed_corpus_retrains(corpus, tmp_path, capsys, signal_after_save):  # noqa: F811
    import shutil

    data = tmp_path / "corpus"
    shutil.copytree(corpus, data)
    signal_after_save(1)
    with pytest.raises(SystemExit):
        run(data, tmp_path, short_hparams(save_every_steps=4))
    signal_after_save(0)
    stats = json.loads((data / "stats.json").read_text())
    stats["note"] = "re-preprocessed"
    (data / "stats.json").write_text(json.dumps(stats))
    capsys.readouterr()
    run(data, tmp_path, short_hparams(save_every_steps=4))
    err = capsys.readouterr().err
    assert "another run definition (changed: inputs.corpus" in err and "resumed" not in err


# ------------------------------------------------------------------ damaged state
class PlantedCode:
    """A pickle that runs code when unpickled (touches a file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def damage(path: Path, how: str, tmp_path: Path):
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif how == "random_bytes":
        path.write_bytes(np.random.default_rng(0).bytes(50_000))
    elif how == "planted_code":
        torch.save({"format": 2, "payload": PlantedCode(tmp_path / "code_ran")}, path)
    else:
        state = torch.load(path, weights_only=True)
        if how == "wrong_keys":
            del state["payload"]["optimizer"]
        else:  # wrong_shapes, fingerprint intact
            name = next(iter(state["payload"]["model"]))
            state["payload"]["model"][name] = torch.zeros(3, 5)
        torch.save(state, path)


@pytest.mark.parametrize("how", ["truncated", "random_bytes", "wrong_keys", "wrong_shapes", "planted_code"])
def test_damaged_last_save_falls_back_to_the_previous_one(corpus, straight, tmp_path, capsys, how,  # noqa: F811
                                                          signal_after_save):
    hp = short_hparams(save_every_steps=4)
    signal_after_save(2)  # saves at steps 4 and 8, then SIGTERM
    with pytest.raises(SystemExit) as stopped:
        run(corpus, tmp_path, hp)
    signal_after_save(0)
    assert stopped.value.code == 128 + signal.SIGTERM
    last = tmp_path / "state/last.pt"
    assert torch.load(tmp_path / "state/previous.pt", weights_only=True)["payload"]["step"] == 4
    damage(last, how, tmp_path)
    capsys.readouterr()
    run(corpus, tmp_path, hp)
    err = capsys.readouterr().err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {last}: ")
    assert warnings[0].endswith("moved aside to last.pt.corrupt") and (tmp_path / "state/last.pt.corrupt").exists()
    assert "Traceback" not in err and resumed_at(err) == [("previous.pt", 4)]
    assert not (tmp_path / "code_ran").exists()
    assert same_model(tmp_path / "model.pt", straight / "model.pt")


def test_both_saves_damaged_start_fresh(corpus, straight, tmp_path, capsys, signal_after_save):  # noqa: F811
    signal_after_save(2)
    with pytest.raises(SystemExit):
        run(corpus, tmp_path, short_hparams(save_every_steps=4))
    signal_after_save(0)
    for name in ("last.pt", "previous.pt"):
        damage(tmp_path / "state" / name, "random_bytes", tmp_path)
    capsys.readouterr()
    run(corpus, tmp_path, short_hparams(save_every_steps=4))
    err = capsys.readouterr().err
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert [w.split(":")[1].strip() for w in warnings] == [str(tmp_path / "state/last.pt"),
                                                             str(tmp_path / "state/previous.pt")]
    assert "resumed" not in err and same_model(tmp_path / "model.pt", straight / "model.pt")


def test_an_old_pickled_state_is_refused_without_running_it(corpus, straight, tmp_path, capsys):  # noqa: F811
    """The state of earlier versions (pickled NumPy RNG state, weights_only=False) is not unpickled."""
    state = tmp_path / "state/last.pt"
    state.parent.mkdir()
    torch.save({"step": 5, "rng": {"numpy": np.random.get_state()}}, state)
    run(corpus, tmp_path, short_hparams())
    err = capsys.readouterr().err
    assert f"warning: {state}: damaged or unreadable training state (UnpicklingError" in err
    assert same_model(tmp_path / "model.pt", straight / "model.pt")


# ------------------------------------------------------------------ signals
STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _reap():
    """Kill what a failed test left running (each run is its own process group: torchrun and its workers)."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def pretrain_process(corpus_dir, out: Path, hp, log: Path, launcher=None):
    cmd = [*(launcher or [sys.executable, "-m", "plus.cli"]), "pretrain", "--corpus", str(corpus_dir),
           "--seed", "3", "--hparams", json.dumps(hp), "--state-dir", str(out / "state"),
           "--out-model", str(out / "model.pt"), "--out-metrics", str(out / "metrics.json"),
           "--out-curve", str(out / "curve.csv")]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    proc.log = log
    STARTED.append(proc)
    return proc


def wait_for(proc, pattern: str, timeout=300):
    t0 = time.monotonic()
    while not re.search(pattern, proc.log.read_text()):
        assert proc.poll() is None, f"ended before {pattern!r}:\n{proc.log.read_text()[-3000:]}"
        assert time.monotonic() - t0 < timeout, f"no {pattern!r} in {timeout} s"
        time.sleep(0.02)


def long_hparams():
    """60 steps, evaluated every 5, no periodic save (a save on a signal is the only one)."""
    return with_saves(tiny_hparams(max_steps=60, eval_every=5), 10**6)


@pytest.fixture(scope="module")
def long_straight(corpus, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("long")
    proc = pretrain_process(corpus, out, long_hparams(), out / "log.txt")
    assert proc.wait() == 0, proc.log.read_text()[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_at_a_random_step_saves_within_one_step_and_the_retry_resumes_bitwise(corpus, long_straight,  # noqa: F811
                                                                                    tmp_path, sig):
    proc = pretrain_process(corpus, tmp_path, long_hparams(), tmp_path / "first.log")
    wait_for(proc, r"step 5: val loss")
    time.sleep(np.random.default_rng().uniform(0, 1.0))  # a random step
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 128 + sig
    first = proc.log.read_text()
    found = SAVED.search(first)
    assert found, first[-3000:]
    name, arrived, saved, path, status = found.groups()
    assert name == signal.Signals(sig).name and int(status) == 128 + sig and path == str(tmp_path / "state/last.pt")
    assert int(saved) - int(arrived) in (0, 1), found.group(0)  # within one step of the signal
    assert 5 <= int(saved) < 60 and not (tmp_path / "model.pt").exists()
    assert torch.load(path, weights_only=True)["payload"]["step"] == int(saved)
    retry = pretrain_process(corpus, tmp_path, long_hparams(), tmp_path / "retry.log")
    assert retry.wait() == 0, retry.log.read_text()[-3000:]
    assert resumed_at(retry.log.read_text()) == [("last.pt", int(saved))]
    assert same_model(tmp_path / "model.pt", long_straight / "model.pt")
    pd.testing.assert_frame_equal(curve(tmp_path / "curve.csv"), curve(long_straight / "curve.csv"))
    print(f"{name} arrived after step {arrived}, saved at step {saved}")


def test_signal_during_an_evaluation_saves_and_the_retry_evaluates_first(corpus, straight, tmp_path, capsys,  # noqa: F811
                                                                         signal_during_evaluation):
    signal_during_evaluation(2)  # inside the first evaluation (step 10), before its second batch
    with pytest.raises(SystemExit) as stopped:
        run(corpus, tmp_path, short_hparams(max_eval_pairs=200, eval_batch_size=16))
    assert stopped.value.code == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "SIGTERM arrived after step 10: saved at step 10" in err and "step 10: val loss" not in err
    signal_during_evaluation(0)
    run(corpus, tmp_path, short_hparams(max_eval_pairs=200, eval_batch_size=16))
    err = capsys.readouterr().err
    assert resumed_at(err) == [("last.pt", 10)] and err.index("resumed") < err.index("step 10: val loss")
    run(corpus, tmp_path / "clean", short_hparams(max_eval_pairs=200, eval_batch_size=16))
    assert same_model(tmp_path / "model.pt", tmp_path / "clean/model.pt")
    pd.testing.assert_frame_equal(curve(tmp_path / "curve.csv"), curve(tmp_path / "clean/curve.csv"))


@pytest.mark.slow
def test_two_ranks_stop_at_the_same_step_when_one_is_signalled(corpus, tmp_path):  # noqa: F811
    """torchrun, 2 processes: SIGTERM to rank 1 only; rank 0 learns of it through the per-step all-reduce,
    saves the state at that step, both exit non-zero; the retry resumes to the uninterrupted model."""
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node", "2", "-m",
                "plus.cli"]
    hp = long_hparams()
    ref = pretrain_process(corpus, tmp_path / "straight", hp, tmp_path / "straight.log", torchrun)
    proc = pretrain_process(corpus, tmp_path / "run", hp, tmp_path / "first.log", torchrun)
    wait_for(proc, r"step 5: val loss")
    rank = {}
    for pid in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split():
        env = dict(kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in kv)
        if "RANK" in env:
            rank[int(env["RANK"])] = int(pid)
    os.kill(rank[1], signal.SIGTERM)
    assert proc.wait(timeout=120) != 0
    first = proc.log.read_text()
    found = re.search(r"SIGTERM arrived on another rank: saved at step (\d+)", first)
    assert found, first[-3000:]
    assert ref.wait() == 0, ref.log.read_text()[-3000:]
    retry = pretrain_process(corpus, tmp_path / "run", hp, tmp_path / "retry.log", torchrun)
    assert retry.wait() == 0, retry.log.read_text()[-3000:]
    assert resumed_at(retry.log.read_text()).count(("last.pt", int(found.group(1)))) == 2  # both ranks
    assert same_model(tmp_path / "run/model.pt", tmp_path / "straight/model.pt")
    assert read_json(tmp_path / "run/metrics.json")["ranks_in_sync"] is True


# ------------------------------------------------------------------ fine-tuning
FT_TRAIN = {"lr": 3e-3, "batch_size": 16, "eval_batch_size": 64, "max_epochs": 2, "patience": -1,
            "lambda_mlm": 0.3, "lambda_task": 0.7, "max_pred": 10, "max_dev": 30}


def ft_hparams(**train):
    return {"model": tiny_hparams()["model"], "train": {**FT_TRAIN, **train}, "head": ["h", 16], "fidelity": {},
            "allow_cpu": True, "threads": 1, "save_every_minutes": 10, "save_every_steps": 1}


@pytest.fixture(scope="module")
def ft_work(corpus, tmp_path_factory):  # noqa: F811
    """Converted solubility data (48 training records: 3 batches per epoch) and two pre-trained models of
    the same definition but different seeds (a re-trained pre-trained model)."""
    work = tmp_path_factory.mktemp("ft")
    C.convert_task("solubility", "embedded", C.embedded_raw("solubility", ROOT / "data/embedded"), work / "data", 0,
                   max_train=48)
    for seed in (3, 4):
        run(corpus, work / f"pre{seed}", tiny_hparams(max_steps=6, eval_every=6), seed=seed)
    return work


def tune(work, out: Path, hp, pretrained="pre3"):
    finetune("solubility", work / "data", 0, hp, out / "state", out / "model.pt", out / "curve.csv",
             pretrained=work / pretrained / "model.pt", progress=False, out_run=out / "run.json")


def test_finetune_changed_lr_after_a_finished_run_retrains(ft_work, tmp_path, capsys):
    """The issue's reproduction: a per-task lr added after a finished fine-tuning."""
    tune(ft_work, tmp_path / "run", ft_hparams())
    capsys.readouterr()
    tune(ft_work, tmp_path / "run", ft_hparams(lr=1e-4))
    err = capsys.readouterr().err
    assert "saved by another run definition (changed: hparams.train.lr 0.003 -> 0.0001)" in err
    assert "resumed" not in err
    tune(ft_work, tmp_path / "clean", ft_hparams(lr=1e-4))
    assert same_model(tmp_path / "run/model.pt", tmp_path / "clean/model.pt")
    assert read_json(tmp_path / "run/run.json")["run_definition"]["hparams"]["train"]["lr"] == 1e-4


def test_finetune_retrains_when_the_pretrained_model_changes(ft_work, tmp_path, capsys):
    assert not same_model(ft_work / "pre3/model.pt", ft_work / "pre4/model.pt")
    tune(ft_work, tmp_path / "run", ft_hparams(), "pre3")
    capsys.readouterr()
    tune(ft_work, tmp_path / "run", ft_hparams(), "pre4")
    err = capsys.readouterr().err
    assert "another run definition (changed: inputs.pretrained" in err and "resumed" not in err
    tune(ft_work, tmp_path / "clean", ft_hparams(), "pre4")
    assert same_model(tmp_path / "run/model.pt", tmp_path / "clean/model.pt")


@pytest.mark.parametrize("where", ["mid-epoch", "dev evaluation"])
def test_finetune_signal_saves_and_the_retry_resumes_bitwise(ft_work, tmp_path, capsys, where,
                                                             signal_after_save, signal_during_evaluation):
    tune(ft_work, tmp_path / "clean", ft_hparams())
    if where == "mid-epoch":
        signal_after_save(4, signal.SIGUSR1)  # saves: batch 1, 2, end of epoch 1, batch 1 of epoch 2
    else:
        signal_during_evaluation(1)  # the first dev evaluation, before its first batch
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        tune(ft_work, tmp_path / "run", ft_hparams())
    err = capsys.readouterr().err
    want = "SIGUSR1 arrived after epoch 1 batch 1: saved at epoch 1 batch 1" if where == "mid-epoch" else \
        "SIGTERM arrived after epoch 0 batch 3: saved at epoch 0 batch 3"
    assert want in err, err
    assert stopped.value.code in (128 + signal.SIGUSR1, 128 + signal.SIGTERM)
    signal_after_save(0)
    signal_during_evaluation(0)
    tune(ft_work, tmp_path / "run", ft_hparams())
    err = capsys.readouterr().err
    assert ("resumed from" in err) and (want.split("saved at ")[1] in err)
    assert same_model(tmp_path / "run/model.pt", tmp_path / "clean/model.pt")
    pd.testing.assert_frame_equal(curve(tmp_path / "run/curve.csv"), curve(tmp_path / "clean/curve.csv"))


def test_finetune_damaged_state_falls_back(ft_work, tmp_path, capsys, signal_after_save):
    tune(ft_work, tmp_path / "clean", ft_hparams())
    signal_after_save(4)
    with pytest.raises(SystemExit):
        tune(ft_work, tmp_path / "run", ft_hparams())
    signal_after_save(0)
    damage(tmp_path / "run/state/last.pt", "truncated", tmp_path)
    capsys.readouterr()
    tune(ft_work, tmp_path / "run", ft_hparams())
    err = capsys.readouterr().err
    assert f"warning: {tmp_path / 'run/state/last.pt'}: damaged or unreadable training state" in err
    assert "resumed from" in err and "previous.pt at epoch 1 batch 0" in err
    assert same_model(tmp_path / "run/model.pt", tmp_path / "clean/model.pt")


def test_evaluate_records_the_fingerprint_of_the_run_that_trained_the_model(ft_work, tmp_path):
    out = tmp_path / "run"
    tune(ft_work, out, ft_hparams())
    run_record = read_json(out / "run.json")
    m = evaluate("solubility", ft_work / "data", out / "model.pt", 0, ft_hparams(), tmp_path / "metrics.json",
                 tmp_path / "pred.npz", n_boot=0, run_record=out / "run.json")
    assert m["run_fingerprint"] == run_record["run_fingerprint"] == fingerprint(m["run_definition"])
    assert m["model_sha256"] == run_record["model_sha256"] == read_json(tmp_path / "metrics.json")["model_sha256"]
    with pytest.raises(InputError, match="other settings"):  # the model was not trained with these settings
        evaluate("solubility", ft_work / "data", out / "model.pt", 0, ft_hparams(lr=1e-4), tmp_path / "m2.json",
                 tmp_path / "p2.npz", n_boot=0, run_record=out / "run.json")
    tune(ft_work, tmp_path / "other", ft_hparams(lr=1e-4))
    with pytest.raises(InputError, match="records another model"):
        evaluate("solubility", ft_work / "data", tmp_path / "other/model.pt", 0, ft_hparams(), tmp_path / "m3.json",
                 tmp_path / "p3.npz", n_boot=0, run_record=out / "run.json")


def test_state_file_keeps_two_atomic_saves(tmp_path):
    definition = run_definition("pretrain", 0, {"train": {}}, {})
    sf = StateFile(tmp_path, 10, 1, definition)
    for step in (1, 2, 3):
        sf.save({"step": step}, f"step {step}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt", "previous.pt"]  # no temporary files left
    steps = [torch.load(tmp_path / n, weights_only=True)["payload"]["step"] for n in ("last.pt", "previous.pt")]
    assert steps == [3, 2]
    assert StateFile(tmp_path, 10, 1, definition).load(lambda p: None) == {"step": 3}
