"""Device choice, precision, seeding and random-number state: the one place for them."""

from __future__ import annotations

import torch

from charlm.errors import DeviceError


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA, then Apple's MPS, then the CPU; a named device must exist."""
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if has_mps else torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda was asked for but this PyTorch build sees no CUDA GPU; "
                          "use --device cpu (or auto), or install a CUDA build of torch")
    if name == "mps" and not has_mps:
        raise DeviceError("--device mps was asked for but Apple's MPS backend is not available here; "
                          "use --device cpu (or auto)")
    if name not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"unknown device '{name}'; use auto, cpu, cuda or mps")
    return torch.device(name)


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles, on which oneDNN's bf16 LSTM runs at 1.8 to 2.5 times its fp32 speed.

    AVX-512 BF16 alone is not enough: on a Xeon that has it without AMX (as Cooper Lake, AMD's Zen 4 and
    VMs that hide AMX do) the bf16 LSTM ran at 0.64 times its fp32 speed (bench/train_throughput.py,
    LSTM 256x2, batch 32).
    """
    return getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()


def resolve_precision(name: str, device: torch.device, cell: str) -> torch.dtype | None:
    """The autocast dtype of training on `device`, or None for plain fp32.

    'auto' takes bf16 where it is measured to be faster at no loss cost
    (bench/train_throughput.py, bench/time_to_quality.py): on CUDA GPUs that
    support it, and on CPUs with AMX for the LSTM, whose oneDNN
    kernel runs bf16 on AMX at 1.8 to 2.5 times its fp32 speed with the same
    validation loss per step. On the same CPU the GRU gains only a tenth in
    bf16 and the tanh-RNN loses a tenth, so they stay fp32. Weights and
    optimizer state are fp32 whatever is chosen.
    """
    if name == "fp32":
        return None
    if name == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise DeviceError("--precision bf16 needs a GPU with bf16 support (Ampere or newer); "
                              "use --precision fp16 or fp32")
        return torch.bfloat16
    if name == "fp16":
        if device.type == "cpu":
            raise DeviceError("--precision fp16 needs a GPU (PyTorch's CPU LSTM kernels have no fp16); "
                              "on a CPU use --precision bf16 or fp32")
        return torch.float16
    if name != "auto":
        raise DeviceError(f"unknown precision '{name}'; use auto, fp32, bf16 or fp16")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu" and cell == "lstm" and cpu_has_amx():
        return torch.bfloat16
    return None


def precision_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # seeds CUDA and MPS generators too


def capture_rng_state() -> dict[str, torch.Tensor]:
    """The global generators' states as tensors, so they can go into safetensors.

    Only the current GPU's: under torchrun each process has its own, and
    touching the others would open a CUDA context on every GPU from every process.
    """
    state = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, torch.Tensor]) -> None:
    if "torch_cpu" in state:
        torch.set_rng_state(state["torch_cpu"])
    cuda_state = state.get("torch_cuda", state.get("torch_cuda0"))  # torch_cuda0: as earlier versions wrote it
    if cuda_state is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda_state)


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A private generator for sampling, seeded or fresh from the OS."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator
