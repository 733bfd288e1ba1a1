"""Test helpers for `tutor serve`: random LoRA adapters on the tiny model, and the app running on 127.0.0.1 in a thread."""

from __future__ import annotations

import contextlib
import threading
import time

from tutor import runs


def random_adapter(workspace, tiny_model, subject: str, seed: int, scale: float = 0.5):
    """A finished answer-role run of `subject` with random LoRA weights on the tiny model: each subject answers differently
    from the base and from the others, so a request that reached the wrong adapter, or none, shows."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with torch.no_grad():
        for name, weights in model.named_parameters():
            if "lora_" in name:
                weights.normal_(0, scale)
    run = runs.make_run(runs.adapters_dir(workspace, subject, "answer"), runs.run_name("sft"))
    model.save_pretrained(run)
    runs.write_meta(run / runs.RUN_META, {"method": "sft"})
    runs.write_meta(run / runs.ADAPTER_META, {"subject": subject, "role": "answer", "base_model": str(tiny_model)})
    return run


@contextlib.contextmanager
def running(app, wait: float = 60):
    """The app served by uvicorn on a free port of 127.0.0.1 in a thread; its base URL while inside."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + wait
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


def tiny_workspace(root, tiny_model):
    """A workspace at `root` whose base model is the tiny one."""
    from tutor.workspace import Workspace

    (root / "tutor.toml").write_text(f'[model]\nbase = "{tiny_model}"\n', encoding="utf-8")
    return Workspace(root)
