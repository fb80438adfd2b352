"""`--precision auto` on CUDA follows the measurements in backend.CUDA_MEASURED.

No GPU is needed: the probe that runs a recurrent layer is replaced by what a given GPU and cuDNN
return, which is all the rule reads from the device.
"""

import pytest
import torch

import charlstm.core.backend as backend
from charlstm.core.backend import choose_precision
from charlstm.core.errors import CharlstmError

CUDA = torch.device("cuda")


@pytest.fixture
def gpu(monkeypatch):
    """A GPU whose cuDNN runs fp16 LSTMs and, under bf16 autocast, returns `bf16_returns`."""

    def install(bf16_returns=torch.float16):
        def probe(device, dtype, kind="lstm"):
            return {None: torch.float32, torch.float16: torch.float16, torch.bfloat16: bf16_returns}[dtype]

        monkeypatch.setattr(backend, "probe_rnn_dtype", probe)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)

    install()
    return install


def test_measured_h100_shape_trains_in_fp32_and_says_why(gpu):
    # On the H100, 3×512 fp16 was 299k vs fp32 315k chars/s at batch 64, 1.23M vs 1.21M at 256.
    for batch, near, ratio in ((64, 64, "0.95"), (256, 256, "1.02"), (200, 256, "1.02"), (1024, 256, "1.02")):
        chosen = choose_precision("auto", CUDA, hidden=512, batch=batch)
        assert chosen.name == "fp32", batch
        assert not chosen.grad_scaler().is_enabled()
        assert f"at batch {near} " in chosen.reason and "H100" in chosen.reason and f"{ratio}× fp32" in chosen.reason


def test_unmeasured_or_unknown_shape_stays_in_fp32_and_says_so(gpu):
    chosen = choose_precision("auto", CUDA, hidden=768, batch=256)
    assert chosen.name == "fp32" and "hidden 768 was never measured" in chosen.reason and "512" in chosen.reason
    chosen = choose_precision("auto", CUDA)
    assert chosen.name == "fp32" and "shape was not given" in chosen.reason


def test_a_measured_speed_up_picks_the_fastest_precision_that_runs(gpu, monkeypatch):
    table = {
        2048: ("a test GPU", {256: {"fp32": 100.0, "fp16": 300.0, "bf16": 310.0}, 64: {"fp32": 100.0, "fp16": 110.0}})
    }
    monkeypatch.setattr(backend, "CUDA_MEASURED", table)
    # This cuDNN returns float16 under bf16 autocast (no bf16 LSTM): bf16 is passed over for fp16.
    chosen = choose_precision("auto", CUDA, hidden=2048, batch=256)
    assert chosen.name == "fp16" and "3.00× fp32" in chosen.reason
    # Where bf16 really runs, the faster bf16 wins.
    gpu(bf16_returns=torch.bfloat16)
    chosen = choose_precision("auto", CUDA, hidden=2048, batch=256)
    assert (chosen.name, chosen.rnn_dtype) == ("bf16", "bfloat16") and "3.10× fp32" in chosen.reason
    # 1.10× at the nearest measured batch is below CUDA_MIN_SPEEDUP.
    chosen = choose_precision("auto", CUDA, hidden=2048, batch=32)
    assert chosen.name == "fp32" and "1.10× fp32" in chosen.reason and "batch 64" in chosen.reason


def test_explicit_precisions_on_cuda_are_kept_or_refused(gpu):
    assert choose_precision("fp16", CUDA, hidden=512, batch=64).name == "fp16"
    assert choose_precision("fp32", CUDA).reason == "requested"
    with pytest.raises(CharlstmError, match="does not run a bf16 LSTM"):
        choose_precision("bf16", CUDA, hidden=512)


def test_the_table_compares_against_fp32_at_every_measured_batch():
    for hidden, (source, by_batch) in backend.CUDA_MEASURED.items():
        assert source and by_batch, hidden
        for batch, speeds in by_batch.items():
            assert speeds.get("fp32", 0) > 0 and set(speeds) <= {"fp32", "fp16", "bf16"}, (hidden, batch)
