# Results: tables next to published numbers, plots and provenance, built only from the runs'
# metrics.json / curve.csv files (rebuilding them never retrains anything).


rule task_table:
    input:
        runs=lambda wc: task_runs(wc.task),
        baselines=lambda wc: task_baselines(wc.task),
        published=published_files(),
    output:
        csv="results/tables/{task}.csv",
        md="results/tables/{task}.md",
        html=report(
            "results/tables/{task}.html",
            caption="../report/table.rst",
            category="Tables",
            subcategory="{task}",
            labels={"task": "{task}", "kind": "table"},
        ),
    log:
        "logs/tables/{task}.log",
    conda:
        "../envs/plus.yaml"
    params:
        plus=lambda wc: plus_command(wc.task),
        test_sets=test_set_map,
        labels=model_labels(),
    shell:
        "{params.plus} tables --task {wildcards.task} --runs {input.runs} --expected {input.runs} "
        "--baselines {input.baselines} --published {input.published} "
        "--test-set-map {params.test_sets} --model-label {params.labels} "
        "--out-csv {output.csv} --out-md {output.md} --out-html {output.html} > {log} 2>&1"


rule summary_table:
    input:
        tables=expand("results/tables/{task}.csv", task=TASKS),
    output:
        csv="results/tables/summary.csv",
        md="results/tables/summary.md",
        html=report(
            "results/tables/summary.html",
            caption="../report/summary.rst",
            category="Tables",
            subcategory="summary",
            labels={"task": "all", "kind": "summary"},
        ),
    log:
        "logs/tables/summary.log",
    conda:
        "../envs/plus.yaml"
    params:
        plus=plus_command(*config["tasks"]),
    shell:
        "{params.plus} tables-summary --tables {input.tables} --out-csv {output.csv} --out-md {output.md} "
        "--out-html {output.html} > {log} 2>&1"


rule pretraining_table:
    input:
        runs=pretrain_runs(),
    output:
        csv="results/tables/pretraining.csv",
        md="results/tables/pretraining.md",
        html=report(
            "results/tables/pretraining.html",
            caption="../report/pretraining.rst",
            category="Tables",
            subcategory="pre-training",
            labels={"task": "pre-training", "kind": "table"},
        ),
    log:
        "logs/tables/pretraining.log",
    conda:
        "../envs/plus.yaml"
    params:
        labels=model_labels(),
    shell:
        "plus tables-pretraining --runs {input.runs} --expected {input.runs} "
        "--model-label {params.labels} --out-csv {output.csv} --out-md {output.md} "
        "--out-html {output.html} > {log} 2>&1"


rule ablation_plot:
    input:
        runs=lambda wc: task_runs(wc.task),
    output:
        png=report(
            "results/plots/{task}_ablation.png",
            caption="../report/ablation.rst",
            category="Plots",
            subcategory="{task}",
            labels={"task": "{task}", "kind": "ablation"},
        ),
        svg="results/plots/{task}_ablation.svg",
    log:
        "logs/plots/{task}_ablation.log",
    conda:
        "../envs/plus.yaml"
    params:
        plus=lambda wc: plus_command(wc.task),
    shell:
        "{params.plus} plot ablation --task {wildcards.task} --runs {input.runs} "
        "--out-png {output.png} --out-svg {output.svg} > {log} 2>&1"


rule pretrain_curves_plot:
    input:
        curves=[f.replace("metrics.json", "curve.csv") for f in pretrain_runs()],
    output:
        png=report(
            "results/plots/pretrain_curves.png",
            caption="../report/curves.rst",
            category="Plots",
            subcategory="pre-training",
            labels={"task": "pre-training", "kind": "curves"},
        ),
        svg="results/plots/pretrain_curves.svg",
    log:
        "logs/plots/pretrain_curves.log",
    conda:
        "../envs/plus.yaml"
    shell:
        "plus plot pretrain-curves --curves {input.curves} --out-png {output.png} "
        "--out-svg {output.svg} > {log} 2>&1"


