import glob
import json
import re
import shlex
import signal
from pathlib import Path
from urllib.parse import urlparse

from snakemake.utils import validate

from plus.data.converters import DATA as TASK_DATA
from plus.data.convert import embedded_raw
from plus.io import InputError
from plus.tasks.custom import register as register_custom_task
from plus.tasks.registry import TASKS as TASK_REGISTRY
from plus.train.hparams import model_hparams

validate(config, schema="../schemas/config.schema.yaml")

# users' own tasks (README "Your own task"): name -> {kind, train, test, dev}
CUSTOM_TASKS = config["custom_tasks"]


def custom_raw(task):
    """A user's task's CSVs as converter inputs {KEY: path}: train, dev (optional), test or test_<name>."""
    spec = CUSTOM_TASKS[task]
    tests = spec["test"] if isinstance(spec["test"], dict) else {"": spec["test"]}
    raw = {"train": spec["train"], **({"dev": spec["dev"]} if "dev" in spec else {})}
    raw.update({f"test_{name}" if name else "test": path for name, path in tests.items()})
    return raw


def _register_custom_tasks():
    """Users' tasks join the registry before anything reads it. A paper task's name or a missing CSV stops
    here, before any job starts, naming the key (the schema checks the kind and the keys)."""
    for name, spec in CUSTOM_TASKS.items():
        for key, path in custom_raw(name).items():
            key = key.replace("test_", "test: ", 1) if key.startswith("test_") else key
            if not Path(path).is_file():
                raise ValueError(f"config: custom_tasks: {name}: {key}: {path!r} is not a file")
        try:
            register_custom_task(name, spec["kind"])
        except InputError as exc:
            raise ValueError(f"config: custom_tasks: {name}: {exc}") from None


_register_custom_tasks()


def plus_command(*tasks):
    """`plus`, with `--custom-task NAME=KIND` for each user's task among `tasks` (its jobs register it)."""
    flags = [f"--custom-task {t}={CUSTOM_TASKS[t]['kind']}" for t in tasks if t in CUSTOM_TASKS]
    return " ".join(["plus", *flags])


def _check_task_names():
    """Every task the config names is a task of the registry; `heads:` only for tasks with a configurable
    head (the pair task's head is its ordinal SSA head). One line naming the key, before any job starts."""
    known = ", ".join(TASK_REGISTRY)
    named = [("tasks", t) for t in config["tasks"]]
    for fam, settings in (config.get("finetune") or {}).items():
        named += [(f"finetune: {fam}: tasks", t) for t in (settings or {}).get("tasks") or {}]
    named += [("plan: tasks", t) for t in (config.get("plan") or {}).get("tasks") or {}]
    max_train = config.get("data", {}).get("max_train")
    if isinstance(max_train, dict):
        named += [("data: max_train", t) for t in max_train if t != "default"]
    for bad_key, task in named:
        if task not in TASK_REGISTRY:
            raise ValueError(f"config: {bad_key}: unknown task {task!r} (known: {known})")
    for model, spec in config["models"].items():
        for task in spec.get("heads") or {}:
            if task not in TASK_REGISTRY or TASK_REGISTRY[task].kind == "pair":
                raise ValueError(
                    f"config: models: {model}: heads: {task!r} is not a task with a configurable head"
                )


_check_task_names()

# SLURM's warning signal (`--signal=USR1@N` in slurm/config.yaml) reaches every process of the job step: this
# Snakemake process, the rule's shell and `plus`. Snakemake would die of it and end the step, orphaning or
# killing the training process while it saves its state. Ignored here, it stays ignored in the shell and in
# `plus`, until `plus` installs its own handler for training (README: "Saved state and reruns").
try:
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
except ValueError:  # not the main thread (Snakemake's API driven from a thread): nothing to protect
    pass

TASKS = list(config["tasks"])
# the task whose test domains the embedding picture shows (its registry entry's `embeddings`)
EMBEDDING_TASK = next(name for name, task in TASK_REGISTRY.items() if task.embeddings)
SEEDS = [int(s) for s in config["seeds"]]
ABLATIONS = ["plus", "mlm_only", "sfp_only", "none", "corrected"]
# P-ELMo's LM has no MLM or SFP loss to ablate, and a random frozen LM ("none") is not a published baseline
PELMO_ABLATIONS = ["plus", "corrected"]


