# Backbones: Salman et al. robust ImageNet ResNets (downloaded on the submit host, verified),
# or a backbone adversarially pre-trained here for the offline demo.


rule fetch_backbone:
    output:
        "results/backbones/{backbone}.pt",
    params:
        arch=lambda wc: CFG["backbones"][wc.backbone]["arch"],
        eps=lambda wc: CFG["backbones"][wc.backbone]["eps_pt"],
    log:
        "logs/fetch_backbone/{backbone}.log",
    conda:
        "../envs/robustft.yaml"
    wildcard_constraints:
        backbone="|".join(b for b, s in CFG["backbones"].items() if s["source"] == "salman") or "^$",
    shell:
        "python -m robustft.steps.fetch_backbone --arch {params.arch} --eps-pt {params.eps} "
        "--out {output} > {log} 2>&1"


rule pretrain_backbone:
    input:
        unpack(backbone_rule_input),
    output:
        "results/backbones/{backbone}.pt",
    params:
        settings=lambda wc: as_json(rcfg.backbone_settings(CFG, wc.backbone)),
        checkpoints="results/checkpoints/backbones/{backbone}",
    log:
        "logs/pretrain_backbone/{backbone}.log",
    conda:
        "../envs/robustft.yaml"
    wildcard_constraints:
        backbone="|".join(b for b, s in CFG["backbones"].items() if s["source"] == "pretrain") or "^$",
    # nothing else can run before the backbone exists: use the whole machine (capped by --cores)
    threads: 4
    resources:
        gpu=0,
        mem_mb=4000,
        runtime=120,
    shell:
        "python -m robustft.steps.pretrain_backbone --settings {params.settings:q} "
        "--data {input.data} --checkpoints {params.checkpoints} --out {output} "
        "--threads {threads} --gpus {resources.gpu} > {log} 2>&1"
