# Embeddings: pooled encoder states of the homology domains from a pre-trained model, and their 2-D picture
# (the paper's interpretation analyses). Only the pooled vectors are kept (--pooled-only): per-residue h of
# every domain would take gigabytes at paper scale; `plus embed` writes them when asked.


rule embed:
    input:
        data=f"results/data/{EMBEDDING_TASK}/manifest.json",
        model="results/pretrain/{model}/{ablation}/seed{seed}/model.pt",
    output:
        npz=f"results/embeddings/{{model}}/{{ablation}}/seed{{seed}}/{EMBEDDING_TASK}_test.npz",
    log:
        "logs/embed/{model}/{ablation}/seed{seed}.log",
    benchmark:
        "results/benchmarks/embed/{model}/{ablation}/seed{seed}.tsv"
    conda:
        "../envs/plus.yaml"
    threads: 2
    resources:
        gpu=1,
        cpus_per_gpu=2,
        tasks_per_gpu=0,
        mem_mb=finetune_mem_mb,  # per model family (rules/common.smk FINETUNE_MEM_MB)
        runtime=runtime_minutes(60),
    params:
        data=lambda wc, input: str(Path(input.data).parent),
        hp=lambda wc: as_json(pretrain_hparams(wc)),
    shell:
        "plus embed --data {params.data} --model {input.model} --hparams '{params.hp}' --pooled-only "
        "--threads {threads} --out {output.npz} > {log} 2>&1"


rule embedding_plot:
    input:
        npz=embedding_npz,
    output:
        png=report(
            "results/plots/embeddings.png",
            caption="../report/embeddings.rst",
            category="Plots",
            subcategory="embeddings",
            labels={"task": EMBEDDING_TASK, "kind": "embeddings"},
        ),
        svg="results/plots/embeddings.svg",
    log:
        "logs/plots/embeddings.log",
    conda:
        "../envs/plus.yaml"
    params:
        title=embedding_title,
    shell:
        "plus plot embeddings --npz {input.npz} --title '{params.title}' --out-png {output.png} "
        "--out-svg {output.svg} > {log} 2>&1"
