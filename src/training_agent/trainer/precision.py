"""Which arithmetic a run trains in: bf16 or fp16 autocast, or fp32, chosen for the hardware.

bf16 keeps fp32's exponent range, so it needs no loss scaler; fp16 does (`Fitter.scaler`, a GradScaler),
and is what GPUs without bf16 tensor cores (T4, V100) are fast at. On a CPU only native bf16 instructions pay.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

import torch

from training_agent.core.errors import ConfigurationError

PrecisionSetting = Literal["auto", "bf16", "fp16", "fp32"]
Precision = Literal["bf16", "fp16", "fp32"]


@cache
def cpu_supports_bf16() -> bool:
    """Native bf16 matrix instructions (AVX512-BF16 or AMX): where bf16 autocast is a speed-up on a CPU
    rather than a slow emulation."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_precision(device: torch.device, setting: PrecisionSetting) -> Precision:
    """`auto`: bf16 where the hardware has it (Ampere and later GPUs, AVX512-BF16/AMX CPUs); fp16 with a
    loss scaler on older GPUs (T4, V100), whose tensor cores have no bf16; fp32 on other CPUs."""
    if setting == "fp32":
        return "fp32"
    if device.type == "cuda":
        bf16 = bool(torch.cuda.is_bf16_supported())
        if setting == "bf16" and not bf16:
            raise ConfigurationError(
                "TRAINING_AGENT_PRECISION=bf16, but this GPU has no native bf16 support; "
                "use auto, fp16 or fp32"
            )
        return "bf16" if bf16 and setting != "fp16" else "fp16"
    if setting == "fp16":
        raise ConfigurationError("TRAINING_AGENT_PRECISION=fp16 is for GPUs; on a CPU use auto, bf16 or fp32")
    if setting == "bf16" and not cpu_supports_bf16():
        raise ConfigurationError(
            f"TRAINING_AGENT_PRECISION=bf16, but this {device.type} has no native bf16 support; "
            "use auto or fp32"
        )
    return "bf16" if cpu_supports_bf16() and device.type == "cpu" else "fp32"


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: Precision) -> torch.autocast:
    """The one mixed-precision code path: bf16 or fp16 autocast, a no-op in fp32. bf16 keeps fp32's
    exponent range; fp16 needs the loss scaler (`Fitter.scaler`) so that small gradients do not vanish."""
    dtype = _DTYPES.get(precision, torch.bfloat16)
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=precision != "fp32")
