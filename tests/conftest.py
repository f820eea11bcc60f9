import pytest
import torch

# Tests use tiny models; one thread each keeps parallel runs on 2 cores from thrashing.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def entropy_dir(tmp_path_factory):
    """A tiny windowed byte transformer saved with a calibrated threshold (≈3 bytes per patch on
    `text_ids`-like text): the entropy model of every entropy-patched BLT in the tests."""
    from helpers import text_ids

    from omnibyte.models import build_model
    from omnibyte.patching.calibrate import calibrate
    from omnibyte.patching.entropy import write_calibration

    with torch.random.fork_rng():
        torch.manual_seed(1)
        em = build_model("transformer", {"dim": 32, "n_layers": 2, "n_heads": 4, "window": 8}).eval()
        torch.nn.init.normal_(em.head.weight, std=0.3)  # spread the entropies well apart
    path = tmp_path_factory.mktemp("entropy") / "model"
    em.save_pretrained(path)
    write_calibration(path, "global", calibrate(em, text_ids(4, 64, seed=5), 3.0).to_entry())
    return path
