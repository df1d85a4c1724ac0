"""The choices of ``jitckpt export`` (layouts, stored precisions): one table that the exporter checks against
and the command's help lists, importable without loading the exporter."""

EXPORT_LAYOUTS = {  # --layout: what a folder holds
    "hf": "model.safetensors, config.json, README.md (the Hugging Face layout PyTorchModelHubMixin reads)",
    "diffusers": "model_index.json, transformer/, scheduler/, README.md (what diffusers' JiTPipeline loads)",
}
EXPORT_DTYPES = {"keep": None, "float32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # --dtype (keep: the source's)
DIFFUSERS_NAMES = {"fused": "diffusers", "split": "diffusers-split"}  # --diffusers-names: a naming row
