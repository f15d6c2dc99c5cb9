# Canonical downloads: local rules (login nodes have internet, compute nodes often not),
# retried, resumable, verified against the checksum in the config, written atomically.


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
        url=config["pfam"]["url"],
        sha256=config["pfam"].get("sha256", ""),
    shell:
        "plus download --url {params.url} --out {output.fasta} --sha256 '{params.sha256}' "
        "--gzip > {log} 2>&1"


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
        url=lambda wc: config["downloads"][wc.artefact]["url"],
        sha256=lambda wc: config["downloads"][wc.artefact].get("sha256", ""),
    shell:
        "plus download --url {params.url} --out {output} --sha256 '{params.sha256}' > {log} 2>&1"
