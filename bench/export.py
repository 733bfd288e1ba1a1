"""`tutor export` of the embedded model: time and size of each format, and peak memory against loading the model once.

    python bench/export.py [--formats peft,merged,gguf,ollama]

A rank-16 adapter on every linear layer (the training default) with random
weights is exported from a throwaway workspace by the real command line, in a
child process. Printed: each format's seconds and size (as the command
reports them), the round-trip figures, and the child's peak RSS against a
baseline measured in the same run: a process that only loads the base model
in fp32. Merging is in place (peft's merge_and_unload adds each LoRA delta to
its weight), so the export should peak near one copy of the model, not two.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUTOR = Path(sys.executable).with_name("tutor")


def peak_mb_of(command: list[str], **kwargs) -> tuple[float, float, str]:
    """(peak RSS in MB of the command and its children, seconds, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"{' '.join(command[:4])}... failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(peak, before) / 1024, seconds, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", default="peft,merged,gguf,ollama")
    args = parser.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer
    from tutor import runs
    from tutor.basemodels import load_model, resolve
    from tutor.config import ModelConfig
    from tutor.workspace import Workspace

    base = ModelConfig().base
    location = resolve(base, say=lambda _: None).location
    weights = sum(p.stat().st_size for p in Path(location).glob("*.safetensors")) / 1e6
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    with tempfile.TemporaryDirectory() as folder:
        workspace = Workspace(Path(folder) / "ws")
        torch.manual_seed(0)
        model = get_peft_model(load_model(base, dtype=torch.float32, say=lambda _: None),
                               LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False))
        with torch.no_grad():
            for name, tensor in model.named_parameters():
                if "lora_B" in name:
                    tensor.normal_(0, 0.01)
        run = runs.make_run(runs.adapters_dir(workspace, "physics", "answer"), runs.run_name("sft"))
        model.save_pretrained(run)
        AutoTokenizer.from_pretrained(location).save_pretrained(run)
        runs.write_meta(run / runs.RUN_META, {"method": "sft"})
        runs.write_meta(run / runs.ADAPTER_META, {"subject": "physics", "role": "answer", "base_model": base})
        del model
        # Run each child alone, baseline first: RUSAGE_CHILDREN keeps the largest child's peak so far.
        # The baseline reads every weight once (loading maps the file lazily: untouched pages are not resident).
        load_peak, load_seconds, _ = peak_mb_of([sys.executable, "-c", "import torch; from tutor.basemodels import load_model; "
                                                 f"m = load_model({base!r}, dtype=torch.float32, say=lambda _: None); "
                                                 "print(sum(float(p.sum()) for p in m.parameters()))"])
        merge_peak, merge_seconds, _ = peak_mb_of([str(TUTOR), "--workspace", str(workspace.root), "--subject", "physics", "export",
                                                   "--to", str(Path(folder) / "merged-only"), "--format", "merged"])
        export_peak, export_seconds, out = peak_mb_of([str(TUTOR), "--workspace", str(workspace.root), "--subject", "physics", "export",
                                                       "--to", str(Path(folder) / "out"), "--format", args.formats])
    print(f"CPU: {cpu}; base {base}: {weights:.0f} MB of fp32 safetensors")
    print(out.strip())
    print(f"peak RSS: the model loaded and read once {load_peak:.0f} MB ({load_seconds:.1f} s); merging (--format merged, with its "
          f"round trip) {merge_peak:.0f} MB ({merge_seconds:.1f} s): {merge_peak / load_peak:.2f}x; the whole export "
          f"{export_peak:.0f} MB ({export_seconds:.1f} s): {export_peak / load_peak:.2f}x (transformers' GGUF loader, in the round trip)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
