"""Device choice, seeding and random-number state: the one place for them."""

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


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # seeds CUDA and MPS generators too


def capture_rng_state() -> dict[str, torch.Tensor]:
    """The global generators' states as tensors, so they can go into safetensors."""
    state = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            state[f"torch_cuda{index}"] = cuda_state
    return state


def restore_rng_state(state: dict[str, torch.Tensor]) -> None:
    if "torch_cpu" in state:
        torch.set_rng_state(state["torch_cpu"])
    cuda_states = [state[k] for k in sorted(state) if k.startswith("torch_cuda")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A private generator for sampling, seeded or fresh from the OS."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator
