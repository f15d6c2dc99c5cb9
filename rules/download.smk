# Canonical downloads: local rules (login nodes have internet, compute nodes often not),
# retried, resumable, verified against the checksum in the config, written atomically.


rule download_pfam:
    output:
        fasta="resources/pfam/Pfam{release}/Pfam-A.fasta.gz",
    params:
        url=config["pfam"]["url"],
        sha256=config["pfam"].get("sha256", ""),
    log:
        "logs/download/pfam{release}.log",
    localrule: True
    retries: 3
    cache: "omit-software"
    shell:
        "plus download --url {params.url} --out {output.fasta} --sha256 '{params.sha256}' "
        "--gzip > {log} 2>&1"


rule download_artefact:
    output:
        "resources/downloads/{artefact}/{filename}",
    params:
        url=lambda wc: config["downloads"][wc.artefact]["url"],
        sha256=lambda wc: config["downloads"][wc.artefact].get("sha256", ""),
    log:
        "logs/download/{artefact}/{filename}.log",
    localrule: True
    retries: 3
    cache: "omit-software"
    shell:
        "plus download --url {params.url} --out {output} --sha256 '{params.sha256}' > {log} 2>&1"
