# Pre-training: MLM + same-family prediction on the Pfam shards, one job per model x ablation x seed.
# Only model.pt / metrics.json / curve.csv are declared; resumable state lives in results/state/.


rule pretrain:
    input:
        corpus=lambda wc: f"results/pfam/{pfam_variant(wc.model)}/stats.json",
    output:
        model="results/pretrain/{model}/{ablation}/seed{seed}/model.pt",
        metrics="results/pretrain/{model}/{ablation}/seed{seed}/metrics.json",
        curve=report(
            "results/pretrain/{model}/{ablation}/seed{seed}/curve.csv",
            caption="../report/curves.rst",
            category="Pre-training",
            labels={"model": "{model}", "ablation": "{ablation}", "seed": "{seed}"},
        ),
    log:
        "logs/pretrain/{model}/{ablation}/seed{seed}.log",
    benchmark:
        "results/benchmarks/pretrain/{model}/{ablation}/seed{seed}.tsv"
    conda:
        "../envs/plus.yaml"
    threads: 2
    resources:
        gpu=gpus,
        # the training process plus its DataLoader workers (pretrain.<family>.num_workers, sized from the
        # measured pairs/s of one worker against the projected A100 rate: README "Paper scale")
        cpus_per_gpu=lambda wc: 1 + config["pretrain"][family(wc.model)].get("num_workers", 0),
        tasks_per_gpu=0,
        # per model family x gpus, from the rehearsal's measured host memory (rules/common.smk PRETRAIN_MEM_MB)
        mem_mb=pretrain_mem_mb,
        runtime=pretrain_runtime,  # per family x attempt (rules/common.smk PRETRAIN_HOURS)
    params:
        corpus=lambda wc, input: str(Path(input.corpus).parent),
        state=state_dir,
        hp=lambda wc: as_json(pretrain_hparams(wc)),
        launch=launcher,
    shell:
        "exec {params.launch} pretrain --corpus {params.corpus} --seed {wildcards.seed} "
        "--hparams '{params.hp}' --state-dir {params.state} --out-model {output.model} "
        "--out-metrics {output.metrics} --out-curve {output.curve} --name {wildcards.model} "
        "--ablation {wildcards.ablation} > {log} 2>&1"
