# Fine-tuning and evaluation: one task registry (plus.tasks), one job per task x model x ablation x seed.


rule finetune:
    input:
        data=lambda wc: task_data(wc.task, wc.ablation),
        pretrained=pretrained_model,
    output:
        model="results/finetune/{task}/{model}/{ablation}/seed{seed}/model.pt",
        curve="results/finetune/{task}/{model}/{ablation}/seed{seed}/curve.csv",
        run="results/finetune/{task}/{model}/{ablation}/seed{seed}/run.json",
    log:
        "logs/finetune/{task}/{model}/{ablation}/seed{seed}.log",
    benchmark:
        "results/benchmarks/finetune/{task}/{model}/{ablation}/seed{seed}.tsv"
    conda:
        "../envs/plus.yaml"
    threads: 1
    resources:
        gpu=1,
        cpus_per_gpu=4,
        tasks_per_gpu=0,
        mem_mb=finetune_mem_mb,  # per model family (rules/common.smk FINETUNE_MEM_MB)
        runtime=runtime_minutes(8 * 60),
    params:
        plus=lambda wc: plus_command(wc.task),
        data=lambda wc, input: str(Path(input.data).parent),
        pretrained=pretrained_flag,
        state=state_dir,
        hp=lambda wc: as_json(finetune_hparams(wc)),
    shell:
        "exec {params.plus} finetune --task {wildcards.task} --data {params.data} {params.pretrained} "
        "--seed {wildcards.seed} --hparams '{params.hp}' --state-dir {params.state} "
        "--out-model {output.model} --out-curve {output.curve} --out-run {output.run} > {log} 2>&1"


rule evaluate:
    input:
        data=lambda wc: task_data(wc.task, wc.ablation),
        model="results/finetune/{task}/{model}/{ablation}/seed{seed}/model.pt",
        run="results/finetune/{task}/{model}/{ablation}/seed{seed}/run.json",
    output:
        metrics="results/finetune/{task}/{model}/{ablation}/seed{seed}/metrics.json",
        predictions="results/finetune/{task}/{model}/{ablation}/seed{seed}/predictions.npz",
    log:
        "logs/evaluate/{task}/{model}/{ablation}/seed{seed}.log",
    conda:
        "../envs/plus.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=finetune_mem_mb,  # per model family (rules/common.smk FINETUNE_MEM_MB)
        runtime=runtime_minutes(60),
    params:
        plus=lambda wc: plus_command(wc.task),
        data=lambda wc, input: str(Path(input.data).parent),
        hp=lambda wc: as_json(finetune_hparams(wc)),
    shell:
        "{params.plus} evaluate --task {wildcards.task} --data {params.data} --model {input.model} "
        "--seed {wildcards.seed} --hparams '{params.hp}' --out-metrics {output.metrics} "
        "--out-predictions {output.predictions} --name {wildcards.model} --ablation {wildcards.ablation} "
        "--run {input.run} > {log} 2>&1"


rule baseline_trivial:
    input:
        data="results/data/{task}/manifest.json",
    output:
        metrics="results/baselines/{task}/trivial/metrics.json",
    log:
        "logs/baselines/{task}_trivial.log",
    conda:
        "../envs/plus.yaml"
    params:
        plus=lambda wc: plus_command(wc.task),
        data=lambda wc, input: str(Path(input.data).parent),
        fidelity=as_json(fidelity("plus")),
    shell:
        "{params.plus} baseline --task {wildcards.task} --kind trivial --data {params.data} "
        "--fidelity '{params.fidelity}' --out-metrics {output.metrics} > {log} 2>&1"


rule baseline_phmmer:
    input:
        data="results/data/{task}/manifest.json",
    output:
        metrics="results/baselines/{task}/phmmer/metrics.json",
    log:
        "logs/baselines/{task}_phmmer.log",
    conda:
        "../envs/plus.yaml"
    threads: 2
    params:
        data=lambda wc, input: str(Path(input.data).parent),
        fidelity=as_json(fidelity("plus")),
    shell:
        "plus baseline --task {wildcards.task} --kind phmmer --data {params.data} --cpus {threads} "
        "--fidelity '{params.fidelity}' --out-metrics {output.metrics} > {log} 2>&1"
