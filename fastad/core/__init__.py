"""The core: tensors and the rules operands follow (tensor, arrays), the tape (tape,
clock), the reverse sweep (sweep), thread-local modes and buffer reuse. It imports no
op: Tensor's operators reach the ops through `tensor.api` only."""
