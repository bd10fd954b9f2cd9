# robustft: robust fine-tuning research reproduced end to end.
# The DAG only: config validation and input functions live in rules/common.smk, ML in src/.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/backbones.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/clat.smk"
include: "rules/aggregate.smk"
include: "rules/report.smk"


rule all:
    input:
        final_targets(),
