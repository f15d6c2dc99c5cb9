# Downstream tasks: each task's raw files (canonical release or embedded subset) converted by
# the same `plus data convert` code into one documented format per task kind (see DATA.md).


rule convert_task:
    input:
        unpack(task_raw),
    output:
        manifest="results/data/{task}/manifest.json",
    log:
        "logs/data/{task}.log",
    conda:
        "../envs/plus.yaml"
    params:
        outdir=lambda wc, output: str(Path(output.manifest).parent),
        source=config["data"]["source"],
        seed=config["data"]["seed"],
        max_train=max_train_flag,
        raw=raw_flags,
        pairs=homology_pair_flags,
    shell:
        "plus data convert --task {wildcards.task} --source {params.source} --raw {params.raw} "
        "--outdir {params.outdir} --seed {params.seed} {params.max_train} {params.pairs} > {log} 2>&1"
