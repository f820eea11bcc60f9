import torch

# Tests use tiny models; one thread each keeps parallel runs on 2 cores from thrashing.
torch.set_num_threads(1)
