# plus-workflow: PLUS (Min et al., IEEE Access 2021) from Pfam to the paper's comparison tables.
#   snakemake --cores 2 all                                   (paper scale, config.yaml)
#   snakemake --configfile demo/config.yaml --cores 2 all     (embedded real data, minutes on a CPU)
#   snakemake --profile slurm all                             (GPU cluster, see slurm/config.yaml)
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/pfam.smk"
include: "rules/data.smk"
include: "rules/leakage.smk"
include: "rules/pretrain.smk"
include: "rules/finetune.smk"
include: "rules/tables.smk"
include: "rules/embed.smk"


rule all:
    default_target: True
    input:
        all_outputs(),


rule downloads:
    input:
        download_targets(),