def _check_experiments():
    """Every experiment names a defined model, with ablations its family supports; P-ELMo's tasks that
    start from the encoder fine-tuned on another task (homology) need that task among the tasks. Fail before
    any job starts.
    """
    for exp in config["experiments"]:
        if exp["model"] not in config["models"]:
            raise ValueError(
                f"config: experiments: model {exp['model']!r} is not defined under models: "
                f"(defined: {', '.join(sorted(config['models']))})"
            )
        if config["models"][exp["model"]]["family"] != "pelmo":
            continue
        bad = [a for a in exp["ablations"] if a not in PELMO_ABLATIONS]
        if bad:
            raise ValueError(
                f"config: experiments: model {exp['model']!r} (family pelmo) supports the ablations "
                f"{', '.join(PELMO_ABLATIONS)} only, not {', '.join(bad)}: its language model has no "
                "MLM/SFP loss to ablate and a random frozen LM ('none') is no published baseline"
            )
        needed = {TASK_REGISTRY[t].pelmo_encoder_task for t in config["tasks"]} - {None}
        missing = sorted(needed - set(config["tasks"]))
        if missing:
            base = missing[0]
            raise ValueError(
                f"config: experiments: model {exp['model']!r} (family pelmo) fine-tunes its encoder on "
                f"{base} and reuses it, frozen, for the other tasks: add {base} to tasks:"
            )


_check_experiments()

EXPERIMENTS = [(e["model"], a) for e in config["experiments"] for a in e["ablations"]]
MODELS = sorted({m for m, _ in EXPERIMENTS})
PRETRAIN_RUNS = [(m, a) for m, a in EXPERIMENTS if a != "none"]


wildcard_constraints:
    task="|".join(TASK_REGISTRY),  # every known task (the demo corpus searches tasks a config may leave out)
    model="|".join(re.escape(m) for m in config["models"]),
    ablation="|".join(ABLATIONS),
    seed=r"\d+",
    variant=r"[a-z0-9_]+",
    artefact=r"[a-z0-9_]+",
    datavariant="data|data_corrected",


def model_cfg(model):
    return config["models"][model]


def family(model):
    return model_cfg(model)["family"]


def fidelity(ablation, data=False):
    """Reference-fidelity switches for one ablation: `corrected` turns every switch off. Switches named
    `data_<task>_*` change a task's converted data (see task_data) and come only with `data`."""
    switches = {
        "b1_drop_second_mlm_loss": True,
        "b2_sum_pooling": True,
        "b3_unclamped_ordinal_weight": True,
        "b4_broken_homology_sampler": True,
        "b5_sfp_threshold_half": True,
        "b6_cutoffs_on_eval_set": True,
        "b7_self_pairs": True,
        "b10_tfm_layernorm": True,
        "b11_decay_all_params": True,
        "b12_tm_region_quirk": True,
        "b16_select_on_test": True,
        "data_localization_dual_as_first": True,
        "data_transmembrane_drop_signal_peptides": True,
    }
    switches.update(config.get("reference_fidelity", {}))
    if ablation == "corrected":
        switches = {k: False for k in switches}
    return {k: v for k, v in switches.items() if k.startswith("data_") == data}


