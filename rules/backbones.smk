# Backbones: Salman et al. robust ImageNet ResNets (downloaded on the submit host, verified),
# or a backbone adversarially pre-trained here for the offline demo.


rule fetch_backbone:
    output:
        paths.BACKBONE,
    params:
        arch=fetch_param("arch"),
        eps=fetch_param("eps_pt"),
    log:
        paths.log("fetch_backbone", "{backbone}"),
    conda:
        "../envs/robustft.yaml"
    wildcard_constraints:
        backbone=SALMAN_BACKBONES,
    shell:
        "python -m robustft.steps.fetch_backbone --arch {params.arch} --eps-pt {params.eps} "
        "--out {output} > {log} 2>&1"


rule pretrain_backbone:
    input:
        unpack(pretrain_input),
    output:
        paths.BACKBONE,
    params:
        settings=pretrain_settings,
        checkpoints=paths.BACKBONE_CHECKPOINTS,
    log:
        paths.log("pretrain_backbone", "{backbone}"),
    conda:
        "../envs/robustft.yaml"
    wildcard_constraints:
        backbone=PRETRAINED_BACKBONES,
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
