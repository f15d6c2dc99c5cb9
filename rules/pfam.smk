# Pfam: the pre-training corpus, split and filtered exactly as the paper, streamed to token shards.


rule demo_pfam_corpus:
    """Embedded scale: Pfam-A.fasta-format corpus from the real seed alignments, enlarged by
    profile-HMM search (pyhmmer) of the tasks' training splits (never their test sets)."""
    input:
        seeds=sorted(
            glob.glob("data/embedded/pfam/*/*.sto")
            + glob.glob("data/embedded/pfam/*/*.seed.txt")
            + glob.glob("data/embedded/pfam/*/*.sth")
        ),
        search=expand(
            "resources/demo_pfam/search/{task}/manifest.json",
            task=[name for name, task in TASK_REGISTRY.items() if task.demo_corpus_search],
        ),
    output:
        fasta="resources/demo_pfam/Pfam-A.fasta.gz",
    log:
        "logs/pfam/demo_corpus.log",
    conda:
        "../envs/plus.yaml"
    threads: 2
    params:
        evalue=config["pfam"].get("search_evalue", 1e-5),
        search=lambda wc, input: " ".join(str(Path(m).parent / "train.fa") for m in input.search),
    shell:
        "plus pfam demo-corpus --seeds {input.seeds} --search-fasta {params.search} "
        "--evalue {params.evalue} --cpus {threads} --out {output.fasta} > {log} 2>&1"


rule demo_search_space:
    """The complete training splits (no demo subsampling) of three tasks: the sequences searched with the
    Pfam seed HMMs. Test splits are never searched, so the corpus cannot leak into any test set."""
    input:
        unpack(task_raw),
    output:
        manifest="resources/demo_pfam/search/{task}/manifest.json",
    log:
        "logs/pfam/search_space_{task}.log",
    conda:
        "../envs/plus.yaml"
    params:
        outdir=lambda wc, output: str(Path(output.manifest).parent),
        seed=config["data"]["seed"],
        raw=raw_flags,
    shell:
        "plus data convert --task {wildcards.task} --source embedded --raw {params.raw} "
        "--outdir {params.outdir} --seed {params.seed} > {log} 2>&1"


rule pfam_preprocess:
    input:
        fasta=pfam_source(),
    output:
        stats="results/pfam/{variant}/stats.json",
        tokens="results/pfam/{variant}/train_tokens.npy",
        test_pairs="results/pfam/{variant}/test_pairs.tsv",
        val_pairs="results/pfam/{variant}/val_pairs.tsv",
    log:
        "logs/pfam/preprocess_{variant}.log",
    benchmark:
        "results/benchmarks/pfam/preprocess_{variant}.tsv"
    conda:
        "../envs/plus.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=lambda wc, attempt: 240 * attempt,
    params:
        outdir=lambda wc, output: str(Path(output.stats).parent),
        seed=config["pfam"]["split_seed"],
        test_fraction=config["pfam"]["test_fraction"],
        val_fraction=config["pfam"]["val_fraction"],
        n_test_pairs=config["pfam"]["n_test_pairs"],
        n_val_pairs=config["pfam"]["n_val_pairs"],
        filters=pfam_variant_params,
        max_len=max_len_flag,
    shell:
        "plus pfam preprocess --input {input.fasta} --outdir {params.outdir} "
        "--seed {params.seed} --test-fraction {params.test_fraction} "
        "--val-fraction {params.val_fraction} --min-len {params.filters[min_len]} {params.max_len} "
        "--min-family-size {params.filters[min_family_size]} "
        "--n-test-pairs {params.n_test_pairs} --n-val-pairs {params.n_val_pairs} > {log} 2>&1"
