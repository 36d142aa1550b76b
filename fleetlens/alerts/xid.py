"""XID error codes: what the common ones mean and how bad they are.

Meanings follow NVIDIA's XID catalogue (docs.nvidia.com/deploy/xid-errors) and the names
dcgm-exporter reports in `err_msg`. `CRITICAL_CODES` are the ones that take a job or the GPU
down, or need a reset/drain; the others are usually an application's own fault. Both lists can
be changed per installation ([rules.xid] critical_codes / ignore_codes).
"""

from __future__ import annotations

XID_MEANINGS: dict[int, str] = {
    13: "Graphics engine exception (usually an application error, e.g. out-of-range access)",
    31: "GPU memory page fault (usually an application's illegal memory access)",
    32: "Invalid or corrupted push buffer stream",
    38: "Driver firmware error",
    43: "GPU stopped processing (the application hit a fault; the GPU stays usable)",
    45: "Preemptive cleanup: processes killed after an earlier error",
    48: "Double-bit ECC error (DBE)",
    56: "Display engine error",
    57: "Error programming video memory interface",
    61: "Internal micro-controller breakpoint/warning (PMU)",
    62: "Internal micro-controller halt (reset needed)",
    63: "ECC page retirement or row remapping recorded",
    64: "ECC page retirement or row remapping failed",
    68: "NVDEC0 exception (video decoder)",
    69: "Graphics engine class error",
    74: "NVLink error",
    79: "GPU has fallen off the bus",
    92: "High single-bit ECC error rate",
    94: "Contained ECC error (the affected application was stopped; reset recommended)",
    95: "Uncontained ECC error (all applications on the GPU affected; reset required)",
    109: "Context switch timeout",
    119: "GSP RPC timeout",
    120: "GSP error",
    121: "C2C (chip-to-chip) link error",
    140: "Unrecovered ECC error",
    143: "GPU initialization failure",
    154: "GPU recovery action changed (drain, reset or reboot needed)",
}

CRITICAL_CODES: tuple[int, ...] = (48, 62, 64, 74, 79, 95, 119, 120, 121, 140, 143, 154)


def meaning(code: int) -> str:
    return XID_MEANINGS.get(code, "Unknown XID (see NVIDIA's XID catalogue)")
