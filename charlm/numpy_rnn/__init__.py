"""The from-scratch engine: char-RNN/LSTM/GRU in plain numpy, backpropagation through time by hand.

Read it in this order, beside a textbook:

    cells.py    one layer of rnn, lstm or gru over a window: forward, BPTT, the equations
    network.py  embedding -> layers -> head, softmax cross-entropy, the whole backward pass
    optim.py    AdamW and global-norm clipping, as torch's
    model.py    all of it as one object with train_step() and forward(), for a training loop

Weights use PyTorch's names, shapes and gate order, so checkpoints are interchangeable
with the torch engine's. Nothing here imports torch.
"""

from charlm.numpy_rnn.model import NumpyCharRNN, StepResult
from charlm.numpy_rnn.network import backward, cross_entropy, forward, init_params, loss_and_gradients
from charlm.numpy_rnn.optim import AdamW, clip_grad_norm

__all__ = ["AdamW", "NumpyCharRNN", "StepResult", "backward", "clip_grad_norm", "cross_entropy", "forward",
           "init_params", "loss_and_gradients"]
