# Downstream tasks: each task's raw files (canonical release or embedded subset) converted by
# the same `plus data convert` code into one documented format per task kind (see DATA.md).
# results/data/<task>/ holds the conversion with the configured reference-fidelity switches;
# results/data_corrected/<task>/ the one with the task's data_* switches off, for the `corrected`
# ablation (only for tasks where that changes the data, see task_data in common.smk).


rule convert_task:
    input:
        unpack(task_raw),
    output:
        manifest="results/{datavariant}/{task}/manifest.json",
    log:
        "logs/{datavariant}/{task}.log",
    conda:
        "../envs/plus.yaml"
    params:
        plus=lambda wc: plus_command(wc.task),
        outdir=lambda wc, output: str(Path(output.manifest).parent),
        source=config["data"]["source"],
        seed=config["data"]["seed"],
        max_train=max_train_flag,
        raw=raw_flags,
        pairs=homology_pair_flags,
        fidelity=lambda wc: as_json(
            data_switches(wc.task, "corrected" if wc.datavariant == "data_corrected" else "plus")
        ),
    shell:
        "{params.plus} data convert --task {wildcards.task} --source {params.source} --raw {params.raw} "
        "--outdir {params.outdir} --seed {params.seed} {params.max_train} {params.pairs} "
        "--fidelity '{params.fidelity}' > {log} 2>&1"
