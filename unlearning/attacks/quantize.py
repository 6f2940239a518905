"""Weight quantization attack (Zhang et al. 2024, "Catastrophic Failure of LLM Unlearning via Quantization").

The paper quantizes unlearned models to 8 and 4 bits with round-to-nearest (RTN), GPTQ and AWQ and
finds that 4-bit quantization restores much of the "forgotten" knowledge. This attack is their RTN
setting: optimum-quanto's weight-only quantization (symmetric, per-output-channel absmax scales;
`qint8` / `qint4`) of every linear layer, activations kept in float, evaluated as quantized. It runs
on CPU; GPTQ/AWQ (calibrated) are not reproduced. bitsandbytes would be the CUDA choice; quanto runs
on both, so one code path serves every device. The quantized copy is evaluated without bf16 autocast
(fp32 activations), whatever `generation.bf16` says: quanto's CPU kernels refuse bf16 activations.
"""

from __future__ import annotations

from unlearning.errors import UserError

BITS = (8, 4)


class Quantize:
    autocast = False  # quanto's integer matmuls take fp32 activations: evaluated without bf16 autocast

    def __init__(self, bits: int = 8, measure: str = "all", **unknown):
        from unlearning.errors import reject_unknown

        reject_unknown("attack", f"quant{bits}", unknown, ["bits", "measure"])
        self.measure = measure  # checked with the evaluator in check() (validation, before any work)
        if isinstance(bits, bool) or bits not in BITS:
            raise UserError(f"attack bits={bits!r}: optimum-quanto quantizes weights to {list(BITS)} bits here; "
                            "use conf/attack/quant8.yaml or quant4.yaml")
        self.bits = int(bits)
        self._qtype()  # a missing library is a one-line error at validation, not after training

    def check(self, evaluator, data) -> None:
        from unlearning.attacks import check_measure

        check_measure(f"quant{self.bits}", self.measure, evaluator)

    def _qtype(self):
        try:
            from optimum.quanto import qint4, qint8
        except ImportError:
            raise UserError("the quantization attack needs optimum-quanto: `.venv/bin/pip install optimum-quanto` "
                            "(make install does it)") from None
        return {8: qint8, 4: qint4}[self.bits]

    def apply(self, model, tok, data, ctx):
        from optimum.quanto import freeze, quantize

        quantize(model, weights=self._qtype())
        freeze(model)  # the weights become integers + scales: evaluated as quantized, not fake-quantized
        return model

    def __repr__(self) -> str:
        return f"Quantize(bits={self.bits}, optimum-quanto RTN weight-only, measure={self.measure})"