def as_json(obj):
    """Compact JSON for a shell argument in single quotes."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    if "'" in text:
        raise ValueError(f"config value contains a single quote: {text}")
    return text


# ---------------------------------------------------------------- Pfam


def mirrors(entry):
    """The mirror URLs of a download entry, in order: `url:` first (if any), then `urls:`."""
    urls = ([entry["url"]] if entry.get("url") else []) + list(entry.get("urls") or [])
    return list(dict.fromkeys(urls))


def download_sources(entry):
    """`plus download` arguments: `--path P` for a local copy, else one `--url U` per mirror."""
    if entry.get("path"):
        return f"--path {shlex.quote(entry['path'])}"
    return " ".join(f"--url {shlex.quote(u)}" for u in mirrors(entry))


def artefact_filename(entry):
    """Output file name of a download: the first mirror's file name (or the local copy's)."""
    urls = mirrors(entry)
    return Path(urlparse(urls[0]).path).name if urls else Path(entry["path"]).name


def pfam_source():
    if config["pfam"]["source"] == "download":
        return f"resources/pfam/Pfam{config['pfam']['release']}/Pfam-A.fasta.gz"
    return "resources/demo_pfam/Pfam-A.fasta.gz"


def pfam_variant(model):
    return model_cfg(model)["corpus"]


def pfam_variant_params(wildcards):
    variant = config["pfam"]["variants"][wildcards.variant]
    pf = config["pfam"]
    return {
        "max_len": variant.get("max_len"),
        "min_len": pf["min_len"] if variant.get("filters", True) else 1,
        "min_family_size": pf["min_family_size"] if variant.get("filters", True) else 1,
    }


def max_len_flag(wildcards):
    max_len = pfam_variant_params(wildcards)["max_len"]
    return f"--max-len {max_len}" if max_len else ""


def homology_pair_flags(wildcards):
    if TASK_REGISTRY[wildcards.task].kind != "pair":
        return ""
    pairs = config["data"].get("homology_pairs", {})
    if config["data"]["source"] == "canonical":
        choice = config["data"].get("homology_test_2_07", "sampled")
        return f"--homology-2-07 {choice} --n-pairs-test {pairs.get('test', 100000)}"
    return f"--n-pairs-dev {pairs.get('dev', 10000)} --n-pairs-test {pairs.get('test', 100000)}"


# ---------------------------------------------------------------- downstream data


EMBEDDED = "data/embedded"
def download_path(artefact):
    return f"resources/downloads/{artefact}/{artefact_filename(config['downloads'][artefact])}"


def download_pins():
    """{download target: pinned sha256 ('' = none yet)} of this configuration's downloads."""
    pins = {
        download_path(a): config["downloads"][a].get("sha256", "")
        for a in config.get("downloads", {})
    }
    pins[pfam_source()] = config["pfam"].get("sha256", "")
    return {path: pins[path] for path in download_targets()}


def data_switches(task, ablation):
    """The task converter's reference-fidelity switches (`data_<task>_*`) for one ablation."""
    return {k: v for k, v in fidelity(ablation, data=True).items() if k.startswith(f"data_{task}_")}


def task_data(task, ablation="plus"):
    """manifest.json of a task's converted data for one ablation: results/data/ (the configured switches),
    or results/data_corrected/ when `corrected` changes one of the task's data switches."""
    corrected = data_switches(task, ablation) != data_switches(task, "plus")
    return f"results/{'data_corrected' if corrected else 'data'}/{task}/manifest.json"


def task_raw(wildcards):
    """Raw inputs of one task's converter, as {KEY: path} (a user's CSVs, embedded files or canonical
    downloads)."""
    if wildcards.task in CUSTOM_TASKS:
        return custom_raw(wildcards.task)
    if config["data"]["source"] == "embedded":
        return {k: str(v) for k, v in embedded_raw(wildcards.task, EMBEDDED).items()}
    return {
        k: download_path(a) for k, a in TASK_DATA[wildcards.task].canonical_artefacts.items()
    }


def max_train_flag(wildcards):
    n = config["data"].get("max_train")
    if isinstance(n, dict):
        n = n.get(wildcards.task, n.get("default"))
    return f"--max-train {n}" if n else ""


def raw_flags(wildcards, input):
    return " ".join(f"{k}={v}" for k, v in input.items())


def download_targets():
    if config["data"]["source"] != "canonical":
        targets = []
    else:
        targets = [
            download_path(a) for t in TASKS for a in TASK_DATA[t].canonical_artefacts.values()
        ]
    if config["pfam"]["source"] == "download":
        targets.append(pfam_source())
    return sorted(set(targets))


# ---------------------------------------------------------------- training


def pretrain_dir(model, ablation, seed):
    return f"results/pretrain/{model}/{ablation}/seed{seed}"


def pretrain_hparams(wildcards):
    fam = family(wildcards.model)
    hp = dict(config["pretrain"][fam])
    if wildcards.ablation == "mlm_only":
        hp["lambda_sfp"] = -1
    elif wildcards.ablation == "sfp_only":
        hp["lambda_mlm"] = -1
    return {
        "model": model_hparams(model_cfg(wildcards.model)),
        "train": hp,
        "fidelity": fidelity(wildcards.ablation),
        "save_every_minutes": config["pretrain"].get("save_every_minutes", 10),
        "allow_cpu": config["pretrain"].get("allow_cpu", False),
    }


