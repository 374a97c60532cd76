"""Serving-precision choice: int8 by default only where the CPU makes it pay."""

from __future__ import annotations

import pytest

from fer_pipeline.model import ModelInfo, cpu_has_fast_int8, resolve_int8

X86 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f {extra}\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd {extra} crc32\n"


@pytest.mark.parametrize(("text", "fast"), [
    (X86.format(extra="avx512_vnni"), True),
    (X86.format(extra="avx_vnni"), True),
    (X86.format(extra=""), False),  # AVX2 alone: int8 gains next to nothing (measured on an EPYC VM)
    (ARM.format(extra="asimddp"), True),
    (ARM.format(extra=""), False),
    ("model name\t: avx512_vnni mentioned elsewhere\n", False),  # only the flags line counts
])
def test_int8_dot_product_flags_are_read_from_cpuinfo(tmp_path, text, fast):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    assert cpu_has_fast_int8(str(path)) is fast


def test_no_cpuinfo_means_float(tmp_path):
    assert cpu_has_fast_int8(str(tmp_path / "missing")) is False


def _info(files: dict) -> ModelInfo:
    return ModelInfo(path=None, model_id="m", labels=(), files=files, raw={})


def test_auto_needs_a_shipped_int8_file_and_a_fast_cpu(monkeypatch):
    import fer_pipeline.model as model

    both = _info({"tflite": "model.tflite", "tflite_int8": "model_int8.tflite"})
    float_only = _info({"tflite": "model.tflite"})
    monkeypatch.setattr(model, "cpu_has_fast_int8", lambda: True)
    assert resolve_int8("auto", both) is True
    assert resolve_int8("auto", float_only) is False  # export dropped int8: it lost accuracy
    monkeypatch.setattr(model, "cpu_has_fast_int8", lambda: False)
    assert resolve_int8("auto", both) is False
    assert resolve_int8(True, both) is True and resolve_int8(False, both) is False  # explicit wins
