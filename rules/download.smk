# Canonical downloads: local rules (login nodes have internet, compute nodes often not). Each artefact has
# mirrors tried in order (`urls:`, or `url:`) or a local copy (`path:`); transfers resume per mirror, and a
# file is moved into place only after its type, gzip stream and sha256 check out (see src/plus/download.py).


rule download_pfam:
    output:
        fasta="resources/pfam/Pfam{release}/Pfam-A.fasta.gz",
    log:
        "logs/download/pfam{release}.log",
    cache: "omit-software"
    retries: 3
    localrule: True
    conda:
        "../envs/plus.yaml"
    params:
        sources=download_sources(config["pfam"]),
        sha256=config["pfam"].get("sha256", ""),
    shell:
        "plus download {params.sources} --out {output.fasta} --sha256 '{params.sha256}' > {log} 2>&1"


rule download_artefact:
    output:
        "resources/downloads/{artefact}/{filename}",
    log:
        "logs/download/{artefact}/{filename}.log",
    cache: "omit-software"
    retries: 3
    localrule: True
    conda:
        "../envs/plus.yaml"
    params:
        sources=lambda wc: download_sources(config["downloads"][wc.artefact]),
        sha256=lambda wc: config["downloads"][wc.artefact].get("sha256", ""),
    shell:
        "plus download {params.sources} --out {output} --sha256 '{params.sha256}' > {log} 2>&1"


rule downloads_check:
    input:
        download_targets(),
    log:
        "logs/download/check.log",
    localrule: True
    conda:
        "../envs/plus.yaml"
    params:
        entries=lambda wc: " ".join(
            f"{path}={sha}" if sha else path for path, sha in download_pins().items()
        ),
    shell:
        "plus download --check {params.entries} 2>&1 | tee {log}"