def finetune_hparams(wildcards):
    fam = family(wildcards.model)
    ft = dict(config["finetune"][fam])
    per_task = ft.pop("tasks", {}) or {}
    ft.update(per_task.get(wildcards.task, {}))
    head = model_cfg(wildcards.model).get("heads", {}).get(wildcards.task)
    return {
        "model": model_hparams(model_cfg(wildcards.model)),
        "train": ft,
        "head": head,
        "fidelity": fidelity(wildcards.ablation),
        "save_every_minutes": config["pretrain"].get("save_every_minutes", 10),
        "allow_cpu": config["pretrain"].get("allow_cpu", False),
    }


def pretrained_model(wildcards):
    """The starting weights: the pre-trained model; for P-ELMo's tasks with a `pelmo_encoder_task`, its model
    fine-tuned on that task (homology: LM + encoder trained on SCOPe, as the reference's released P-ELMo
    encoder)."""
    if wildcards.ablation == "none":
        return []
    base = TASK_REGISTRY[wildcards.task].pelmo_encoder_task
    if family(wildcards.model) == "pelmo" and base:
        return f"{finetune_dir(base, wildcards.model, wildcards.ablation, wildcards.seed)}/model.pt"
    return f"{pretrain_dir(wildcards.model, wildcards.ablation, wildcards.seed)}/model.pt"


def pretrained_flag(wildcards, input):
    return f"--pretrained {input.pretrained}" if input.pretrained else ""


def state_dir(wildcards, output):
    """Resumable training state lives beside, never inside, the declared outputs (pitfall 11)."""
    return str(Path(output.model).parent).replace("results/", "results/state/", 1)


def gpus(wildcards):
    return int(model_cfg(wildcards.model).get("gpus", 1))


def launcher(wildcards, resources):
    if int(resources.gpu) > 1:
        return f"torchrun --standalone --nproc-per-node {resources.gpu} -m plus.cli"
    return "plus"


def runtime_minutes(base):
    def runtime(wildcards, attempt):
        return base * attempt

    return runtime


# Wall time (hours) of a pre-training job's first attempt per model family; attempt k gets k times it and
# resumes from the state, so 3 attempts (the profile's retries: 2) cover 6x. Sized from `plus plan`'s estimate
# of one job on one A100 at 30 % of TF32 peak (README "Paper scale"). An attempt loses at most the step it is on
# (the profile's USR1 warning and SLURM's SIGTERM save the state), else `save_every_minutes` (10).
PRETRAIN_HOURS = {
    "rnn": 24,  # LARGE 67 GPU-h (BASE 17): covered by attempts 1-3 (144 h)
    "tfm": 48,  # 203 GPU-h: covered by attempts 1-3 (288 h); 24 h would cover 144 h only
    "pelmo": 24,  # 7.2 GPU-h: the first attempt
}


def pretrain_runtime(wildcards, attempt):
    return PRETRAIN_HOURS[family(wildcards.model)] * 60 * attempt


# Host memory (MB) of one GPU job per model family, from measurement (README "Paper scale"): the rehearsal's
# GPU-job host memory (benchmarks/paper_scale.py, full-size corpus: corpus pages + libraries + process + model
# and Adam), the state copy a save makes, the DataLoader workers' private memory (of it, 10-18 MB anonymous; the
# rest is corpus pages only that worker touched: page cache, reclaimable), the task data at release size
# (benchmarks/task_memory.py: at most 146 MB, homology's 200,000 test pairs, so task size changes little), times
# a 1.5 margin, plus 1,500 MB for the CUDA context (not measured here, no GPU; about 1.2 GB of host memory in
# pytorch/pytorch#106511). A model's `pretrain_mem_mb` / `finetune_mem_mb` (config.yaml) replaces them.
PRETRAIN_MEM_MB = {  # per GPU, times the model's gpus (torchrun runs a process and its workers per GPU)
    # LARGE, the family's largest: 4,188 host + 710 state + 2 workers x 156 private = 5,210 x 1.5 + 1,500
    # (BASE: 3,512 + 179 + 2 x 124); the 3,027 MB of corpus pages in it are page cache, reclaimable under --mem
    "rnn": 10000,
    # 4,575 host + 1,030 state + 1 worker x 210 private = 5,815 x 1.5 + 1,500
    "tfm": 11000,
    # rehearsed on its unfiltered corpus (15.1 M sequences): 3,517 host (corpus pages 3,178 + libraries and
    # process 145 + LM and Adam 194) + 153 state + 2 workers x 14 anonymous = 3,698 x 1.5 + 1,500 (each worker's
    # 844 MB of corpus pages are page cache)
    "pelmo": 8000,
}
FINETUNE_MEM_MB = {  # fine-tuning, evaluation and embedding: no corpus, no DataLoader workers
    # 290 process + libraries + 20 B/parameter (model, Adam, the loaded pre-trained weights) of LARGE (1,184)
    # + 146 task data = 1,620 x 1.5 + 1,500
    "rnn": 4000,
    "tfm": 5000,  # 290 + 85.7 M x 20 B (1,713) + 146 = 2,149 x 1.5 + 1,500
    "pelmo": 3000,  # 290 + (LM 12.7 M + a BASE-sized encoder 14.9 M) x 20 B (552) + 146 = 988 x 1.5 + 1,500
}


