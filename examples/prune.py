"""Prune the embedded SmolLM2-135M-Instruct into an English health QA expert, from Python alone
(no Prefect, no artifact store), save it, and load it back with stock transformers.

    python examples/prune.py [OUT_DIR]
"""
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import cusprun

out_dir = sys.argv[1] if len(sys.argv) > 1 else "en-health-qa-expert"

# One corpus per dimension: a list of strings, local files, s3://, hf:// or the bundled demo data.
corpora = {
    "language": "bundled://language/en",
    "domain": "bundled://domain/health?lang=en",
    "task": "bundled://task/qa?domain=health&lang=en",
}
expert = cusprun.prune("smollm2-135m", corpora, ratio=0.25, max_docs=48, max_tokens=128)
print(f"removed {expert.ratio:.1%} of prunable parameters; "
      f"allocation: {expert.plan.report['allocation_search']['chosen']}")

path = expert.save(out_dir, overwrite=True)          # a smaller standard checkpoint

model = AutoModelForCausalLM.from_pretrained(path)   # stock transformers, no cusprun needed
tok = AutoTokenizer.from_pretrained(path)
dense = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(expert.base).parameters())
print(f"{path}: {sum(p.numel() for p in model.parameters()):,} parameters (dense {dense:,})")
prompt = "Question: What is insulin?\nAnswer:"
ids = tok(prompt, return_tensors="pt")
with torch.no_grad():
    out = model.generate(**ids, max_new_tokens=20, do_sample=False)
print(tok.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True))