rule provenance:
    input:
        runs=pretrain_runs() + [f for task in TASKS for f in task_runs(task)],
    output:
        json="results/provenance.json",
        csv=report(
            "results/provenance.csv",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"task": "all", "kind": "provenance"},
        ),
        note=report(
            "results/environment.html",
            caption="../report/environment.rst",
            category="Provenance",
            labels={"task": "all", "kind": "environment"},
        ),
    log:
        "logs/provenance.log",
    conda:
        "../envs/plus.yaml"
    shell:
        "plus provenance --runs {input.runs} --out {output.json} --out-csv {output.csv} "
        "--out-note {output.note} > {log} 2>&1"


rule finetune_curves_plot:
    input:
        curves=lambda wc: [f.replace("metrics.json", "curve.csv") for f in task_runs(wc.task)],
    output:
        png=report(
            "results/plots/{task}_finetune_curves.png",
            caption="../report/finetune_curves.rst",
            category="Plots",
            subcategory="{task}",
            labels={"task": "{task}", "kind": "fine-tuning curves"},
        ),
        svg="results/plots/{task}_finetune_curves.svg",
    log:
        "logs/plots/{task}_finetune_curves.log",
    conda:
        "../envs/plus.yaml"
    params:
        plus=lambda wc: plus_command(wc.task),
    shell:
        "{params.plus} plot finetune-curves --task {wildcards.task} --curves {input.curves} --out-png {output.png} "
        "--out-svg {output.svg} > {log} 2>&1"


rule ablation_effects_task:
    input:
        runs=lambda wc: task_runs(wc.task),
        predictions=lambda wc: [f.replace("metrics.json", "predictions.npz") for f in task_runs(wc.task)],
    output:
        "results/effects/{task}.csv",
    log:
        "logs/effects/{task}.log",
    benchmark:
        "results/benchmarks/effects/{task}.tsv"
    conda:
        "../envs/plus.yaml"
    threads: 4
    params:
        plus=lambda wc: plus_command(wc.task),
        n_boot=config["effects"]["n_boot"],
        seed=config["effects"]["seed"],
    shell:
        "{params.plus} effects --task {wildcards.task} --runs {input.runs} --n-boot {params.n_boot} "
        "--seed {params.seed} --threads {threads} --out-csv {output} > {log} 2>&1"


rule ablation_effects:
    input:
        expand("results/effects/{task}.csv", task=TASKS),
    output:
        csv="results/tables/ablation_effects.csv",
        md="results/tables/ablation_effects.md",
        html=report(
            "results/tables/ablation_effects.html",
            caption="../report/effects.rst",
            category="Tables",
            subcategory="ablation effects",
            labels={"task": "all", "kind": "effects"},
        ),
        headline="results/tables/ablation_headline.rst",
    log:
        "logs/tables/ablation_effects.log",
    conda:
        "../envs/plus.yaml"
    params:
        plus=plus_command(*config["tasks"]),
    shell:
        "{params.plus} effects-table --effects {input} --out-csv {output.csv} --out-md {output.md} "
        "--out-html {output.html} --out-headline {output.headline} > {log} 2>&1"


rule effects_plot:
    input:
        "results/tables/ablation_effects.csv",
    output:
        png=report(
            "results/plots/ablation_effects.png",
            caption="../report/effects_plot.rst",
            category="Plots",
            subcategory="ablation effects",
            labels={"task": "all", "kind": "effects"},
        ),
        svg="results/plots/ablation_effects.svg",
    log:
        "logs/plots/ablation_effects.log",
    conda:
        "../envs/plus.yaml"
    params:
        plus=plus_command(*config["tasks"]),
    shell:
        "{params.plus} plot effects --effects {input} --out-png {output.png} --out-svg {output.svg} > {log} 2>&1"
