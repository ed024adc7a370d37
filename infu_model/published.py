"""The published InfU v1.0, named once: where its weights and the models it needs live, and how it
generates by default (the official app's values). Every loader, flag and packaged config that names
one of them takes it from here (the YAML configs repeat the values; a test holds them equal)."""

FLUX_DEV = "hf://black-forest-labs/FLUX.1-dev"                  # gated: accept its licence on the Hub
INFU_V1 = "hf://ByteDance/InfiniteYou/infu_flux_v1.0"            # aes_stage2/ and sim_stage1/
VARIANTS = ("aes_stage2", "sim_stage1")
STAGE_VARIANT = {1: "sim_stage1", 2: "aes_stage2"}  # what our training stages stand for
# the folder the official app passes as its insightface root (models/antelopev2/ inside; only the SCRFD
# detector is read) and facexlib's IR-SE50 ArcFace, by its release URL and the published file's sha256
INSIGHTFACE_ROOT = "hf://ByteDance/InfiniteYou/supports/insightface"
ARCFACE = ("https://github.com/xinntao/facexlib/releases/download/v0.1.0/recognition_arcface_ir_se50.pth"
           "#sha256=a035c768259b98ab1ce0e646312f48b9e1e218197a0f80ac6765e88f8b6ddf28")
LORAS = {"realism": "hf://ByteDance/InfiniteYou/supports/optional_loras/flux_realism_lora.safetensors",
         "anti_blur": "hf://ByteDance/InfiniteYou/supports/optional_loras/flux_anti_blur_lora.safetensors"}
GENDER_MODEL = "hf://ByteDance/InfiniteYou/supports/insightface/models/antelopev2/genderage.onnx"

# 864x1152, 30 steps, guidance 3.5, InfuseNet at full scale over every step
GENERATION = {"width": 864, "height": 1152, "steps": 30, "guidance": 3.5, "scale": 1.0, "start": 0.0, "end": 1.0}
