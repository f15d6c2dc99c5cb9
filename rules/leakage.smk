# Leakage audit: test sequences of every task with a close homolog in the pre-training corpus (phmmer).


if config["leakage"]["corpus"] not in config["pfam"]["variants"]:
    raise ValueError(
        f"config: leakage: corpus {config['leakage']['corpus']!r} is not a Pfam variant "
        f"(defined under pfam: variants: {', '.join(sorted(config['pfam']['variants']))})"
    )


rule leakage_audit:
    """Every test sequence (distinct domains of the homology pairs) searched with phmmer against the
    training split of the configured Pfam variant. Paper scale: an estimated 30 CPU-seconds per test
    sequence against the 14.7 M-sequence corpus, hundreds of CPU-hours in all (leakage.max_test caps it);
    memory is bounded by the 1 M-sequence search block (~1 GB)."""
    input:
        corpus=f"results/pfam/{config['leakage']['corpus']}/stats.json",
        tasks=expand("results/data/{task}/manifest.json", task=TASKS),
    output:
        csv="results/tables/leakage.csv",
        md="results/tables/leakage.md",
        html=report(
            "results/tables/leakage.html",
            caption="../report/leakage.rst",
            category="Tables",
            subcategory="leakage",
            labels={"task": "all", "kind": "leakage"},
        ),
        detail=expand("results/leakage/{task}.tsv", task=TASKS),
    log:
        "logs/leakage.log",
    benchmark:
        "results/benchmarks/leakage.tsv"
    conda:
        "../envs/plus.yaml"
    threads: 32
    resources:
        mem_mb=8000,
        runtime=lambda wc, attempt: 1440 * attempt,
    params:
        corpus=lambda wc, input: str(Path(input.corpus).parent),
        name=config["leakage"]["corpus"],
        tasks=lambda wc, input: " ".join(str(Path(m).parent) for m in input.tasks),
        evalue=config["leakage"]["evalue"],
        min_identity=config["leakage"]["min_identity"],
        max_test=(
            f"--max-test {config['leakage']['max_test']}" if config["leakage"]["max_test"] else ""
        ),
        detail_dir=lambda wc, output: str(Path(output.detail[0]).parent),
    shell:
        "plus leakage --corpus {params.corpus} --corpus-name {params.name} --tasks {params.tasks} "
        "--evalue {params.evalue} --min-identity {params.min_identity} {params.max_test} "
        "--cpus {threads} --out-csv {output.csv} --out-md {output.md} --out-html {output.html} "
        "--detail-dir {params.detail_dir} > {log} 2>&1"