def pretrain_mem_mb(wildcards):
    cfg = model_cfg(wildcards.model)
    return int(cfg.get("pretrain_mem_mb") or PRETRAIN_MEM_MB[cfg["family"]]) * gpus(wildcards)


def finetune_mem_mb(wildcards):
    cfg = model_cfg(wildcards.model)
    return int(cfg.get("finetune_mem_mb") or FINETUNE_MEM_MB[cfg["family"]])


# ---------------------------------------------------------------- results


def finetune_dir(task, model, ablation, seed):
    return f"results/finetune/{task}/{model}/{ablation}/seed{seed}"


def task_runs(task):
    return [f"{finetune_dir(task, m, a, s)}/metrics.json" for m, a in EXPERIMENTS for s in SEEDS]


def task_baselines(task):
    names = [b for b in config.get("baselines", []) if b in TASK_REGISTRY[task].baselines]
    return [f"results/baselines/{task}/{b}/metrics.json" for b in names]


def pretrain_runs():
    return [f"{pretrain_dir(m, a, s)}/metrics.json" for m, a in PRETRAIN_RUNS for s in SEEDS]


def test_set_map(wildcards):
    mapping = config.get("published", {}).get("test_sets", {}).get(wildcards.task, {})
    return " ".join(f"'{k}={v}'" for k, v in mapping.items())


def model_labels():
    """--model-label arguments: our model names -> the names used in the published CSVs."""
    return " ".join(
        f"'{name}={spec['label']}'" for name, spec in config["models"].items() if "label" in spec
    )


def published_files():
    return [f for f in config.get("published", {}).get("files", []) if Path(f).exists()]


def embedding_run(required=False):
    """The embedding picture's run: the first PLUS-RNN experiment with ablation `plus`, first seed."""
    runs = [(m, a) for m, a in EXPERIMENTS if family(m) == "rnn" and a == "plus"]
    if runs and EMBEDDING_TASK in TASKS:
        return (*runs[0], SEEDS[0])
    if required:
        raise ValueError(
            f"the embedding plot needs the {EMBEDDING_TASK} task and a PLUS-RNN experiment (ablation plus)"
        )
    return None


def embedding_npz(wildcards):
    return "results/embeddings/{}/{}/seed{}/{}_test.npz".format(*embedding_run(required=True), EMBEDDING_TASK)


def embedding_title(wildcards):
    model, ablation, seed = embedding_run(required=True)
    return f"{model_cfg(model).get('label', model)} ({ablation}, seed {seed}): mean-pooled h of the {EMBEDDING_TASK} domains"


def all_outputs():
    outputs = expand("results/tables/{task}.{ext}", task=TASKS, ext=["csv", "md"])
    outputs += ["results/tables/summary.csv", "results/tables/pretraining.csv"]
    outputs += expand("results/plots/{task}_ablation.png", task=TASKS)
    outputs += ["results/plots/pretrain_curves.png", "results/provenance.json"]
    outputs += expand("results/plots/{task}_finetune_curves.png", task=TASKS)
    outputs += ["results/plots/embeddings.png"] if embedding_run() else []
    outputs += ["results/tables/leakage.csv"]
    outputs += ["results/tables/ablation_effects.csv", "results/plots/ablation_effects.png"]
    return outputs
