# Backbones: Salman et al. robust ImageNet ResNets (downloaded on the submit host, verified),
# or a backbone adversarially pre-trained here for the offline demo.


rule fetch_backbone:
    output:
        paths.BACKBONE,
    log:
        paths.log("fetch_backbone", "{backbone}"),
    wildcard_constraints:
        backbone=SALMAN_BACKBONES,
    conda:
        "../envs/robustft.yaml"
    params:
        arch=fetch_param("arch"),
        eps=fetch_param("eps_pt"),
    shell:
        "python -m robustft.steps.fetch_backbone --arch {params.arch} --eps-pt {params.eps} "
        "--out {output} > {log} 2>&1"


rule pretrain_backbone:
    input:
        unpack(pretrain_input),
    output:
        paths.BACKBONE,
    log:
        paths.log("pretrain_backbone", "{backbone}"),
    wildcard_constraints:
        backbone=PRETRAINED_BACKBONES,
    conda:
        "../envs/robustft.yaml"
    # nothing else can run before the backbone exists: use the whole machine (capped by --cores)
    threads: 4
    resources:
        gpu=0,
        mem_mb=4000,
        runtime=120,
    params:
        settings=pretrain_settings,
        checkpoints=paths.BACKBONE_CHECKPOINTS,
    shell:
        "python -m robustft.steps.pretrain_backbone --settings {params.settings:q} "
        "--data {input.data} --checkpoints {params.checkpoints} --out {output} "
        "--threads {threads} --gpus {resources.gpu} > {log} 2>&1"
